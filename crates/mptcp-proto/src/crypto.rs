//! MPTCP's cryptographic pieces (RFC 8684 §3.1–§3.4): each host's 64-bit key gives its token
//! and initial data sequence number (IDSN); `MP_JOIN` and `ADD_ADDR` are authenticated with
//! HMACs keyed by both hosts' keys; and mappings can carry a DSS checksum (§3.3.1).
//!
//! Version 1 (RFC 8684) uses SHA-256; version 0 (RFC 6824) used SHA-1, kept in [`v0`] for
//! checking old captures.

use core::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::wire::checksum;

type HmacSha256 = Hmac<Sha256>;

/// The token (most significant 32 bits of SHA-256 of the key) and the IDSN (least significant
/// 64 bits) of a key (RFC 8684 §3.1).
#[must_use]
pub fn token_and_idsn(key: u64) -> (u32, u64) {
    let h = Sha256::digest(key.to_be_bytes());
    split_digest(&h)
}

fn split_digest(h: &[u8]) -> (u32, u64) {
    let token = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let mut low = [0; 8];
    low.copy_from_slice(&h[h.len() - 8..]);
    (token, u64::from_be_bytes(low))
}

/// The token of a key (RFC 8684 §3.1).
#[must_use]
pub fn token(key: u64) -> u32 {
    token_and_idsn(key).0
}

/// The initial data sequence number of a key (RFC 8684 §3.1).
#[must_use]
pub fn idsn(key: u64) -> u64 {
    token_and_idsn(key).1
}

/// HMAC-SHA256 with the key `key_1 ‖ key_2` (each big-endian) over `msg`: the primitive behind
/// every MPTCP HMAC (the kernel's `mptcp_crypto_hmac_sha`).
#[must_use]
pub fn hmac_sha256(key_1: u64, key_2: u64, msg: &[u8]) -> [u8; 32] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&key_1.to_be_bytes());
    key[8..].copy_from_slice(&key_2.to_be_bytes());
    hmac_sha256_raw(&key, msg)
}

/// HMAC-SHA256 with raw key bytes.
#[must_use]
pub fn hmac_sha256_raw(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// The full HMAC of an `MP_JOIN` handshake (RFC 8684 §3.2): keyed with the sender's key then the
/// receiver's key, over the sender's random number then the receiver's.
///
/// The SYN/ACK carries the leftmost 64 bits of the responder's ([`join_truncated_hmac`]), the
/// third ACK the leftmost 160 bits of the initiator's ([`join_hmac_160`]).
#[must_use]
pub fn join_hmac(
    sender_key: u64,
    receiver_key: u64,
    sender_nonce: u32,
    receiver_nonce: u32,
) -> [u8; 32] {
    let mut msg = [0; 8];
    msg[..4].copy_from_slice(&sender_nonce.to_be_bytes());
    msg[4..].copy_from_slice(&receiver_nonce.to_be_bytes());
    hmac_sha256(sender_key, receiver_key, &msg)
}

/// The truncated HMAC of an `MP_JOIN` SYN/ACK: leftmost 64 bits of [`join_hmac`].
#[must_use]
pub fn join_truncated_hmac(
    sender_key: u64,
    receiver_key: u64,
    sender_nonce: u32,
    receiver_nonce: u32,
) -> u64 {
    let h = join_hmac(sender_key, receiver_key, sender_nonce, receiver_nonce);
    let mut left = [0; 8];
    left.copy_from_slice(&h[..8]);
    u64::from_be_bytes(left)
}

/// The HMAC of an `MP_JOIN` third ACK: leftmost 160 bits of [`join_hmac`].
#[must_use]
pub fn join_hmac_160(
    sender_key: u64,
    receiver_key: u64,
    sender_nonce: u32,
    receiver_nonce: u32,
) -> [u8; 20] {
    let h = join_hmac(sender_key, receiver_key, sender_nonce, receiver_nonce);
    let mut out = [0; 20];
    out.copy_from_slice(&h[..20]);
    out
}

/// The message an `ADD_ADDR` HMAC covers (RFC 8684 §3.4.1): address ID, address, and port (0
/// when the option carries none), as the kernel builds it.
fn add_addr_message(address_id: u8, address: IpAddr, port: Option<u16>) -> ([u8; 19], usize) {
    let mut msg = [0; 19];
    msg[0] = address_id;
    let end = match address {
        IpAddr::V4(a) => {
            msg[1..5].copy_from_slice(&a.octets());
            5
        }
        IpAddr::V6(a) => {
            msg[1..17].copy_from_slice(&a.octets());
            17
        }
    };
    msg[end..end + 2].copy_from_slice(&port.unwrap_or(0).to_be_bytes());
    (msg, end + 2)
}

/// The truncated HMAC of an `ADD_ADDR` (RFC 8684 §3.4.1): the rightmost 64 bits of the HMAC keyed
/// with the sender's key then the receiver's key.
#[must_use]
pub fn add_addr_hmac(
    sender_key: u64,
    receiver_key: u64,
    address_id: u8,
    address: IpAddr,
    port: Option<u16>,
) -> u64 {
    let (msg, len) = add_addr_message(address_id, address, port);
    let h = hmac_sha256(sender_key, receiver_key, &msg[..len]);
    let mut right = [0; 8];
    right.copy_from_slice(&h[24..]);
    u64::from_be_bytes(right)
}

/// The leftmost 64 bits of the same HMAC: what Linux sent before it followed RFC 8684 (early
/// 2020), kept to recognise captures of that time.
#[must_use]
pub fn add_addr_hmac_leftmost(
    sender_key: u64,
    receiver_key: u64,
    address_id: u8,
    address: IpAddr,
    port: Option<u16>,
) -> u64 {
    let (msg, len) = add_addr_message(address_id, address, port);
    let h = hmac_sha256(sender_key, receiver_key, &msg[..len]);
    let mut left = [0; 8];
    left.copy_from_slice(&h[..8]);
    u64::from_be_bytes(left)
}

/// The DSS checksum (RFC 8684 §3.3.1): the Internet checksum over a pseudo-header — the mapping's
/// full 64-bit data sequence number, its relative subflow sequence number, its data-level
/// length and 16 zero bits — followed by the mapped payload.
#[must_use]
pub fn dss_checksum(dsn: u64, ssn: u32, data_len: u16, payload: &[u8]) -> u16 {
    let mut header = [0; 16];
    header[..8].copy_from_slice(&dsn.to_be_bytes());
    header[8..12].copy_from_slice(&ssn.to_be_bytes());
    header[12..14].copy_from_slice(&data_len.to_be_bytes());
    checksum::finish(checksum::add(checksum::add(0, &header), payload))
}

/// RFC 6824 (version 0): SHA-1 instead of SHA-256.
pub mod v0 {
    use hmac::{Hmac, KeyInit, Mac};
    use sha1::{Digest, Sha1};

    /// Token and IDSN of a key: most significant 32 and least significant 64 bits of SHA-1.
    #[must_use]
    pub fn token_and_idsn(key: u64) -> (u32, u64) {
        super::split_digest(&Sha1::digest(key.to_be_bytes()))
    }

    /// HMAC-SHA1 of an `MP_JOIN` handshake, keyed with the sender's then the receiver's key,
    /// over the sender's then the receiver's random number (160 bits).
    #[must_use]
    pub fn join_hmac(
        sender_key: u64,
        receiver_key: u64,
        sender_nonce: u32,
        receiver_nonce: u32,
    ) -> [u8; 20] {
        let mut key = [0; 16];
        key[..8].copy_from_slice(&sender_key.to_be_bytes());
        key[8..].copy_from_slice(&receiver_key.to_be_bytes());
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(&sender_nonce.to_be_bytes());
        mac.update(&receiver_nonce.to_be_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use core::fmt::Write as _;

    use super::*;

    /// The three vectors of the Linux kernel's `KUnit` test `net/mptcp/crypto_test.c`. That test
    /// reads its hex-looking strings as ASCII bytes: the key is the 16 characters of `key`
    /// (split into two big-endian u64s) and the message the 8 characters of `msg`.
    #[test]
    fn linux_kunit_crypto_vectors() {
        let vectors = [
            (
                "0b0b0b0b0b0b0b0b",
                "48692054",
                "8385e24fb4235ac37556b6b886db106284a1da671699f46db1f235ec622dcafa",
            ),
            (
                "aaaaaaaaaaaaaaaa",
                "dddddddd",
                "2c5e219164ff1dca1c4a92318d847bb6b9d44492984e1eb71aff9022f71046e9",
            ),
            (
                "0102030405060708",
                "cdcdcdcd",
                "e73b9ba9969969cefb04aa0d6df18ec2fcc075b6f23b4d8c4da736a5dbbc6e7d",
            ),
        ];
        for (key, msg, want) in vectors {
            let k = key.as_bytes();
            let key1 = u64::from_be_bytes(k[..8].try_into().unwrap());
            let key2 = u64::from_be_bytes(k[8..16].try_into().unwrap());
            let m = msg.as_bytes();
            let nonce1 = u32::from_be_bytes(m[..4].try_into().unwrap());
            let nonce2 = u32::from_be_bytes(m[4..8].try_into().unwrap());
            let got =
                join_hmac(key1, key2, nonce1, nonce2)
                    .iter()
                    .fold(String::new(), |mut s, b| {
                        let _ = write!(s, "{b:02x}");
                        s
                    });
            assert_eq!(got, want, "key {key} msg {msg}");
        }
    }

    /// Known answers from tcpdump's captures (`../shared/conformance/tcpdump-tests/`).
    #[test]
    fn tokens_and_idsns_from_real_captures() {
        // mptcp-v1.pcap: the server's key 0x29a6c86981ad933c; its first DSS mapping (frame 7)
        // starts at DSN 11713449205243392242, which is IDSN + 1.
        assert_eq!(idsn(0x29a6_c869_81ad_933c), 11_713_449_205_243_392_241);
        assert_eq!(token(0x29a6_c869_81ad_933c), 0xa35d_6d82);
        // The client's key 0x1fdb5df328bc3def: the server's data ACK of frame 5 is IDSN + 1.
        assert_eq!(idsn(0x1fdb_5df3_28bc_3def), 14_413_541_604_287_230_029);
        // mptcp-v0.pcap (SHA-1): the MP_JOIN SYN carries token 0xe47f0142, the token of the
        // server's key 0x967d2770b6960552.
        assert_eq!(v0::token_and_idsn(0x967d_2770_b696_0552).0, 0xe47f_0142);
    }

    /// `ADD_ADDR` HMACs sent by Linux 6.18 in the lab (RFC 8684 §3.4.1: rightmost 64 bits), with
    /// and without a port; the sender is the server, key e64368c5434c751f, the receiver the
    /// client, key 7d6c844509515344. Checked independently with Python's hmac module.
    #[test]
    fn add_addr_hmac_known_answers_from_the_kernel() {
        let addr: IpAddr = "10.2.0.1".parse().unwrap();
        let (server, client) = (0xe643_68c5_434c_751f, 0x7d6c_8445_0951_5344);
        assert_eq!(
            add_addr_hmac(server, client, 2, addr, None),
            0x735f_2690_e76f_bfb7
        );
        assert_eq!(
            add_addr_hmac(server, client, 3, addr, Some(5010)),
            0xfa24_7c90_4427_de80
        );
        // Keys in the other order give another HMAC.
        assert_ne!(
            add_addr_hmac(client, server, 2, addr, None),
            0x735f_2690_e76f_bfb7
        );
    }

    #[test]
    fn dss_checksum_verifies_against_the_internet_checksum() {
        let payload = b"hello, multipath";
        let c = dss_checksum(0x0102_0304_0506_0708, 1, 16, payload);
        // Putting the checksum into the pseudo-header's zero field makes the whole sum 0xffff.
        let mut header = [0u8; 16];
        header[..8].copy_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        header[8..12].copy_from_slice(&1u32.to_be_bytes());
        header[12..14].copy_from_slice(&16u16.to_be_bytes());
        header[14..].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            checksum::fold(checksum::add(checksum::add(0, &header), payload)),
            0xffff
        );
    }

    #[test]
    fn hmac_key_order_matters() {
        let a = join_truncated_hmac(1, 2, 3, 4);
        let b = join_truncated_hmac(2, 1, 4, 3);
        assert_ne!(a, b);
        let addr: IpAddr = "10.0.2.1".parse().unwrap();
        assert_ne!(
            add_addr_hmac(1, 2, 1, addr, None),
            add_addr_hmac(1, 2, 1, addr, Some(0x2710))
        );
    }
}
