//! Bytes ⇄ structs for everything mpbond puts on the wire.
//!
//! Two levels, as in smoltcp. A `Packet<T: AsRef<[u8]>>` view checks its buffer once in
//! `new_checked`, after which no accessor can panic or read out of bounds. A `Repr` is the
//! packet's meaning as a plain struct: `parse` validates a view into a `Repr`, `emit` writes a
//! `Repr` into a buffer of `buffer_len()` bytes. Illegal states are unrepresentable where the
//! RFC allows it (a DSS checksum cannot exist without a mapping).

pub mod checksum;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod mptcp;
pub mod tcp;
pub mod tcp_option;

/// Why bytes could not be read as the structure asked for. Cheap to create and to compare;
/// the `&'static str` says what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer ends before the structure does.
    #[error("truncated: {0}")]
    Truncated(&'static str),
    /// A field holds a value the format does not allow.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// Valid, but not something this implementation handles (IP fragments, say).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A checksum did not verify.
    #[error("bad checksum")]
    Checksum,
}

/// Result of parsing.
pub type Result<T> = core::result::Result<T, Error>;
