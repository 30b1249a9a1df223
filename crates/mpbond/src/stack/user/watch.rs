//! Follows the links under the engine and tells it what changed: the interface of a `--wan`
//! line going down or up (its subflows reset, or joined again), the regular lines all down
//! (the backup lines made regular for the peer too, `MP_PRIO`, RFC 8684 §3.3.8, so that it
//! sends by them at once) and back, and the interface of an announced address going down or
//! up (`REMOVE_ADDR` §3.4.2, or `ADD_ADDR` again).
//!
//! Link state only (administratively up, with carrier). The `--wan` lines are normally judged
//! by mpbond's path manager ([`super::lines`]: probes and addresses too); this follows them
//! only when it cannot start. Announced addresses (a server's) are always followed here.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Shared;
use crate::netlink::route::RouteSocket;

/// How often the links are looked at.
const POLL: Duration = Duration::from_millis(100);

/// One `--wan` line.
#[derive(Debug, Clone)]
pub(super) struct Line {
    pub iface: String,
    /// The engine's address on it.
    pub engine: IpAddr,
    pub backup: bool,
}

/// Whether the interfaces of `lines` run, and whether the interfaces holding `addrs` run (an
/// address no interface holds counts as down).
fn look(
    sock: &mut RouteSocket,
    lines: &[Line],
    addrs: &[IpAddr],
) -> Option<(Vec<bool>, Vec<bool>)> {
    let states = sock.links().ok()?;
    let running = |index: Option<u32>| {
        index.is_some_and(|i| states.iter().any(|l| l.index == i && l.running))
    };
    let lines_up = lines
        .iter()
        .map(|l| running(crate::sys::if_index(&l.iface).ok()))
        .collect();
    let addrs_up = if addrs.is_empty() {
        Vec::new()
    } else {
        let held = sock.addresses().ok()?;
        addrs
            .iter()
            .map(|a| running(held.iter().find(|h| h.addr == *a).map(|h| h.index)))
            .collect()
    };
    Some((lines_up, addrs_up))
}

/// Runs until aborted.
pub(super) async fn run(shared: Arc<Shared>, lines: Vec<Line>, addrs: Vec<IpAddr>) {
    let mut sock = match RouteSocket::open() {
        Ok(s) => s,
        Err(e) => {
            warn!(
                "cannot follow the lines' links ({e}): a line going down is noticed by timeouts only"
            );
            return;
        }
    };
    // The engine starts with every line and address taken as up.
    let mut lines_were = vec![true; lines.len()];
    let mut addrs_were = vec![true; addrs.len()];
    let mut promoted = false;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some((lines_up, addrs_up)) = look(&mut sock, &lines, &addrs) else {
            continue;
        };
        let mut g = shared.lock();
        let now = Instant::now();
        let mut changed = false;
        for (i, line) in lines.iter().enumerate() {
            if lines_up[i] != lines_were[i] {
                lines_were[i] = lines_up[i];
                changed = true;
                info!(line = %line.iface, up = lines_up[i], "line {}", if lines_up[i] { "up: joining again" } else { "down: its subflows are reset" });
                g.ep.set_path_up(now, line.engine, lines_up[i]);
                if let Some(u) = g.lines_up.get_mut(i) {
                    *u = lines_up[i];
                }
            }
        }
        // Backups stand in while no regular line works, and say so to the peer.
        let regular_up = lines.iter().zip(&lines_up).any(|(l, up)| !l.backup && *up);
        let has_backup = lines.iter().any(|l| l.backup);
        if has_backup && promoted == regular_up {
            promoted = !regular_up;
            changed = true;
            info!(
                "{}",
                if promoted {
                    "no regular line works: the backup lines carry everything (MP_PRIO)"
                } else {
                    "a regular line works again: the backup lines stand by (MP_PRIO)"
                }
            );
            for l in lines.iter().filter(|l| l.backup) {
                g.ep.set_backup(now, l.engine, !promoted);
            }
        }
        for (i, a) in addrs.iter().enumerate() {
            if addrs_up[i] != addrs_were[i] {
                addrs_were[i] = addrs_up[i];
                changed = true;
                if addrs_up[i] {
                    info!(%a, "the interface of an announced address is up: announced again");
                    g.ep.announce(now, SocketAddr::new(*a, 0));
                } else {
                    info!(%a, "the interface of an announced address is down: withdrawn (REMOVE_ADDR)");
                    g.ep.withdraw(now, *a);
                }
            }
        }
        drop(g);
        if changed {
            shared.kick.notify_one();
        }
    }
}
