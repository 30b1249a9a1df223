//! The Convert protocol (RFC 8803) between gateway and converter, with mpbond's authentication.
//!
//! - [`message`]: the wire format, header and TLVs, as bytes and as a [`Message`].
//! - [`auth`]: the authentication TLV, pre-shared keys, and the converter's replay cache.
//! - [`exchange`]: reading and writing messages on a connection; [`client`]: the client's end.
//!
//! The exchange (RFC 8803 §4.2): the client's first bytes are a message with a Connect TLV (and
//! our authentication TLV); the converter connects to the destination and only then answers,
//! with an Extended TCP Header TLV on success or an Error TLV, after which both directions carry
//! the application's bytes unchanged. docs/convert.md describes it for users.

pub mod auth;
pub mod client;
pub mod exchange;
pub mod message;

pub use auth::{Auth, AuthError, Key, Name, Signer, Verifier};
pub use message::{Connect, ErrorCode, ErrorTlv, Message, ParseError};

/// The `convert` fuzz target's body: any bytes, read as the converter reads a client's first
/// bytes, must not panic; whatever parses must emit to bytes that parse back to the same message.
#[doc(hidden)]
pub fn fuzz_message(data: &[u8]) {
    let Ok(len) = message::message_len(data) else {
        return;
    };
    let Some(bytes) = data.get(..len) else {
        return;
    };
    if let Ok(msg) = Message::parse(bytes) {
        let again = msg.emit().map(|b| Message::parse(&b));
        assert_eq!(again, Some(Ok(msg)), "emit/parse round trip");
    }
}
