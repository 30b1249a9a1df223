//! Reading and writing Convert messages on a connection, for both ends.
//!
//! Everything works on a shared reference to a connection of either data plane ([`Conn`]) so
//! that a relay can read the converter's reply while it already carries the other direction
//! (see [`crate::relay::relay`]).

use std::io;
use std::time::Duration;

use super::message::{self, ErrorCode, HEADER_LEN, Message, ParseError};
use crate::stack::Conn;

/// Why no message could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The connection failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer closed before a whole message arrived.
    #[error("connection closed after {0} bytes of a Convert message")]
    Closed(usize),
    /// The bytes are not a valid message.
    #[error("{0}")]
    Parse(#[from] ParseError),
}

/// Reads exactly `buf.len()` bytes. Returns how many arrived before the peer's FIN if fewer.
pub async fn read_exact(stream: &impl Conn, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        stream.readable().await?;
        match stream.try_read(&mut buf[got..]) {
            Ok(0) => return Ok(got),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads one whole message, and not a byte more: what follows is the application's.
pub async fn read_message(stream: &impl Conn) -> Result<Message, ReadError> {
    let mut buf = [0u8; message::MAX_LEN];
    let got = read_exact(stream, &mut buf[..HEADER_LEN]).await?;
    if got < HEADER_LEN {
        return Err(ReadError::Closed(got));
    }
    let len = message::message_len(&buf[..HEADER_LEN])?;
    let got = read_exact(stream, &mut buf[HEADER_LEN..len]).await?;
    if got < len - HEADER_LEN {
        return Err(ReadError::Closed(HEADER_LEN + got));
    }
    Ok(Message::parse(&buf[..len])?)
}

/// Writes a message.
pub async fn write_message(stream: &impl Conn, msg: &Message) -> io::Result<()> {
    let bytes = msg
        .emit()
        .ok_or_else(|| io::Error::other("Convert message longer than 1020 bytes"))?;
    stream.write_all(&bytes).await
}

/// Answers with an Error TLV and closes gracefully (RFC 8803 §4.2: not with a reset, so that
/// the error reaches the client): see [`close_gracefully`].
pub async fn refuse(stream: &impl Conn, code: ErrorCode, value: u8, linger: Duration) {
    if write_message(stream, &Message::error(code, value))
        .await
        .is_ok()
    {
        close_gracefully(stream, linger).await;
    }
}

/// Sends FIN, then discards what the client still sends for up to `linger` (or until its FIN),
/// because closing a socket with unread bytes would make the kernel reset it and the last
/// answer could be lost.
pub async fn close_gracefully(stream: &impl Conn, linger: Duration) {
    let _ = stream.shutdown_write();
    let drain = async {
        let mut sink = [0u8; 4096];
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut sink) {
                Ok(0) => return,
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return,
                Ok(_) | Err(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(linger, drain).await;
}
