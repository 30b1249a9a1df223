//! The gateway's SOCKS5 listener (RFC 1928, `CONNECT` only; RFC 1929 username/password), for
//! devices that cannot be routed through the gateway. The handshake is `fast-socks5`'s; the
//! reply waits for the converter's answer, so a refused or unreachable destination is reported to
//! the SOCKS client with the matching reply code.

use std::net::SocketAddr;
use std::sync::Arc;

use fast_socks5::server::Socks5ServerProtocol;
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use tokio::net::TcpStream;
use tracing::{debug, info};

use super::Gateway;
use crate::convert::client::{self, ClientError};
use crate::convert::message::ErrorCode;

/// Who may use a SOCKS5 listener.
#[derive(Debug, Clone, Default)]
pub enum SocksAuth {
    /// No authentication (only allowed on a loopback address).
    #[default]
    None,
    /// Username and password, from the config file.
    Users(Arc<super::SocksUsers>),
}

/// The SOCKS reply for a failed converted connection (RFC 1928 §6).
fn reply_for(e: &ClientError) -> ReplyError {
    match e {
        ClientError::Refused(err) => match err.code {
            ErrorCode::NotAuthorized => ReplyError::ConnectionNotAllowed,
            ErrorCode::ConnectionReset => ReplyError::ConnectionRefused,
            ErrorCode::DestinationUnreachable if err.value.first() == Some(&0) => {
                ReplyError::NetworkUnreachable
            }
            ErrorCode::DestinationUnreachable => ReplyError::HostUnreachable,
            _ => ReplyError::GeneralFailure,
        },
        ClientError::Timeout(_) | ClientError::Unacknowledged { .. } => {
            ReplyError::ConnectionTimeout
        }
        _ => ReplyError::GeneralFailure,
    }
}

/// Time a SOCKS5 client has for its greeting and authentication, and again for its request:
/// one that never finishes does not hold a task and a descriptor for ever.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one SOCKS5 client.
pub async fn serve(gw: Arc<Gateway>, stream: TcpStream, peer: SocketAddr, auth: SocksAuth) {
    let greeting = async {
        match &auth {
            SocksAuth::None => Socks5ServerProtocol::accept_no_auth(stream).await,
            SocksAuth::Users(users) => {
                Socks5ServerProtocol::accept_password_auth(stream, |u, p| {
                    // Constant-time enough for a LAN: the comparison is on equal-length digests.
                    users
                        .0
                        .get(&u)
                        .is_some_and(|want| digest(want) == digest(&p))
                })
                .await
                .map(|(p, _)| p)
            }
        }
    };
    let proto = match tokio::time::timeout(HANDSHAKE_TIMEOUT, greeting).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            info!(%peer, "SOCKS5 handshake failed: {e}");
            return;
        }
        Err(_) => {
            debug!(%peer, "SOCKS5: no greeting within {HANDSHAKE_TIMEOUT:?}");
            return;
        }
    };
    let (proto, cmd, target) =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, proto.read_command()).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                debug!(%peer, "SOCKS5 request: {e}");
                return;
            }
            Err(_) => {
                debug!(%peer, "SOCKS5: no request within {HANDSHAKE_TIMEOUT:?}");
                return;
            }
        };
    if cmd != Socks5Command::TCPConnect {
        let _ = proto.reply_error(&ReplyError::CommandNotSupported).await;
        return;
    }
    let dest = match target {
        TargetAddr::Ip(a) => a,
        TargetAddr::Domain(host, port) => {
            let found = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map(|mut a| a.next());
            let Ok(Some(a)) = found else {
                let _ = proto.reply_error(&ReplyError::HostUnreachable).await;
                return;
            };
            a
        }
    };
    let up = match gw.open_upstream(dest, &[]).await {
        Ok(up) => up,
        Err(e) => {
            info!(%peer, %dest, "SOCKS5: {e}");
            let _ = proto.reply_error(&reply_for(&e)).await;
            return;
        }
    };
    if let Err(e) = client::read_reply(&up.stream, gw.client.reply_timeout).await {
        gw.refused(&e);
        info!(%peer, %dest, "SOCKS5: {e}");
        let _ = proto.reply_error(&reply_for(&e)).await;
        return;
    }
    let bound = crate::stack::Conn::local_addr(&up.stream).unwrap_or(dest);
    let Ok(lan) = proto.reply_success(bound).await else {
        return;
    };
    gw.relay(
        &lan,
        &up.stream,
        None::<std::future::Ready<std::io::Result<()>>>,
        dest,
    )
    .await;
}

fn digest(s: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes()).into()
}
