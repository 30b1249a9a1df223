//! The client end of the Convert protocol (the gateway, and `mpbond connect --via`): open a
//! connection to the converter, send the Connect (and authentication) TLVs, read the reply.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::auth::{CLOCK_WINDOW_SECS, Name, Refusal, Signer};
use super::exchange::{self, ReadError};
use super::message::{Connect, ErrorCode, ErrorTlv, Message};
use crate::stack::kernel::{self, ConnectOptions, Proto};
use crate::stack::user::UserStack;
use crate::stack::{AnyConn, Conn};

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
    /// Reach the converter with mpbond's engine (`--stack user`) instead of the kernel; held
    /// weakly: the engine goes (and its host configuration with it) when its owner drops it.
    pub user: Option<std::sync::Weak<UserStack>>,
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
            user: None,
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
    /// The MPTCP SYN was lost and the kernel's plain-TCP retry was answered: this connection
    /// would not be bonded (tried again on a new one).
    #[error("the connection to the converter fell back to plain TCP: {0}")]
    FellBack(kernel::Fallback),
    /// The converter did not acknowledge the Convert message (twice, on two connections).
    #[error("the converter {addr} did not acknowledge the Convert message within {wait:?}")]
    Unacknowledged {
        /// The converter.
        addr: SocketAddr,
        /// How long the last attempt waited.
        wait: Duration,
    },
    /// The converter answered with an Error TLV.
    #[error("the converter refused: {}", refusal_text(.0))]
    Refused(ErrorTlv),
    /// The converter's reply was not a valid Convert message.
    #[error("bad reply from the converter: {0}")]
    BadReply(ReadError),
    /// No reply in time.
    #[error("no reply from the converter within {0:?}")]
    Timeout(Duration),
}

/// An Error TLV in words: the code, and for Not Authorized mpbond's reason.
fn refusal_text(e: &ErrorTlv) -> String {
    match (e.code, e.value.first()) {
        (ErrorCode::NotAuthorized, Some(&v)) if Refusal::from_value(v) != Refusal::Unspecified => {
            format!("{} ({})", e.code, Refusal::from_value(v))
        }
        _ => e.code.to_string(),
    }
}

impl ClientError {
    /// The converter (or the host behind the balanced address) refused or reset the connection
    /// before it replied, so before anything was relayed: safe to try on a new connection.
    #[must_use]
    pub fn turned_away(&self) -> bool {
        matches!(
            self,
            Self::Connect { err, .. } if matches!(
                err.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            )
        )
    }

    /// When the converter said it refused this gateway itself (its key, its clock), not one
    /// destination: the reason. A converter that gives no reason (older ones) does not count:
    /// its Not Authorized may be about the destination.
    #[must_use]
    pub fn gateway_refusal(&self) -> Option<Refusal> {
        match self {
            Self::Refused(e) if e.code == ErrorCode::NotAuthorized => {
                let r = Refusal::from_value(e.value.first().copied().unwrap_or(0));
                r.is_about_the_gateway().then_some(r)
            }
            _ => None,
        }
    }
}

/// What to tell the operator when the converter refuses gateway `name` (key file `key_file`)
/// for `reason`: what is wrong and what to check. Never any key material.
#[must_use]
pub fn advice(reason: Refusal, name: &Name, key_file: &std::path::Path) -> String {
    let key = key_file.display();
    match reason {
        Refusal::Credentials => format!(
            "the converter does not accept this gateway's key: either it has no gateway `{name}` in its keys file, or the key there differs from {key}. Copy the line of {key} into the converter's keys file (or `mpbond keygen {name}` anew for both) and reload the converter (SIGHUP)"
        ),
        Refusal::ClockAhead | Refusal::ClockBehind => format!(
            "{reason}: the key is right, but authentication allows ±{CLOCK_WINDOW_SECS} s between the two clocks. Set both clocks right (NTP, e.g. `timedatectl set-ntp true`); this host says it is {}",
            clock_now()
        ),
        Refusal::Replayed => format!(
            "the converter saw this gateway's authentication twice ({reason}): is a second gateway running with the key {key}?"
        ),
        Refusal::Destination => format!("{reason}"),
        Refusal::Unspecified => format!(
            "the converter refused this gateway (Not Authorized): the key in {key}, the name `{name}` or the clocks; the converter's log says which"
        ),
    }
}

/// This host's clock, for a message.
fn clock_now() -> String {
    crate::units::utc_timestamp(unix_now())
}

/// The Connect TLV's destination of a key check: the unspecified address and port 0, which is
/// never a real destination.
pub const KEY_CHECK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Whether a Connect TLV is a key check ([`check_key`]) rather than a destination.
#[must_use]
pub fn is_key_check(connect: &Connect) -> bool {
    connect.remote.ip().is_unspecified() && connect.remote.port() == 0
}

/// Asks the converter whether it accepts this gateway's authentication (key, name, clock)
/// without relaying anything: a Convert message with the Info TLV, whose Connect TLV names no
/// destination ([`KEY_CHECK`]). A converter that accepts it answers what it supports (§6.2.2);
/// one that does not, Not Authorized with the reason ([`Refusal`]).
///
/// # Errors
/// [`ClientError::Refused`] when refused; the others when the converter cannot be reached.
pub async fn check_key(signer: &Signer, opts: &ClientOptions) -> Result<(), ClientError> {
    let connect = Connect::new(KEY_CHECK);
    let auth = signer.sign(&connect, unix_now(), false)?;
    let msg = Message {
        info: true,
        connect: Some(connect),
        auth: Some(auth),
        ..Message::default()
    };
    // The engine puts the message in the SYN when it can; the kernel writes it after.
    let conn = if let Some(stack) = &opts.user {
        let stack = upgrade(stack)?;
        AnyConn::User(reach_user(&stack, opts, &encoded(&msg)?).await?)
    } else {
        let conn = AnyConn::Kernel(reach(opts, false).await?.stream);
        exchange::write_message(&conn, &msg).await?;
        conn
    };
    read_reply(&conn, opts.connect_timeout).await?;
    Ok(())
}

/// A connection to the converter on which the Convert message has been sent.
#[derive(Debug)]
pub struct Upstream {
    /// The connection; application bytes may follow the message at once.
    pub stream: AnyConn,
    /// MPTCP or plain TCP socket.
    pub proto: Proto,
    /// Why MPTCP was asked but not available locally.
    pub mptcp_unavailable: Option<io::Error>,
    /// The message went out in the SYN (TFO with a cookie).
    pub deferred: bool,
    /// Why an MPTCP connection is plain TCP from its handshake on (`None`: it speaks MPTCP, or
    /// MPTCP was not asked, or its SYN carried the message and it is not known yet).
    pub fallback: Option<kernel::Fallback>,
}

/// Unix time in seconds.
#[must_use]
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The message a client sends for `dest`; `early_answer`: the client takes the converter's
/// answer before the handshake ends ([`crate::convert::auth::FLAG_EARLY_ANSWER`]: it is on
/// mpbond's engine).
pub fn connect_message(
    dest: SocketAddr,
    signer: &Signer,
    early_answer: bool,
) -> io::Result<Message> {
    let connect = Connect::new(dest);
    let auth = signer.sign(&connect, unix_now(), early_answer)?;
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
///
/// Likewise a connection that came up as plain TCP because its MPTCP SYN was lost (Linux's
/// last SYN tries carry no `MP_CAPABLE`) is dropped before anything is sent on it and tried
/// once more: under a burst into a congested line one connection in a thousand would otherwise
/// go unbonded for its whole life. The second attempt is kept whatever it speaks.
///
/// And a connection the converter turned away before reading anything (reset or refused: an
/// instance of a fleet that is draining, or dead, and still in the balancer's map until its
/// next health check) is tried again on a new connection, up to four times ([`TURNED_AWAY_PAUSES`]):
/// from a new source port, the balancer most likely picks another instance. Nothing was relayed,
/// so the LAN client sees only a little delay instead of a reset.
pub async fn open(
    dest: SocketAddr,
    signer: &Signer,
    opts: &ClientOptions,
) -> Result<Upstream, ClientError> {
    open_with(dest, signer, opts, &[]).await
}

/// [`open`], with `early`, the client's first bytes, sent right after the Convert message:
/// with mpbond's engine both ride in the SYN once it holds a TCP Fast Open cookie from the
/// converter (RFC 8803 §4: the converter relays them with the destination's SYN-ACK, a round
/// trip sooner); with the kernel they follow the message's acknowledgment.
pub async fn open_with(
    dest: SocketAddr,
    signer: &Signer,
    opts: &ClientOptions,
    early: &[u8],
) -> Result<Upstream, ClientError> {
    let mut first = true;
    let mut pauses = TURNED_AWAY_PAUSES.iter();
    loop {
        let r = if first {
            open_once(
                dest,
                signer,
                opts,
                (FIRST_ACK_WAIT.min(opts.connect_timeout), true),
                early,
            )
            .await
        } else {
            open_once(dest, signer, opts, (opts.connect_timeout, false), early).await
        };
        match r {
            Err(e @ (ClientError::Unacknowledged { .. } | ClientError::FellBack(_))) if first => {
                tracing::debug!(%dest, "{e}; trying a new connection");
                first = false;
            }
            Err(e) if e.turned_away() => {
                let Some(&pause) = pauses.next() else {
                    return Err(e);
                };
                tracing::debug!(%dest, ?pause, "{e}; trying a new connection");
                tokio::time::sleep(pause).await;
            }
            r => return r,
        }
    }
}

/// The pauses before each new connection [`open`] tries when the converter turned one away:
/// the first at once (another instance is likely), the later ones give a balancer time to
/// notice the instance is draining or dead. 1.1 s in all before the LAN client gets its reset
/// when no converter takes it.
pub const TURNED_AWAY_PAUSES: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(100),
    Duration::from_millis(300),
    Duration::from_millis(700),
];

/// One attempt of [`open_with`], waiting `ack_wait` for the acknowledgment; with
/// `refuse_lost_syn`, a connection that fell back because its MPTCP SYN was lost is dropped
/// ([`ClientError::FellBack`]). `early` follows the Convert message.
async fn open_once(
    dest: SocketAddr,
    signer: &Signer,
    opts: &ClientOptions,
    (ack_wait, refuse_lost_syn): (Duration, bool),
    early: &[u8],
) -> Result<Upstream, ClientError> {
    let msg = connect_message(dest, signer, opts.user.is_some())?;
    if let Some(stack) = &opts.user {
        let stack = upgrade(stack)?;
        return open_user(&stack, &msg, opts, early).await;
    }
    let conn = reach(opts, opts.fast_open).await?;
    let asked = opts.mptcp && conn.proto == Proto::Mptcp && !conn.deferred;
    let fallback = asked
        .then(|| kernel::fallback_cause(&conn.stream))
        .flatten();
    if let (true, Some(cause @ kernel::Fallback::SynLost { .. })) = (refuse_lost_syn, fallback) {
        kernel::reset_on_close(&conn.stream);
        return Err(ClientError::FellBack(cause));
    }
    send_message(&conn.stream, &msg, opts).await?;
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
    if !early.is_empty() {
        conn.stream
            .write_all(early)
            .await
            .map_err(|err| ClientError::Connect {
                addr: opts.converter,
                err,
            })?;
    }
    Ok(Upstream {
        stream: AnyConn::Kernel(conn.stream),
        proto: conn.proto,
        mptcp_unavailable: conn.mptcp_unavailable,
        deferred: conn.deferred,
        fallback,
    })
}

/// [`open_once`] with mpbond's engine: the Convert message rides in the SYN once the engine
/// holds a TCP Fast Open cookie from the converter (RFC 8803 §4, RFC 7413), else it follows
/// the handshake (whose SYN asks for a cookie). A SYN seen twice replays nothing: the converter
/// refuses an authentication it saw before. The engine needs no wait for the message's
/// acknowledgment: it maps every byte it sends (RFC 8684 §3.3), so the kernel's stall that
/// [`kernel::wait_data_acked`] avoids cannot happen to it.
async fn open_user(
    stack: &UserStack,
    msg: &Message,
    opts: &ClientOptions,
    early: &[u8],
) -> Result<Upstream, ClientError> {
    let mut first = encoded(msg)?;
    first.extend_from_slice(early);
    let stream = reach_user(stack, opts, &first).await?;
    // A relay writes what it read at once: Nagle would hold the tail of each request for a
    // round trip.
    stream.set_nodelay(true);
    // Right after the handshake: plain TCP now means the converter answered without MPTCP.
    let fallback = (!stream.is_mptcp()).then_some(kernel::Fallback::NotOffered);
    Ok(Upstream {
        stream: AnyConn::User(stream),
        proto: Proto::Mptcp,
        mptcp_unavailable: None,
        deferred: false,
        fallback,
    })
}

/// `msg` on the wire.
fn encoded(msg: &Message) -> Result<Vec<u8>, ClientError> {
    msg.emit()
        .ok_or_else(|| ClientError::Io(io::Error::other("Convert message longer than 1020 bytes")))
}

/// The engine, unless it is gone (the daemon is stopping).
fn upgrade(stack: &std::sync::Weak<UserStack>) -> Result<std::sync::Arc<UserStack>, ClientError> {
    stack.upgrade().ok_or_else(|| {
        ClientError::Io(io::Error::new(
            io::ErrorKind::NotConnected,
            "the user-space stack is stopping",
        ))
    })
}

/// Sends the Convert message, giving up after the connect timeout.
async fn send_message(
    stream: &impl Conn,
    msg: &Message,
    opts: &ClientOptions,
) -> Result<(), ClientError> {
    let err = |err| ClientError::Connect {
        addr: opts.converter,
        err,
    };
    tokio::time::timeout(opts.connect_timeout, exchange::write_message(stream, msg))
        .await
        .map_err(|_| err(io::ErrorKind::TimedOut.into()))?
        .map_err(err)
}

/// Opens a connection to the converter with mpbond's engine, `first` in its SYN when it can
/// (its first subflow on the first regular line that runs: [`UserStack::connect_with`]).
async fn reach_user(
    stack: &UserStack,
    opts: &ClientOptions,
    first: &[u8],
) -> Result<crate::stack::user::UserStream, ClientError> {
    let err = |err| ClientError::Connect {
        addr: opts.converter,
        err,
    };
    tokio::time::timeout(
        opts.connect_timeout,
        stack.connect_with(opts.converter, first),
    )
    .await
    .map_err(|_| err(io::ErrorKind::TimedOut.into()))?
    .map_err(err)
}

/// Opens a connection to the converter (`fast_open`: the first write may ride in the SYN).
async fn reach(opts: &ClientOptions, fast_open: bool) -> Result<kernel::Connection, ClientError> {
    kernel::connect(
        opts.converter,
        &ConnectOptions {
            mptcp: opts.mptcp,
            fast_open,
            bind: None,
            timeout: Some(opts.connect_timeout),
        },
    )
    .await
    .map_err(|err| ClientError::Connect {
        addr: opts.converter,
        err,
    })
}

/// Reads the converter's reply: the message on success, [`ClientError::Refused`] for an Error TLV.
pub async fn read_reply(stream: &impl Conn, timeout: Duration) -> Result<Message, ClientError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_check_names_no_destination() {
        assert!(is_key_check(&Connect::new(KEY_CHECK)));
        assert!(!is_key_check(&Connect::new("0.0.0.0:80".parse().unwrap())));
        assert!(!is_key_check(&Connect::new("192.0.2.1:0".parse().unwrap())));
    }

    #[test]
    fn only_a_converter_that_turned_the_connection_away_is_tried_again() {
        let addr: SocketAddr = "192.0.2.1:7000".parse().unwrap();
        let connect = |kind: io::ErrorKind| ClientError::Connect {
            addr,
            err: kind.into(),
        };
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::BrokenPipe,
        ] {
            assert!(connect(kind).turned_away(), "{kind:?}");
        }
        // Nothing answers, or something answered: not a refusal to try elsewhere.
        assert!(!connect(io::ErrorKind::TimedOut).turned_away());
        assert!(!connect(io::ErrorKind::HostUnreachable).turned_away());
        assert!(!ClientError::Io(io::ErrorKind::ConnectionReset.into()).turned_away());
        assert!(!ClientError::Timeout(Duration::from_secs(1)).turned_away());
    }
}
