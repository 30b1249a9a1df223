//! Initial sequence numbers (RFC 6528) and SYN cookies (RFC 4987 §3.6).
//!
//! `ISN = M + F(local, remote, secret)`: `M` a clock ticking every 4 µs, `F` a keyed hash of
//! the connection's addresses and ports, so that sequence numbers of different connections
//! cannot be guessed from each other, and a new incarnation of the same connection starts
//! above the old one.
//!
//! A SYN cookie is an ISN that carries what a listener must remember of a SYN it could not
//! keep state for: a 5-bit counter of 64-second periods, the index of the peer's MSS in a
//! table, and 24 bits of a keyed hash over both, the addresses and the peer's ISN. When timestamps
//! are in use, the peer's window scale and SACK permission ride in the low 6 bits of the
//! SYN-ACK's `TSval`, which the peer echoes (as Linux does).

use core::net::SocketAddr;
use core::time::Duration;

use crate::crypto::hmac_sha256_raw;
use crate::wire::tcp::SeqNumber;

/// The secret behind ISNs and cookies.
pub type Secret = [u8; 32];

fn tuple_bytes(local: SocketAddr, remote: SocketAddr, out: &mut Vec<u8>) {
    for a in [local, remote] {
        match a.ip() {
            core::net::IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
            core::net::IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
        }
        out.extend_from_slice(&a.port().to_be_bytes());
    }
}

fn keyed(secret: &Secret, parts: &[&[u8]], local: SocketAddr, remote: SocketAddr) -> u32 {
    let mut msg = Vec::with_capacity(64);
    tuple_bytes(local, remote, &mut msg);
    for p in parts {
        msg.extend_from_slice(p);
    }
    let h = hmac_sha256_raw(secret, &msg);
    u32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

/// RFC 6528's ISN for a connection at time `since_epoch`.
#[must_use]
pub fn initial_sequence_number(
    secret: &Secret,
    local: SocketAddr,
    remote: SocketAddr,
    since_epoch: Duration,
) -> SeqNumber {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "M wraps modulo 2^32 by design"
    )]
    let m = (since_epoch.as_micros() / 4) as u32;
    SeqNumber(m.wrapping_add(keyed(secret, &[b"isn"], local, remote)))
}

/// MSS values a cookie can carry (index in 3 bits): common path MTUs minus headers.
pub const COOKIE_MSS: [u16; 8] = [536, 1220, 1360, 1400, 1440, 1460, 8960, 65_483];

/// How long a cookie stays valid, in 64-second periods (so 64–128 s).
const COOKIE_PERIODS: u32 = 2;

/// What a cookie remembers of the SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieData {
    /// The peer's MSS, rounded down to a [`COOKIE_MSS`] value.
    pub mss: u16,
}

fn period(since_epoch: Duration) -> u32 {
    #[expect(clippy::cast_possible_truncation, reason = "a 5-bit counter")]
    let p = (since_epoch.as_secs() / 64) as u32;
    p & 0x1f
}

fn cookie_hash(
    secret: &Secret,
    local: SocketAddr,
    remote: SocketAddr,
    peer_isn: SeqNumber,
    counter: u32,
    mss_index: u32,
) -> u32 {
    keyed(
        secret,
        &[
            b"cookie",
            &peer_isn.0.to_be_bytes(),
            &counter.to_be_bytes(),
            &mss_index.to_be_bytes(),
        ],
        local,
        remote,
    ) & 0x00ff_ffff
}

/// The ISN of a SYN-ACK that keeps no state: encodes the peer's MSS.
#[must_use]
pub fn make_cookie(
    secret: &Secret,
    local: SocketAddr,
    remote: SocketAddr,
    peer_isn: SeqNumber,
    peer_mss: u16,
    since_epoch: Duration,
) -> SeqNumber {
    let idx = COOKIE_MSS.iter().rposition(|&m| m <= peer_mss).unwrap_or(0);
    #[expect(clippy::cast_possible_truncation, reason = "index of an 8-entry table")]
    let idx = idx as u32;
    let counter = period(since_epoch);
    SeqNumber(
        (counter << 27) | (idx << 24) | cookie_hash(secret, local, remote, peer_isn, counter, idx),
    )
}

/// Checks a cookie returned in an ACK (`ack − 1`) for the SYN whose ISN was `peer_isn`
/// (`seq − 1` of that ACK).
#[must_use]
pub fn check_cookie(
    secret: &Secret,
    local: SocketAddr,
    remote: SocketAddr,
    peer_isn: SeqNumber,
    cookie: SeqNumber,
    since_epoch: Duration,
) -> Option<CookieData> {
    let counter = cookie.0 >> 27;
    let idx = (cookie.0 >> 24) & 0x7;
    let age = period(since_epoch).wrapping_sub(counter) & 0x1f;
    if age >= COOKIE_PERIODS {
        return None;
    }
    (cookie_hash(secret, local, remote, peer_isn, counter, idx) == cookie.0 & 0x00ff_ffff).then(
        || CookieData {
            mss: COOKIE_MSS[usize::try_from(idx).unwrap_or(0)],
        },
    )
}

/// Packs the peer's window scale (`None`: not offered) and SACK permission into the low 6 bits
/// of a timestamp value.
#[must_use]
pub fn encode_ts_options(tsval: u32, wscale: Option<u8>, sack: bool) -> u32 {
    let ws = u32::from(wscale.map_or(0xf, |w| w.min(14)));
    (tsval & !0x3f) | (ws << 1) | u32::from(sack)
}

/// Reads back [`encode_ts_options`] from an echoed timestamp.
#[must_use]
pub fn decode_ts_options(tsecr: u32) -> (Option<u8>, bool) {
    let ws = u8::try_from((tsecr >> 1) & 0xf).unwrap_or(0xf);
    ((ws != 0xf).then_some(ws), tsecr & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: Secret = [7; 32];

    fn a() -> SocketAddr {
        "192.0.2.1:80".parse().unwrap()
    }
    fn b() -> SocketAddr {
        "198.51.100.7:40000".parse().unwrap()
    }

    #[test]
    fn isns_differ_by_connection_and_grow_with_time() {
        let t = Duration::from_secs(10);
        let i1 = initial_sequence_number(&SECRET, a(), b(), t);
        let i2 = initial_sequence_number(&SECRET, a(), "198.51.100.7:40001".parse().unwrap(), t);
        assert_ne!(i1, i2);
        let later = initial_sequence_number(&SECRET, a(), b(), t + Duration::from_millis(4));
        assert_eq!(later.since(i1), 1000, "4 ms = 1000 ticks of 4 µs");
        assert_ne!(i1, initial_sequence_number(&[8; 32], a(), b(), t), "keyed");
    }

    #[test]
    fn a_cookie_checks_only_for_its_connection_and_for_two_minutes() {
        let t = Duration::from_secs(1000);
        let isn = SeqNumber(12345);
        let c = make_cookie(&SECRET, a(), b(), isn, 1460, t);
        assert_eq!(
            check_cookie(&SECRET, a(), b(), isn, c, t),
            Some(CookieData { mss: 1460 })
        );
        assert_eq!(
            check_cookie(&SECRET, a(), b(), isn, c, t + Duration::from_secs(64)).map(|d| d.mss),
            Some(1460)
        );
        assert_eq!(
            check_cookie(&SECRET, a(), b(), isn, c, t + Duration::from_secs(200)),
            None
        );
        assert_eq!(
            check_cookie(&SECRET, a(), b(), SeqNumber(12346), c, t),
            None
        );
        assert_eq!(check_cookie(&SECRET, b(), a(), isn, c, t), None);
        assert_eq!(
            check_cookie(&SECRET, a(), b(), isn, SeqNumber(c.0 ^ 1), t),
            None
        );
        let small = make_cookie(&SECRET, a(), b(), isn, 1000, t);
        assert_eq!(
            check_cookie(&SECRET, a(), b(), isn, small, t).map(|d| d.mss),
            Some(536)
        );
    }

    #[test]
    fn window_scale_and_sack_ride_in_the_timestamp() {
        let ts = encode_ts_options(0x1234_5678, Some(7), true);
        assert_eq!(ts & !0x3f, 0x1234_5640);
        assert_eq!(decode_ts_options(ts), (Some(7), true));
        assert_eq!(
            decode_ts_options(encode_ts_options(99, None, false)),
            (None, false)
        );
    }
}
