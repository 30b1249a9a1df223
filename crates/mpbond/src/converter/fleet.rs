//! A converter in a fleet, behind an L4 load balancer (`--fleet-address ADDR`).
//!
//! A balancer that hashes on addresses and ports sends an MPTCP join, which comes from another
//! address and port than its connection's first subflow, to any instance: most likely not the
//! one that holds the connection, which then refuses it. RFC 8684 §3.1 gives the way out: the
//! instance sets the C flag in its `MP_CAPABLE` ("do not open subflows to my initial address
//! and port", Linux: `net.mptcp.allow_join_initial_addr_port=0`) and announces an address of
//! its own with `ADD_ADDR` (§3.4.1), where every join then goes, straight to it. mpbond's
//! gateway (and `connect`) joins only announced addresses when the C flag is set
//! ([`crate::pm::manager`]).

use std::net::IpAddr;

use anyhow::{Context as _, Result};
use tracing::{info, warn};

use super::Config;

/// The sysctl behind the C flag, per network namespace.
const ALLOW_JOIN_INITIAL: &str = "net.mptcp.allow_join_initial_addr_port";

/// Makes the converter's connections ask for joins at `addr`: the C flag on (the sysctl set to
/// 0 until the returned change is dropped; recorded in the host journal first, so a crash
/// cannot leave it changed) and `addr` announced on every connection.
///
/// # Errors
/// If the sysctl cannot be set (root in the converter's namespace is needed): without the C flag
/// gateways would send joins to the balanced address, and lose them.
pub fn join_here(config: &mut Config, addr: IpAddr) -> Result<crate::host::Change> {
    let change =
        crate::host::Change::apply(crate::host::Setting::sysctl(ALLOW_JOIN_INITIAL), |_| {
            Some("0".to_owned())
        })
        .with_context(|| {
            format!("--fleet-address {addr}: cannot set {ALLOW_JOIN_INITIAL}=0 (run as root)")
        })?;
    if !config.announce.contains(&addr) {
        config.announce.push(addr);
    }
    let listen = config.listen.ip();
    if !listen.is_unspecified() && listen != addr {
        warn!(
            "--fleet-address {addr}: joins come to {addr} port {}, but the converter listens on {} only; listen on [::]:{} instead",
            config.listen.port(),
            config.listen,
            config.listen.port()
        );
    }
    info!(%addr, "fleet: C flag set, joins asked at this instance's own address");
    Ok(change)
}
