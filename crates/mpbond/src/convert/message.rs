//! Convert messages (RFC 8803 §6): the fixed header and the TLVs, between bytes and [`Message`].
//!
//! A message is the first thing each side writes on the connection: a 4-byte header whose Total
//! Length (in 32-bit words, header included) says where the TLVs end and the application's bytes
//! begin, then TLVs, each `Type`, `Length` (32-bit words, Type and Length included) and a value
//! zero-padded to a word boundary.
//!
//! Parsing never panics and never reads outside the slice it is given: every malformed input is a
//! [`ParseError`], which also names the RFC error code to answer it with
//! ([`ParseError::error_code`]).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::auth::Auth;

/// The only version (§6.1; 0 is reserved).
pub const VERSION: u8 = 1;
/// Tells a Convert message apart from application data (§6.1).
pub const MAGIC: u16 = 0x2263;
/// Bytes in the fixed header.
pub const HEADER_LEN: usize = 4;
/// The longest message the 8-bit Total Length can describe: 255 words.
pub const MAX_LEN: usize = 255 * 4;

/// TLV types (§6.2, IANA "Convert TLVs").
pub mod tlv {
    /// Info (§6.2.2): asks the converter for its Supported TCP Extensions.
    pub const INFO: u8 = 1;
    /// Connect (§6.2.3): the destination, and TCP options for the converter's SYN.
    pub const CONNECT: u8 = 10;
    /// Extended TCP Header (§6.2.4): the TCP options of the server's SYN/ACK.
    pub const EXTENDED_TCP_HEADER: u8 = 20;
    /// Supported TCP Extensions (§6.2.5): the option kinds the converter can use.
    pub const SUPPORTED_TCP_EXTENSIONS: u8 = 21;
    /// Cookie (§6.2.6).
    pub const COOKIE: u8 = 22;
    /// Error (§6.2.8).
    pub const ERROR: u8 = 30;
    /// mpbond's authentication TLV, in the private-use range 192–255 (docs/convert.md).
    pub const AUTH: u8 = 0xc0;
}

/// Error codes of the Error TLV (§6.2.8, IANA "Convert Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 0: the version is not supported; the value lists the supported versions.
    UnsupportedVersion,
    /// 1: the message could not be parsed.
    MalformedMessage,
    /// 2: the message holds a TLV the converter does not support.
    UnsupportedMessage,
    /// 3: the converter wants a Cookie TLV.
    MissingCookie,
    /// 32: not allowed (authentication failed, destination refused).
    NotAuthorized,
    /// 33: the Connect TLV asks for TCP options the converter cannot use.
    UnsupportedTcpOption,
    /// 64: the converter is out of a resource; the value is the seconds to wait.
    ResourceExceeded,
    /// 65: the converter's own network failed.
    NetworkFailure,
    /// 96: the destination reset the connection.
    ConnectionReset,
    /// 97: the destination could not be reached; the value is an ICMP code.
    DestinationUnreachable,
    /// A code this version does not know.
    Other(u8),
}

impl From<u8> for ErrorCode {
    fn from(code: u8) -> Self {
        match code {
            0 => Self::UnsupportedVersion,
            1 => Self::MalformedMessage,
            2 => Self::UnsupportedMessage,
            3 => Self::MissingCookie,
            32 => Self::NotAuthorized,
            33 => Self::UnsupportedTcpOption,
            64 => Self::ResourceExceeded,
            65 => Self::NetworkFailure,
            96 => Self::ConnectionReset,
            97 => Self::DestinationUnreachable,
            other => Self::Other(other),
        }
    }
}

impl From<ErrorCode> for u8 {
    fn from(code: ErrorCode) -> u8 {
        match code {
            ErrorCode::UnsupportedVersion => 0,
            ErrorCode::MalformedMessage => 1,
            ErrorCode::UnsupportedMessage => 2,
            ErrorCode::MissingCookie => 3,
            ErrorCode::NotAuthorized => 32,
            ErrorCode::UnsupportedTcpOption => 33,
            ErrorCode::ResourceExceeded => 64,
            ErrorCode::NetworkFailure => 65,
            ErrorCode::ConnectionReset => 96,
            ErrorCode::DestinationUnreachable => 97,
            ErrorCode::Other(other) => other,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::UnsupportedVersion => "Unsupported Version",
            Self::MalformedMessage => "Malformed Message",
            Self::UnsupportedMessage => "Unsupported Message",
            Self::MissingCookie => "Missing Cookie",
            Self::NotAuthorized => "Not Authorized",
            Self::UnsupportedTcpOption => "Unsupported TCP Option",
            Self::ResourceExceeded => "Resource Exceeded",
            Self::NetworkFailure => "Network Failure",
            Self::ConnectionReset => "Connection Reset",
            Self::DestinationUnreachable => "Destination Unreachable",
            Self::Other(_) => "unknown error",
        };
        write!(f, "{name} ({})", u8::from(*self))
    }
}

/// What is wrong with one TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlvProblem {
    /// Its Length is 0, or shorter than its type's fixed part.
    TooShort,
    /// Its Length runs past the end of the message.
    Overrun,
    /// It appears a second time.
    Duplicate,
    /// Its padding or reserved part is not zero, or its TCP options are badly framed.
    BadValue,
}

impl std::fmt::Display for TlvProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::TooShort => "too short",
            Self::Overrun => "runs past the end of the message",
            Self::Duplicate => "appears twice",
            Self::BadValue => "badly formed value",
        })
    }
}

/// Why bytes are not a Convert message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer bytes than the header, or than the header's Total Length.
    #[error("Convert message truncated: {have} of {need} bytes")]
    Truncated {
        /// Bytes given.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A version other than 1.
    #[error("unsupported Convert version {0}")]
    UnsupportedVersion(u8),
    /// Not the Convert magic number: not a Convert message at all.
    #[error("not a Convert message (magic {0:#06x})")]
    BadMagic(u16),
    /// Total Length 0, or different from the bytes given.
    #[error("Convert Total Length {words} words does not match {have} bytes")]
    BadTotalLength {
        /// The field.
        words: u8,
        /// Bytes given.
        have: usize,
    },
    /// A TLV that breaks the rules of §6.2.
    #[error("Convert TLV type {ty} at byte {offset}: {problem}")]
    BadTlv {
        /// Where it starts in the message.
        offset: usize,
        /// Its type.
        ty: u8,
        /// What is wrong.
        problem: TlvProblem,
    },
    /// A TLV type this implementation does not support.
    #[error("unsupported Convert TLV type {ty} at byte {offset}")]
    UnsupportedTlv {
        /// Where it starts in the message.
        offset: usize,
        /// Its type.
        ty: u8,
    },
}

impl ParseError {
    /// The Error TLV code that answers this error (§6.2.8).
    #[must_use]
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            Self::UnsupportedTlv { .. } => ErrorCode::UnsupportedMessage,
            Self::Truncated { .. } | Self::BadMagic(_) | Self::BadTotalLength { .. } => {
                ErrorCode::MalformedMessage
            }
            Self::BadTlv { .. } => ErrorCode::MalformedMessage,
        }
    }
}

/// Reads the fixed header (§6.1) and returns the whole message's length in bytes, header
/// included: how many bytes to read before [`Message::parse`].
pub fn message_len(header: &[u8]) -> Result<usize, ParseError> {
    let &[version, words, m0, m1, ..] = header else {
        return Err(ParseError::Truncated {
            have: header.len(),
            need: HEADER_LEN,
        });
    };
    if version != VERSION {
        return Err(ParseError::UnsupportedVersion(version));
    }
    let magic = u16::from_be_bytes([m0, m1]);
    if magic != MAGIC {
        return Err(ParseError::BadMagic(magic));
    }
    if words == 0 {
        return Err(ParseError::BadTotalLength {
            words,
            have: header.len(),
        });
    }
    Ok(usize::from(words) * 4)
}

/// The Connect TLV (§6.2.3): where the converter should connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Destination address and port. IPv4 travels as an IPv4-mapped IPv6 address.
    pub remote: SocketAddr,
    /// TCP options for the converter's SYN (the "Extended Connect"), without padding.
    pub tcp_options: Vec<u8>,
}

impl Connect {
    /// A basic Connect: no TCP options.
    #[must_use]
    pub fn new(remote: SocketAddr) -> Self {
        Self {
            remote,
            tcp_options: Vec::new(),
        }
    }

    fn value_len(&self) -> usize {
        2 + 16 + self.tcp_options.len()
    }

    /// The TLV as it goes on the wire: what the authentication TLV's HMAC covers.
    #[must_use]
    pub fn to_tlv_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(tlv_len(self.value_len()));
        push_tlv(&mut out, tlv::CONNECT, |v| {
            v.extend_from_slice(&self.remote.port().to_be_bytes());
            let ip = match self.remote.ip() {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            v.extend_from_slice(&ip.octets());
            v.extend_from_slice(&self.tcp_options);
        });
        out
    }
}

/// The Error TLV (§6.2.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorTlv {
    /// What went wrong.
    pub code: ErrorCode,
    /// The code's value: at least one byte. On parsing, zero bytes after the first that reach
    /// the end of the TLV are taken as padding.
    pub value: Vec<u8>,
}

impl ErrorTlv {
    /// An error whose value is the single byte `value`.
    #[must_use]
    pub fn new(code: ErrorCode, value: u8) -> Self {
        Self {
            code,
            value: vec![value],
        }
    }
}

/// A Convert message: the TLVs that may each appear once (§6.2), whatever their order on the
/// wire. [`Message::emit`] writes them in the order of their type numbers, the authentication
/// TLV last.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Info TLV present.
    pub info: bool,
    /// Connect TLV.
    pub connect: Option<Connect>,
    /// Extended TCP Header TLV: the server's SYN/ACK options, without padding.
    pub extended_tcp_header: Option<Vec<u8>>,
    /// Supported TCP Extensions TLV: option kinds, one per byte.
    pub supported_tcp_extensions: Option<Vec<u8>>,
    /// Cookie TLV: the opaque cookie.
    pub cookie: Option<Vec<u8>>,
    /// Error TLV.
    pub error: Option<ErrorTlv>,
    /// mpbond's authentication TLV.
    pub auth: Option<Auth>,
}

/// Bytes of a TLV whose value (after Type and Length) is `value_len` bytes: padded to a word.
fn tlv_len(value_len: usize) -> usize {
    (2 + value_len).div_ceil(4) * 4
}

/// Appends a TLV: type, length in words, the value `fill` writes, zero padding.
fn push_tlv(out: &mut Vec<u8>, ty: u8, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[ty, 0]);
    fill(out);
    let len = (out.len() - start).div_ceil(4) * 4;
    out.resize(start + len, 0);
    // A TLV longer than 255 words cannot fit a message either; `emit` checks the total.
    out[start + 1] = u8::try_from(len / 4).unwrap_or(u8::MAX);
}

/// Walks TCP options (kind, length, value; NOP allowed, no EOL inside) up to the first zero
/// byte, after which everything must be zero padding. Returns the options without padding.
fn tcp_options(bytes: &[u8]) -> Option<&[u8]> {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            0 => {
                return bytes[i..].iter().all(|&b| b == 0).then_some(&bytes[..i]);
            }
            1 => i += 1,
            _ => {
                let len = usize::from(*bytes.get(i + 1)?);
                if len < 2 || i + len > bytes.len() {
                    return None;
                }
                i += len;
            }
        }
    }
    Some(bytes)
}

/// Bytes up to the first zero, when everything after it is zero.
fn until_zero_padding(bytes: &[u8]) -> Option<&[u8]> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes[end..]
        .iter()
        .all(|&b| b == 0)
        .then_some(&bytes[..end])
}

impl Message {
    /// Parses a whole message, `bytes` being exactly its Total Length (see [`message_len`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let need = message_len(bytes)?;
        if bytes.len() != need {
            return Err(if bytes.len() < need {
                ParseError::Truncated {
                    have: bytes.len(),
                    need,
                }
            } else {
                ParseError::BadTotalLength {
                    words: bytes[1],
                    have: bytes.len(),
                }
            });
        }
        let mut msg = Self::default();
        let mut offset = HEADER_LEN;
        while offset < bytes.len() {
            let rest = &bytes[offset..];
            let bad = |problem| ParseError::BadTlv {
                offset,
                ty: rest[0],
                problem,
            };
            // The message is a whole number of words, so a TLV header is always there.
            let (ty, words) = (rest[0], usize::from(*rest.get(1).unwrap_or(&0)));
            if words == 0 {
                return Err(bad(TlvProblem::TooShort));
            }
            let Some(tlv) = rest.get(..words * 4) else {
                return Err(bad(TlvProblem::Overrun));
            };
            let duplicate = match ty {
                tlv::INFO => std::mem::replace(&mut msg.info, true),
                tlv::CONNECT => msg.connect.is_some(),
                tlv::EXTENDED_TCP_HEADER => msg.extended_tcp_header.is_some(),
                tlv::SUPPORTED_TCP_EXTENSIONS => msg.supported_tcp_extensions.is_some(),
                tlv::COOKIE => msg.cookie.is_some(),
                tlv::ERROR => msg.error.is_some(),
                tlv::AUTH => msg.auth.is_some(),
                _ => return Err(ParseError::UnsupportedTlv { offset, ty }),
            };
            if duplicate {
                return Err(bad(TlvProblem::Duplicate));
            }
            msg.set_tlv(ty, words, &tlv[2..]).map_err(bad)?;
            offset += words * 4;
        }
        Ok(msg)
    }

    /// Stores one TLV's value (after Type and Length; `words` is its Length field).
    fn set_tlv(&mut self, ty: u8, words: usize, value: &[u8]) -> Result<(), TlvProblem> {
        match ty {
            tlv::INFO => {
                // Two reserved bytes, ignored on receipt (§6.2.2).
                if words != 1 {
                    return Err(TlvProblem::BadValue);
                }
            }
            tlv::CONNECT => {
                if value.len() < 18 {
                    return Err(TlvProblem::TooShort);
                }
                let port = u16::from_be_bytes([value[0], value[1]]);
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&value[2..18]);
                let ip = Ipv6Addr::from(octets);
                let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
                let options = tcp_options(&value[18..]).ok_or(TlvProblem::BadValue)?;
                self.connect = Some(Connect {
                    remote: SocketAddr::new(ip, port),
                    tcp_options: options.to_vec(),
                });
            }
            tlv::EXTENDED_TCP_HEADER | tlv::SUPPORTED_TCP_EXTENSIONS | tlv::COOKIE => {
                // 16 reserved bits first; Cookie's and Supported's are zero (§6.2.5, §6.2.6),
                // Extended TCP Header's are unassigned and ignored (§6.2.4).
                let body = &value[2..];
                match ty {
                    tlv::EXTENDED_TCP_HEADER => {
                        let options = tcp_options(body).ok_or(TlvProblem::BadValue)?;
                        self.extended_tcp_header = Some(options.to_vec());
                    }
                    tlv::SUPPORTED_TCP_EXTENSIONS => {
                        let kinds = until_zero_padding(body).ok_or(TlvProblem::BadValue)?;
                        self.supported_tcp_extensions = Some(kinds.to_vec());
                    }
                    _ => self.cookie = Some(body.to_vec()),
                }
            }
            tlv::ERROR => {
                let mut end = value.len();
                while end > 2 && value[end - 1] == 0 {
                    end -= 1;
                }
                self.error = Some(ErrorTlv {
                    code: ErrorCode::from(value[0]),
                    value: value[1..end].to_vec(),
                });
            }
            _ => {
                let auth = Auth::parse_value(value).ok_or(TlvProblem::BadValue)?;
                self.auth = Some(auth);
            }
        }
        Ok(())
    }

    /// The message as bytes, header included. `None` when it would not fit the 8-bit Total
    /// Length (more than [`MAX_LEN`] bytes) or a TLV would not fit its 8-bit Length.
    #[must_use]
    pub fn emit(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&[VERSION, 0]);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        let mut fits = true;
        let mut check = |out: &Vec<u8>, start: usize| {
            fits &= out.len() - start <= 255 * 4;
        };
        if self.info {
            push_tlv(&mut out, tlv::INFO, |v| v.extend_from_slice(&[0, 0]));
        }
        if let Some(c) = &self.connect {
            let start = out.len();
            out.extend_from_slice(&c.to_tlv_bytes());
            check(&out, start);
        }
        let mut reserved_then = |out: &mut Vec<u8>, ty: u8, body: &[u8]| {
            let start = out.len();
            push_tlv(out, ty, |v| {
                v.extend_from_slice(&[0, 0]);
                v.extend_from_slice(body);
            });
            check(out, start);
        };
        if let Some(o) = &self.extended_tcp_header {
            reserved_then(&mut out, tlv::EXTENDED_TCP_HEADER, o);
        }
        if let Some(k) = &self.supported_tcp_extensions {
            reserved_then(&mut out, tlv::SUPPORTED_TCP_EXTENSIONS, k);
        }
        if let Some(c) = &self.cookie {
            reserved_then(&mut out, tlv::COOKIE, c);
        }
        if let Some(e) = &self.error {
            let start = out.len();
            push_tlv(&mut out, tlv::ERROR, |v| {
                v.push(u8::from(e.code));
                if e.value.is_empty() {
                    v.push(0);
                }
                v.extend_from_slice(&e.value);
            });
            check(&out, start);
        }
        if let Some(a) = &self.auth {
            push_tlv(&mut out, tlv::AUTH, |v| a.emit_value(v));
        }
        let words = u8::try_from(out.len() / 4).ok()?;
        out[1] = words;
        fits.then_some(out)
    }

    /// A message holding only an Error TLV.
    #[must_use]
    pub fn error(code: ErrorCode, value: u8) -> Self {
        Self {
            error: Some(ErrorTlv::new(code, value)),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn basic_connect_is_the_rfc_layout() {
        // RFC 8803 §6.2.3: type 10, length 5 words, port, IPv4-mapped address.
        let msg = Message {
            connect: Some(Connect::new(v4("192.0.2.1:80"))),
            ..Message::default()
        };
        let bytes = msg.emit().unwrap();
        let mut want = vec![1, 6, 0x22, 0x63, 10, 5, 0, 80];
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]);
        assert_eq!(bytes, want);
        assert_eq!(message_len(&bytes[..4]), Ok(24));
        assert_eq!(Message::parse(&bytes), Ok(msg));
    }

    #[test]
    fn error_tlv_is_one_word_with_its_value() {
        let bytes = Message::error(ErrorCode::NotAuthorized, 0).emit().unwrap();
        assert_eq!(bytes, [1, 2, 0x22, 0x63, 30, 1, 32, 0]);
        let bytes = Message::error(ErrorCode::DestinationUnreachable, 3)
            .emit()
            .unwrap();
        assert_eq!(bytes, [1, 2, 0x22, 0x63, 30, 1, 97, 3]);
        let parsed = Message::parse(&bytes).unwrap();
        assert_eq!(
            parsed.error,
            Some(ErrorTlv::new(ErrorCode::DestinationUnreachable, 3))
        );
    }

    #[test]
    fn extended_connect_options_are_padded_and_recovered() {
        let msg = Message {
            connect: Some(Connect {
                remote: "[2001:db8::1]:443".parse().unwrap(),
                tcp_options: vec![2, 4, 5, 0xb4, 1, 4, 2],
            }),
            info: true,
            ..Message::default()
        };
        let bytes = msg.emit().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(Message::parse(&bytes), Ok(msg));
    }

    #[test]
    fn header_errors_name_the_rfc_code() {
        assert_eq!(
            message_len(&[2, 1, 0x22, 0x63]).unwrap_err().error_code(),
            ErrorCode::UnsupportedVersion
        );
        assert_eq!(
            message_len(&[1, 1, 0x22, 0x64]),
            Err(ParseError::BadMagic(0x2264))
        );
        assert!(matches!(
            message_len(&[1, 0, 0x22, 0x63]),
            Err(ParseError::BadTotalLength { .. })
        ));
        assert!(matches!(
            message_len(&[1, 1]),
            Err(ParseError::Truncated { have: 2, need: 4 })
        ));
        // The header alone is a valid, empty message.
        assert_eq!(Message::parse(&[1, 1, 0x22, 0x63]), Ok(Message::default()));
    }

    #[test]
    fn bad_tlvs_are_malformed_or_unsupported() {
        let with = |tlvs: &[u8]| {
            let mut m = vec![1, u8::try_from(1 + tlvs.len() / 4).unwrap(), 0x22, 0x63];
            m.extend_from_slice(tlvs);
            Message::parse(&m)
        };
        let problem = |r: Result<Message, ParseError>| match r {
            Err(ParseError::BadTlv { problem, .. }) => Some(problem),
            _ => None,
        };
        assert_eq!(problem(with(&[1, 0, 0, 0])), Some(TlvProblem::TooShort));
        assert_eq!(problem(with(&[1, 2, 0, 0])), Some(TlvProblem::Overrun));
        assert_eq!(
            problem(with(&[1, 1, 0, 0, 1, 1, 0, 0])),
            Some(TlvProblem::Duplicate)
        );
        // A Connect shorter than port + address.
        assert_eq!(
            problem(with(&[
                10, 4, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ])),
            Some(TlvProblem::TooShort)
        );
        // Options whose length runs past the TLV.
        let mut c = vec![10, 6, 0, 80];
        c.extend_from_slice(&[0; 16]);
        c.extend_from_slice(&[2, 9, 0, 0]);
        assert_eq!(problem(with(&c)), Some(TlvProblem::BadValue));
        // Non-zero bytes after the padding starts.
        c.truncate(20);
        c.extend_from_slice(&[0, 0, 7, 0]);
        assert_eq!(problem(with(&c)), Some(TlvProblem::BadValue));
        assert_eq!(
            with(&[7, 1, 0, 0]),
            Err(ParseError::UnsupportedTlv { offset: 4, ty: 7 })
        );
        assert_eq!(
            with(&[7, 1, 0, 0]).unwrap_err().error_code(),
            ErrorCode::UnsupportedMessage
        );
        assert_eq!(
            with(&[0xc1, 1, 0, 0]).unwrap_err().error_code(),
            ErrorCode::UnsupportedMessage
        );
        // A length that disagrees with the bytes given.
        assert!(matches!(
            Message::parse(&[1, 2, 0x22, 0x63]),
            Err(ParseError::Truncated { have: 4, need: 8 })
        ));
        assert!(matches!(
            Message::parse(&[1, 1, 0x22, 0x63, 1, 1, 0, 0]),
            Err(ParseError::BadTotalLength { words: 1, have: 8 })
        ));
    }

    #[test]
    fn converter_tlvs_round_trip() {
        let msg = Message {
            extended_tcp_header: Some(vec![2, 4, 5, 0xb4, 4, 2, 3, 3, 7]),
            supported_tcp_extensions: Some(vec![2, 3, 4, 8]),
            cookie: Some(vec![1, 2, 3, 4, 5, 6, 7, 8]),
            ..Message::default()
        };
        assert_eq!(Message::parse(&msg.emit().unwrap()), Ok(msg));
    }

    #[test]
    fn oversized_messages_are_refused_not_truncated() {
        let msg = Message {
            cookie: Some(vec![1; 1100]),
            ..Message::default()
        };
        assert_eq!(msg.emit(), None);
    }
}
