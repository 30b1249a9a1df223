//! The client end of the Convert protocol (the gateway, and `mpbond connect --via`): open a
//! connection to the converter, send the Connect (and authentication) TLVs, read the reply.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpStream;

use super::auth::Signer;
use super::exchange::{self, ReadError};
use super::message::{Connect, ErrorTlv, Message};
use crate::stack::kernel::{self, ConnectOptions, Proto};

/// How to reach the converter.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The converter's address.
    pub converter: SocketAddr,
    /// Use MPTCP to the converter (the point of it all; false only for tests and debugging).
    pub mptcp: bool,
    /// Put the Convert message in the SYN (TCP Fast Open) when the kernel has a cookie. Off by
    /// default: on Linux 6.18 an MPTCP connection whose SYN carried data stalls under bulk
    /// traffic from the server (see docs/troubleshooting.md, "TCP Fast Open").
    pub fast_open: bool,
    /// Give up connecting to the converter after this long.
    pub connect_timeout: Duration,
    /// Give up waiting for the converter's reply after this long (it connects to the
    /// destination first, so this must exceed the converter's own connect timeout).
    pub reply_timeout: Duration,
}

impl ClientOptions {
    /// Defaults for reaching `converter`.
    #[must_use]
    pub fn new(converter: SocketAddr) -> Self {
        Self {
            converter,
            mptcp: true,
            fast_open: false,
            connect_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(20),
        }
    }
}

/// Why a converted connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The converter could not be reached.
    #[error("cannot reach the converter {addr}: {err}")]
    Connect {
        /// The converter.
        addr: SocketAddr,
        /// Why.
        err: io::Error,
    },
    /// The connection to the converter failed.
    #[error("connection to the converter failed: {0}")]
    Io(#[from] io::Error),
    /// The converter did not acknowledge the Convert message (twice, on two connections).
    #[error("the converter {addr} did not acknowledge the Convert message within {wait:?}")]
    Unacknowledged {
        /// The converter.
        addr: SocketAddr,
        /// How long the last attempt waited.
        wait: Duration,
    },
    /// The converter answered with an Error TLV.
    #[error("the converter refused: {}", .0.code)]
    Refused(ErrorTlv),
    /// The converter's reply was not a valid Convert message.
    #[error("bad reply from the converter: {0}")]
    BadReply(ReadError),
    /// No reply in time.
    #[error("no reply from the converter within {0:?}")]
    Timeout(Duration),
}

/// A connection to the converter on which the Convert message has been sent.
#[derive(Debug)]
pub struct Upstream {
    /// The connection; application bytes may follow the message at once.
    pub stream: TcpStream,
    /// MPTCP or plain TCP socket.
    pub proto: Proto,
    /// Why MPTCP was asked but not available locally.
    pub mptcp_unavailable: Option<io::Error>,
    /// The message went out in the SYN (TFO with a cookie).
    pub deferred: bool,
}

/// Unix time in seconds.
#[must_use]
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The message a client sends for `dest`.
pub fn connect_message(dest: SocketAddr, signer: &Signer) -> io::Result<Message> {
    let connect = Connect::new(dest);
    let auth = signer.sign(&connect, unix_now())?;
    Ok(Message {
        connect: Some(connect),
        auth: Some(auth),
        ..Message::default()
    })
}

/// How long the first attempt waits for the converter to acknowledge the Convert message before
/// a second connection is tried: many round trips on any line, and far less than the stall it
/// avoids.
const FIRST_ACK_WAIT: Duration = Duration::from_secs(3);

/// Connects to the converter, sends the Convert message asking for `dest`, and returns once the
/// converter has acknowledged it (its reply is read with [`read_reply`]).
///
/// A connection whose Convert message is not acknowledged within [`FIRST_ACK_WAIT`] is reset
/// and a second one is tried, with the whole `connect_timeout`: Linux 6.18's MPTCP can stall a
/// new connection for good when its first data segment and the handshake's third ACK are both
/// lost (see [`kernel::wait_data_acked`]). Nothing but the Convert message was sent on the
/// stalled one, so the retry is safe: at worst the destination saw a connection opened and
/// closed without data.
pub async fn open(
    dest: SocketAddr,
    signer: &Signer,
    opts: &ClientOptions,
) -> Result<Upstream, ClientError> {
    let first = open_once(dest, signer, opts, FIRST_ACK_WAIT.min(opts.connect_timeout)).await;
    match first {
        Err(ClientError::Unacknowledged { .. }) => {
            tracing::debug!(%dest, "the converter did not acknowledge the Convert message; trying a new connection");
            open_once(dest, signer, opts, opts.connect_timeout).await
        }
        r => r,
    }
}

/// One attempt of [`open`], waiting `ack_wait` for the acknowledgment.
async fn open_once(
    dest: SocketAddr,
    signer: &Signer,
    opts: &ClientOptions,
    ack_wait: Duration,
) -> Result<Upstream, ClientError> {
    let msg = connect_message(dest, signer)?;
    let conn = kernel::connect(
        opts.converter,
        &ConnectOptions {
            mptcp: opts.mptcp,
            fast_open: opts.fast_open,
            bind: None,
            timeout: Some(opts.connect_timeout),
        },
    )
    .await
    .map_err(|err| ClientError::Connect {
        addr: opts.converter,
        err,
    })?;
    let send = exchange::write_message(&conn.stream, &msg);
    tokio::time::timeout(opts.connect_timeout, send)
        .await
        .map_err(|_| ClientError::Connect {
            addr: opts.converter,
            err: io::ErrorKind::TimedOut.into(),
        })?
        .map_err(|err| ClientError::Connect {
            addr: opts.converter,
            err,
        })?;
    // Nothing more is written until the Convert message is data-acked: see
    // `kernel::wait_data_acked` for the kernel behaviour this avoids.
    match kernel::wait_data_acked(&conn.stream, ack_wait).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            // The stalled connection goes with a RST: the converter drops its side at once.
            kernel::reset_on_close(&conn.stream);
            return Err(ClientError::Unacknowledged {
                addr: opts.converter,
                wait: ack_wait,
            });
        }
        Err(err) => {
            return Err(ClientError::Connect {
                addr: opts.converter,
                err,
            });
        }
    }
    Ok(Upstream {
        stream: conn.stream,
        proto: conn.proto,
        mptcp_unavailable: conn.mptcp_unavailable,
        deferred: conn.deferred,
    })
}

/// Reads the converter's reply: the message on success, [`ClientError::Refused`] for an Error TLV.
pub async fn read_reply(stream: &TcpStream, timeout: Duration) -> Result<Message, ClientError> {
    let reply = tokio::time::timeout(timeout, exchange::read_message(stream))
        .await
        .map_err(|_| ClientError::Timeout(timeout))?;
    match reply {
        Ok(Message {
            error: Some(err), ..
        }) => Err(ClientError::Refused(err)),
        Ok(msg) => Ok(msg),
        Err(ReadError::Io(e)) => Err(ClientError::Io(e)),
        Err(e) => Err(ClientError::BadReply(e)),
    }
}
