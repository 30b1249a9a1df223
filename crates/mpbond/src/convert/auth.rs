//! mpbond's authentication TLV (type 0xC0, in RFC 8803's private-use range): a gateway proves it
//! holds the pre-shared key of its name for this one Connect, and the converter checks it.
//!
//! Value layout (after Type and Length; see docs/convert.md):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +---------------+---------------+---------------+---------------+
//! |  Type = 0xC0  |    Length     |  Name Length  |     Flags     |
//! +---------------+---------------+---------------+---------------+
//! |                    Timestamp (64 bits, Unix seconds)          |
//! +---------------------------------------------------------------+
//! |                    Nonce (128 bits)                           |
//! +---------------------------------------------------------------+
//! |                    HMAC-SHA256 (256 bits)                     |
//! +---------------------------------------------------------------+
//! |                    Name (Name Length bytes), zero-padded      |
//! +---------------------------------------------------------------+
//! ```
//!
//! The HMAC (key: the gateway's 32-byte pre-shared key) covers the ASCII label
//! `mpbond-convert-auth-v1`, the Convert version, the timestamp, the nonce, the name length, the
//! name and the Connect TLV exactly as sent, then the Flags byte when it is not zero (so a TLV
//! without flags is signed as before flags existed): a captured TLV cannot be moved to another
//! destination, and a replayed one is refused by the converter's replay cache.
//!
//! Flags: [`FLAG_EARLY_ANSWER`] (0x01), the others must be zero.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::message::{Connect, VERSION};

/// Bytes of a pre-shared key.
pub const KEY_LEN: usize = 32;
/// Bytes of the nonce.
pub const NONCE_LEN: usize = 16;
/// Longest gateway name.
pub const MAX_NAME_LEN: usize = 64;
/// How far a gateway's clock may be from the converter's (the issue's ±60 s).
pub const CLOCK_WINDOW_SECS: u64 = 60;
/// The fixed part of the value before the name.
const FIXED: usize = 2 + 8 + NONCE_LEN + 32;
/// The gateway takes the converter's answer before the handshake's last ACK (RFC 8684
/// appendix B: a Fast Open server's early data, mapped, without `DATA_ACK`): its MPTCP is
/// mpbond's engine. Linux 6.18 falls back to TCP on such an answer, so a converter on the
/// engine answers early only when this is set, and saves a round trip per connection.
pub const FLAG_EARLY_ANSWER: u8 = 0x01;
/// Domain separation: this HMAC is used for nothing else.
const LABEL: &[u8] = b"mpbond-convert-auth-v1";

type HmacSha256 = Hmac<Sha256>;

/// The Flags byte for these flags.
fn flags(early_answer: bool) -> u8 {
    if early_answer { FLAG_EARLY_ANSWER } else { 0 }
}

/// A gateway name: 1 to 64 bytes of ASCII letters, digits, `.`, `_` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// Checks `name`.
    pub fn new(name: &str) -> Result<Self, KeyError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(KeyError::BadName(name.chars().take(80).collect()))
        }
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pre-shared key. Its `Debug` does not show it, and it is wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Key([u8; KEY_LEN]);

impl Key {
    /// A new random key from the operating system's generator.
    pub fn generate() -> std::io::Result<Self> {
        let mut k = [0u8; KEY_LEN];
        getrandom::fill(&mut k).map_err(std::io::Error::other)?;
        Ok(Self(k))
    }

    /// A key from its bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The key as 64 lowercase hex digits: only for writing a key file.
    #[must_use]
    pub fn to_hex(&self) -> String {
        use std::fmt::Write as _;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != KEY_LEN * 2 || !hex.is_ascii() {
            return None;
        }
        let mut k = [0u8; KEY_LEN];
        for (i, byte) in k.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok()?;
        }
        Some(Self(k))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// The authentication TLV's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The gateway's name.
    pub name: Name,
    /// When the gateway made it, Unix seconds.
    pub timestamp: u64,
    /// Random, never reused.
    pub nonce: [u8; NONCE_LEN],
    /// HMAC-SHA256 over the fields and the Connect TLV.
    pub hmac: [u8; 32],
    /// [`FLAG_EARLY_ANSWER`].
    pub early_answer: bool,
}

fn mac(
    key: &Key,
    name: &Name,
    timestamp: u64,
    nonce: &[u8; NONCE_LEN],
    connect: &Connect,
    flags: u8,
) -> HmacSha256 {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(&key.0)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(LABEL);
    m.update(&[VERSION]);
    m.update(&timestamp.to_be_bytes());
    m.update(nonce);
    // Names are at most 64 bytes.
    m.update(&[u8::try_from(name.0.len()).unwrap_or(u8::MAX)]);
    m.update(name.0.as_bytes());
    m.update(&connect.to_tlv_bytes());
    if flags != 0 {
        m.update(&[flags]);
    }
    m
}

impl Auth {
    /// Signs `connect` for gateway `name` at `timestamp` with a fresh `nonce`, no flags.
    #[must_use]
    pub fn sign(
        key: &Key,
        name: &Name,
        timestamp: u64,
        nonce: [u8; NONCE_LEN],
        connect: &Connect,
    ) -> Self {
        Self::sign_flagged(key, name, timestamp, nonce, connect, false)
    }

    /// [`Auth::sign`] with [`FLAG_EARLY_ANSWER`] set or not.
    #[must_use]
    pub fn sign_flagged(
        key: &Key,
        name: &Name,
        timestamp: u64,
        nonce: [u8; NONCE_LEN],
        connect: &Connect,
        early_answer: bool,
    ) -> Self {
        let hmac = mac(key, name, timestamp, &nonce, connect, flags(early_answer))
            .finalize()
            .into_bytes()
            .into();
        Self {
            name: name.clone(),
            timestamp,
            nonce,
            hmac,
            early_answer,
        }
    }

    fn flags(&self) -> u8 {
        flags(self.early_answer)
    }

    /// Whether the HMAC is right for `key` and `connect` (compared in constant time).
    #[must_use]
    pub fn verify(&self, key: &Key, connect: &Connect) -> bool {
        mac(
            key,
            &self.name,
            self.timestamp,
            &self.nonce,
            connect,
            self.flags(),
        )
        .verify_slice(&self.hmac)
        .is_ok()
    }

    /// Parses the value (after Type and Length). `None` when malformed.
    pub(super) fn parse_value(value: &[u8]) -> Option<Self> {
        let name_len = usize::from(*value.first()?);
        let name_end = FIXED + name_len;
        // The TLV is exactly the fixed part and the name, padded to a word.
        if name_len == 0 || (2 + name_end).div_ceil(4) * 4 != 2 + value.len() {
            return None;
        }
        let flags = value[1];
        if flags & !FLAG_EARLY_ANSWER != 0 || value[name_end..].iter().any(|&b| b != 0) {
            return None;
        }
        let name = Name::new(std::str::from_utf8(&value[FIXED..name_end]).ok()?).ok()?;
        let timestamp = u64::from_be_bytes(value[2..10].try_into().ok()?);
        let nonce = value[10..26].try_into().ok()?;
        let hmac = value[26..58].try_into().ok()?;
        Some(Self {
            name,
            timestamp,
            nonce,
            hmac,
            early_answer: flags & FLAG_EARLY_ANSWER != 0,
        })
    }

    /// Appends the value (after Type and Length), without padding.
    pub(super) fn emit_value(&self, out: &mut Vec<u8>) {
        out.push(u8::try_from(self.name.0.len()).unwrap_or(u8::MAX));
        out.push(self.flags());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.hmac);
        out.extend_from_slice(self.name.0.as_bytes());
    }
}

/// A problem with a key line or key file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A name with characters or a length that are not allowed.
    #[error("bad gateway name {0:?}: use 1 to 64 ASCII letters, digits, '.', '_' or '-'")]
    BadName(String),
    /// A line that is not `NAME KEY`; the key is never repeated in the message.
    #[error("line {line}: expected `NAME KEY` with a 64-hex-digit key (as `mpbond keygen` prints)")]
    BadLine {
        /// 1-based line number.
        line: usize,
    },
    /// A name given twice.
    #[error("line {line}: gateway {name} is listed twice")]
    Duplicate {
        /// 1-based line number.
        line: usize,
        /// The name.
        name: String,
    },
    /// No key line at all.
    #[error("no key in the file")]
    Empty,
}

/// One key line: `NAME KEY`, as `mpbond keygen NAME` prints it.
#[must_use]
pub fn key_line(name: &Name, key: &Key) -> String {
    format!("{name} {}", key.to_hex())
}

/// The keys of a file of key lines (blank lines and `#` comments allowed).
pub fn parse_key_lines(text: &str) -> Result<Vec<(Name, Key)>, KeyError> {
    let mut keys: Vec<(Name, Key)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(name), Some(hex), None) = (words.next(), words.next(), words.next()) else {
            return Err(KeyError::BadLine { line: line_no });
        };
        let name = Name::new(name)?;
        let key = Key::from_hex(hex).ok_or(KeyError::BadLine { line: line_no })?;
        if keys.iter().any(|(n, _)| *n == name) {
            return Err(KeyError::Duplicate {
                line: line_no,
                name: name.0,
            });
        }
        keys.push((name, key));
    }
    if keys.is_empty() {
        return Err(KeyError::Empty);
    }
    Ok(keys)
}

/// Why the converter refused a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The message has no authentication TLV.
    #[error("no authentication TLV")]
    Missing,
    /// The name has no key here (unknown or revoked).
    #[error("unknown gateway name")]
    UnknownName,
    /// The HMAC does not match: wrong key, or the message was altered.
    #[error("bad HMAC (wrong key?)")]
    BadHmac,
    /// The timestamp is outside the clock window.
    #[error("timestamp {skew_secs} s from the converter's clock (window ±{CLOCK_WINDOW_SECS} s)")]
    Stale {
        /// Gateway's time minus converter's time.
        skew_secs: i64,
    },
    /// The nonce was seen before within the window.
    #[error("replayed authentication TLV")]
    Replayed,
}

/// Why a converter answered Not Authorized (32), in the Error TLV's value: mpbond's use of a
/// value that RFC 8803 §6.2.8 leaves open for this code (see docs/convert.md). What only the
/// holder of a right key can bring about (a clock too far off, a replay) is told exactly; a
/// wrong key, an unknown name and a missing authentication are one reason, so that nobody
/// learns from the answers which gateway names exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 0: no reason given (converters before this one send it for every refusal).
    Unspecified,
    /// 1: no valid authentication: the name is unknown or the key differs.
    Credentials,
    /// 2: the gateway's clock is ahead of the converter's by more than the window.
    ClockAhead,
    /// 3: the gateway's clock is behind the converter's by more than the window.
    ClockBehind,
    /// 4: this authentication TLV was accepted once already.
    Replayed,
    /// 5: the gateway is authenticated but the destination is refused by the converter's
    /// policy.
    Destination,
}

impl Refusal {
    /// The Error TLV's value byte.
    #[must_use]
    pub fn value(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::Credentials => 1,
            Self::ClockAhead => 2,
            Self::ClockBehind => 3,
            Self::Replayed => 4,
            Self::Destination => 5,
        }
    }

    /// From an Error TLV's value byte (unknown values: [`Refusal::Unspecified`]).
    #[must_use]
    pub fn from_value(value: u8) -> Self {
        match value {
            1 => Self::Credentials,
            2 => Self::ClockAhead,
            3 => Self::ClockBehind,
            4 => Self::Replayed,
            5 => Self::Destination,
            _ => Self::Unspecified,
        }
    }

    /// Whether it is about the gateway's key or clock (not about one destination).
    #[must_use]
    pub fn is_about_the_gateway(self) -> bool {
        matches!(
            self,
            Self::Credentials | Self::ClockAhead | Self::ClockBehind | Self::Replayed
        )
    }
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing | AuthError::UnknownName | AuthError::BadHmac => Self::Credentials,
            AuthError::Stale { skew_secs } if skew_secs > 0 => Self::ClockAhead,
            AuthError::Stale { .. } => Self::ClockBehind,
            AuthError::Replayed => Self::Replayed,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = CLOCK_WINDOW_SECS;
        match self {
            Self::Unspecified => f.write_str("not authorized"),
            Self::Credentials => f.write_str("unknown gateway name or wrong key"),
            Self::ClockAhead => write!(f, "the gateway's clock is more than {w} s ahead"),
            Self::ClockBehind => write!(f, "the gateway's clock is more than {w} s behind"),
            Self::Replayed => f.write_str("authentication replayed"),
            Self::Destination => f.write_str("destination refused by the converter's policy"),
        }
    }
}

/// Nonces accepted within the clock window, so each authentication TLV is accepted once.
///
/// Only TLVs with a valid HMAC enter it, so filling it takes a valid key; a TLV can only be
/// replayed within the window, and every nonce is remembered for the whole window after its
/// timestamp, so expiring old entries opens no gap.
#[derive(Debug, Default)]
pub struct ReplayCache {
    seen: HashSet<[u8; NONCE_LEN]>,
    /// (forget after, nonce), in insertion order.
    order: VecDeque<(u64, [u8; NONCE_LEN])>,
}

impl ReplayCache {
    /// Records `nonce` (stamped `timestamp`); false if it was already there.
    pub fn insert(&mut self, now: u64, timestamp: u64, nonce: [u8; NONCE_LEN]) -> bool {
        self.expire(now);
        if !self.seen.insert(nonce) {
            return false;
        }
        // A TLV is accepted while |timestamp - now| <= window: remember it until then.
        self.order
            .push_back((timestamp.saturating_add(CLOCK_WINDOW_SECS), nonce));
        true
    }

    fn expire(&mut self, now: u64) {
        // Entries go in roughly time order; a late one only stays a little longer.
        while let Some(&(until, nonce)) = self.order.front() {
            if until >= now {
                break;
            }
            self.seen.remove(&nonce);
            self.order.pop_front();
        }
    }

    /// Nonces remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The converter's side: the gateways' keys and the replay cache.
#[derive(Default)]
pub struct Verifier {
    keys: HashMap<Name, Key>,
    replay: ReplayCache,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.keys.keys().map(Name::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Verifier")
            .field("gateways", &names)
            .field("remembered_nonces", &self.replay.len())
            .finish()
    }
}

impl Verifier {
    /// A verifier for these gateways.
    #[must_use]
    pub fn new(keys: Vec<(Name, Key)>) -> Self {
        Self {
            keys: keys.into_iter().collect(),
            replay: ReplayCache::default(),
        }
    }

    /// Replaces the keys (a reloaded keys file); remembered nonces stay.
    pub fn set_keys(&mut self, keys: Vec<(Name, Key)>) {
        self.keys = keys.into_iter().collect();
    }

    /// Gateways with a key.
    #[must_use]
    pub fn gateways(&self) -> usize {
        self.keys.len()
    }

    /// Checks `auth` for `connect` at converter time `now` (Unix seconds): the name has a key,
    /// the HMAC is right, the timestamp is within the window and the nonce is new.
    pub fn check(
        &mut self,
        auth: Option<&Auth>,
        connect: &Connect,
        now: u64,
    ) -> Result<Name, AuthError> {
        let auth = auth.ok_or(AuthError::Missing)?;
        // An unknown name costs the same HMAC as a known one: the time of the answer must not
        // tell which names exist (the answer itself does not, see `Refusal`).
        let Some(key) = self.keys.get(&auth.name) else {
            let _ = auth.verify(&Key::from_bytes([0; KEY_LEN]), connect);
            return Err(AuthError::UnknownName);
        };
        if !auth.verify(key, connect) {
            return Err(AuthError::BadHmac);
        }
        if auth.timestamp.abs_diff(now) > CLOCK_WINDOW_SECS {
            let skew_secs =
                i64::try_from(i128::from(auth.timestamp) - i128::from(now)).unwrap_or(i64::MAX);
            return Err(AuthError::Stale { skew_secs });
        }
        if !self.replay.insert(now, auth.timestamp, auth.nonce) {
            return Err(AuthError::Replayed);
        }
        Ok(auth.name.clone())
    }
}

/// The gateway's side: its name and key.
#[derive(Clone)]
pub struct Signer {
    name: Name,
    key: Key,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for gateway `name`.
    #[must_use]
    pub fn new(name: Name, key: Key) -> Self {
        Self { name, key }
    }

    /// From a key file holding exactly one key line.
    pub fn from_key_file_text(text: &str) -> Result<Self, KeyError> {
        let mut keys = parse_key_lines(text)?;
        if keys.len() != 1 {
            return Err(KeyError::BadLine { line: 0 });
        }
        let (name, key) = keys.remove(0);
        Ok(Self { name, key })
    }

    /// The gateway's name.
    #[must_use]
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// An authentication TLV for `connect` at `now` (Unix seconds), with a fresh random nonce;
    /// `early_answer`: [`FLAG_EARLY_ANSWER`].
    pub fn sign(&self, connect: &Connect, now: u64, early_answer: bool) -> std::io::Result<Auth> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(std::io::Error::other)?;
        Ok(Auth::sign_flagged(
            &self.key,
            &self.name,
            now,
            nonce,
            connect,
            early_answer,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::message::Message;
    use super::*;

    fn connect() -> Connect {
        Connect::new("203.0.113.7:443".parse().unwrap())
    }

    fn gw() -> (Name, Key) {
        (Name::new("home-gw").unwrap(), Key::from_bytes([7; KEY_LEN]))
    }

    #[test]
    fn the_hmac_is_over_the_documented_bytes() {
        // Recomputed independently of `mac`: the layout docs/convert.md gives.
        let (name, key) = gw();
        let auth = Auth::sign(&key, &name, 1_700_000_000, [9; NONCE_LEN], &connect());
        let mut input = b"mpbond-convert-auth-v1".to_vec();
        input.push(1);
        input.extend_from_slice(&1_700_000_000u64.to_be_bytes());
        input.extend_from_slice(&[9; NONCE_LEN]);
        input.push(7);
        input.extend_from_slice(b"home-gw");
        input.extend_from_slice(&[10, 5, 1, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        input.extend_from_slice(&[203, 0, 113, 7]);
        let mut m = HmacSha256::new_from_slice(&[7; KEY_LEN]).unwrap();
        m.update(&input);
        assert_eq!(auth.hmac, <[u8; 32]>::from(m.finalize().into_bytes()));
    }

    /// The early-answer flag is signed after the Connect TLV, so a TLV without it is signed as
    /// before flags existed, and setting or clearing it on the way breaks the HMAC.
    #[test]
    fn the_early_answer_flag_is_signed_and_round_trips() {
        let (name, key) = gw();
        let plain = Auth::sign(&key, &name, 1_700_000_000, [9; NONCE_LEN], &connect());
        let flagged =
            Auth::sign_flagged(&key, &name, 1_700_000_000, [9; NONCE_LEN], &connect(), true);
        let mut m = mac(&key, &name, 1_700_000_000, &[9; NONCE_LEN], &connect(), 0);
        m.update(&[FLAG_EARLY_ANSWER]);
        assert_eq!(flagged.hmac, <[u8; 32]>::from(m.finalize().into_bytes()));
        assert_ne!(flagged.hmac, plain.hmac);
        assert!(flagged.verify(&key, &connect()) && plain.verify(&key, &connect()));
        let mut flipped = flagged.clone();
        flipped.early_answer = false;
        assert!(!flipped.verify(&key, &connect()), "flag cleared on the way");
        let mut v = Vec::new();
        flagged.emit_value(&mut v);
        assert_eq!(v[1], FLAG_EARLY_ANSWER);
        v.resize(66, 0);
        assert_eq!(Auth::parse_value(&v), Some(flagged));
        v[1] = 0x02;
        assert!(Auth::parse_value(&v).is_none(), "an unknown flag");
    }

    #[test]
    fn auth_tlv_round_trips_in_a_message() {
        let (name, key) = gw();
        let auth = Auth::sign(&key, &name, 1_700_000_000, [1; NONCE_LEN], &connect());
        let msg = Message {
            connect: Some(connect()),
            auth: Some(auth),
            ..Message::default()
        };
        let bytes = msg.emit().unwrap();
        // Header 4 + Connect 20 + Auth (2 + 58 + 7 → 68).
        assert_eq!(bytes.len(), 4 + 20 + 68);
        assert_eq!(bytes[24], 0xc0);
        assert_eq!(bytes[25], 17);
        assert_eq!(Message::parse(&bytes), Ok(msg));
    }

    #[test]
    fn malformed_auth_values_are_refused() {
        let (name, key) = gw();
        let auth = Auth::sign(&key, &name, 1, [1; NONCE_LEN], &connect());
        let mut v = Vec::new();
        auth.emit_value(&mut v);
        v.resize(66, 0);
        assert!(Auth::parse_value(&v).is_some());
        let mut bad = v.clone();
        bad[0] = 0;
        assert!(Auth::parse_value(&bad).is_none(), "empty name");
        let mut bad = v.clone();
        bad[0] = 8;
        assert!(Auth::parse_value(&bad).is_none(), "name runs into padding");
        let mut bad = v.clone();
        bad[65] = 1;
        assert!(Auth::parse_value(&bad).is_none(), "non-zero padding");
        let mut bad = v.clone();
        bad[60] = b' ';
        assert!(Auth::parse_value(&bad).is_none(), "space in the name");
        assert!(
            Auth::parse_value(&v[..62]).is_none(),
            "too short for its name"
        );
        let mut long = v.clone();
        long.extend_from_slice(&[0; 4]);
        assert!(Auth::parse_value(&long).is_none(), "longer than its name");
    }

    #[test]
    fn verifier_accepts_once_and_refuses_each_fault() {
        let (name, key) = gw();
        let now = 1_700_000_000;
        let mut v = Verifier::new(vec![(name.clone(), key.clone())]);
        let signer = Signer::new(name.clone(), key);
        let good = signer.sign(&connect(), now, false).unwrap();
        assert_eq!(v.check(None, &connect(), now), Err(AuthError::Missing));
        assert_eq!(v.check(Some(&good), &connect(), now + 5), Ok(name.clone()));
        assert_eq!(
            v.check(Some(&good), &connect(), now + 6),
            Err(AuthError::Replayed)
        );
        // Another destination with the same TLV: the HMAC covers the Connect TLV.
        let other = Connect::new("203.0.113.8:443".parse().unwrap());
        let fresh = signer.sign(&connect(), now, false).unwrap();
        assert_eq!(v.check(Some(&fresh), &other, now), Err(AuthError::BadHmac));
        // A wrong key.
        let wrong = Signer::new(name.clone(), Key::from_bytes([8; KEY_LEN]));
        let w = wrong.sign(&connect(), now, false).unwrap();
        assert_eq!(v.check(Some(&w), &connect(), now), Err(AuthError::BadHmac));
        // An unknown name.
        let stranger = Signer::new(Name::new("other").unwrap(), Key::from_bytes([7; KEY_LEN]));
        let s = stranger.sign(&connect(), now, false).unwrap();
        assert_eq!(
            v.check(Some(&s), &connect(), now),
            Err(AuthError::UnknownName)
        );
        // Clock window: 60 s either way is accepted, 61 s is not.
        let old = signer.sign(&connect(), now - 61, false).unwrap();
        assert_eq!(
            v.check(Some(&old), &connect(), now),
            Err(AuthError::Stale { skew_secs: -61 })
        );
        let edge = signer.sign(&connect(), now + 60, false).unwrap();
        assert!(v.check(Some(&edge), &connect(), now).is_ok());
        // A revoked key: the name goes from the keys file.
        v.set_keys(Vec::new());
        let after = signer.sign(&connect(), now, false).unwrap();
        assert_eq!(
            v.check(Some(&after), &connect(), now),
            Err(AuthError::UnknownName)
        );
    }

    #[test]
    fn refusal_reasons_round_trip_and_never_tell_an_unknown_name_from_a_wrong_key() {
        for r in [
            Refusal::Unspecified,
            Refusal::Credentials,
            Refusal::ClockAhead,
            Refusal::ClockBehind,
            Refusal::Replayed,
            Refusal::Destination,
        ] {
            assert_eq!(Refusal::from_value(r.value()), r);
        }
        assert_eq!(Refusal::from_value(200), Refusal::Unspecified);
        assert_eq!(
            Refusal::from(AuthError::UnknownName),
            Refusal::from(AuthError::BadHmac)
        );
        assert_eq!(
            Refusal::from(AuthError::Missing),
            Refusal::from(AuthError::BadHmac)
        );
        assert_eq!(
            Refusal::from(AuthError::Stale { skew_secs: 120 }),
            Refusal::ClockAhead
        );
        assert_eq!(
            Refusal::from(AuthError::Stale { skew_secs: -120 }),
            Refusal::ClockBehind
        );
        assert!(!Refusal::Destination.is_about_the_gateway());
        assert!(Refusal::ClockBehind.is_about_the_gateway());
    }

    #[test]
    fn replay_cache_forgets_only_after_the_window() {
        let mut c = ReplayCache::default();
        assert!(c.insert(1000, 1000, [1; NONCE_LEN]));
        assert!(!c.insert(1060, 1000, [1; NONCE_LEN]));
        // Past the window the TLV is stale anyway; the cache may forget it.
        assert!(c.insert(1061, 1061, [2; NONCE_LEN]));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn key_lines_parse_and_errors_never_show_the_key() {
        let (name, key) = gw();
        let line = key_line(&name, &key);
        assert_eq!(line, format!("home-gw {}", "07".repeat(32)));
        let text = format!("# converter keys\n\n{line}\nlaptop {}\n", "ab".repeat(32));
        let keys = parse_key_lines(&text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], (name, key));
        let secret = "cd".repeat(31);
        let err = parse_key_lines(&format!("gw {secret}\n")).unwrap_err();
        assert_eq!(err, KeyError::BadLine { line: 1 });
        assert!(!err.to_string().contains(&secret));
        assert!(matches!(
            parse_key_lines(&format!("{line}\n{line}")),
            Err(KeyError::Duplicate { line: 2, .. })
        ));
        assert_eq!(parse_key_lines("# nothing\n"), Err(KeyError::Empty));
        assert!(matches!(
            parse_key_lines(&format!("bad/name {}", "00".repeat(32))),
            Err(KeyError::BadName(_))
        ));
        assert_eq!(format!("{:?}", Key::from_bytes([7; 32])), "Key(<redacted>)");
        assert!(!format!("{:?}", Signer::new(gw().0, gw().1)).contains("07"));
    }
}
