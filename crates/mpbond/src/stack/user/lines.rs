//! mpbond's path manager for the engine: the lines' health ([`crate::pm::health`]: links,
//! addresses and probes to the peer, on the path manager's own thread, exactly as for the
//! kernel stack) turned into what the engine does with its subflows.
//!
//! - A line that stops working (link down, no address, or silent to probes) is set down in the
//!   engine: its subflows are reset, their data goes to the others at once, and the peer is
//!   told on a line that works (`REMOVE_ADDR`, RFC 8684 §3.4.2) so that it stops sending into
//!   the dead one. Back, it is joined again.
//! - While no regular line works the backup lines are made regular, for the peer too
//!   (`MP_PRIO`, §3.3.8), and stand by again when one does.
//! - An address change on a line (a new DHCP lease, a mobile line's new address) is a
//!   handover: the masquerade's mappings of the old address are gone, so the line's subflows
//!   are made again from the new one, and the line's route follows its new next hop.
//!   Make-before-break comes for free when the new address is on another line: that line's
//!   subflows carry on.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::info;

use super::Shared;
use crate::netlink::route::IfAddr;
use crate::pm::driver::LineSink;
use crate::tun::nat::HostSetup;

/// One `--wan` line as the engine sees it.
#[derive(Debug, Clone)]
pub(super) struct Line {
    /// The engine's address routed by it.
    pub engine: IpAddr,
    pub backup: bool,
}

/// What the path manager's thread tells the engine.
pub(super) struct EngineLines {
    shared: Arc<Shared>,
    host: Arc<Mutex<HostSetup>>,
    lines: Vec<Line>,
    /// Per line: the health verdict (usable), its IPv4 addresses, and whether its table has
    /// its route.
    healthy: Vec<bool>,
    addrs: Vec<Vec<IpAddr>>,
    routed: Vec<bool>,
    /// Per line: what the engine was last told.
    up: Vec<bool>,
    /// The backup lines stand in for the regular ones.
    promoted: bool,
}

impl EngineLines {
    pub(super) fn new(shared: Arc<Shared>, host: Arc<Mutex<HostSetup>>, lines: Vec<Line>) -> Self {
        let n = lines.len();
        Self {
            shared,
            host,
            lines,
            healthy: vec![true; n],
            addrs: vec![Vec::new(); n],
            routed: vec![true; n],
            up: vec![true; n],
            promoted: false,
        }
    }

    /// Brings the engine in line with what is known: each line up when it is healthy, has an
    /// address (the engine reaches the peer through the masquerade of that address) and its
    /// route (without, the engine's packets would leave by another line), and
    /// the backups promoted while no regular line is up. `bounce`: a line whose address
    /// changed, whose subflows must be made again even though it stays up.
    fn apply(&mut self, bounce: Option<usize>) {
        let now = Instant::now();
        let mut g = self.shared.lock();
        for i in 0..self.lines.len() {
            let up = self.healthy[i] && !self.addrs[i].is_empty() && self.routed[i];
            let engine = self.lines[i].engine;
            if bounce == Some(i) && up && self.up[i] {
                info!(
                    line = i,
                    "line address changed: its subflows are made again from the new one"
                );
                g.ep.set_path_up(now, engine, false);
                g.ep.set_path_up(now, engine, true);
            }
            if up != self.up[i] {
                self.up[i] = up;
                g.ep.set_path_up(now, engine, up);
            }
            if let Some(u) = g.lines_up.get_mut(i) {
                *u = up;
            }
        }
        let regular_up = self
            .lines
            .iter()
            .zip(&self.up)
            .any(|(l, up)| !l.backup && *up);
        let has_backup = self.lines.iter().any(|l| l.backup);
        if has_backup && self.promoted == regular_up {
            self.promoted = !regular_up;
            info!(
                "{}",
                if self.promoted {
                    "no regular line works: the backup lines carry everything (MP_PRIO)"
                } else {
                    "a regular line works again: the backup lines stand by (MP_PRIO)"
                }
            );
            for l in self.lines.iter().filter(|l| l.backup) {
                g.ep.set_backup(now, l.engine, !self.promoted);
            }
        }
        drop(g);
        self.shared.kick.notify_one();
    }
}

impl LineSink for EngineLines {
    fn set_usable(&mut self, line: usize, usable: bool) {
        if let Some(h) = self.healthy.get_mut(line) {
            *h = usable;
            self.apply(None);
        }
    }

    fn set_addresses(&mut self, line: usize, addrs: &[IfAddr]) {
        let Some(had) = self.addrs.get(line).cloned() else {
            return;
        };
        let now: Vec<IpAddr> = addrs
            .iter()
            .map(|a| a.addr)
            .filter(IpAddr::is_ipv4)
            .collect();
        let routed = self.host.lock().is_ok_and(|mut h| h.route_line(line));
        // Lost an address it had, and has another: the subflows behind the old one are gone.
        let moved = !now.is_empty() && had.iter().any(|a| !now.contains(a));
        if now == had && routed == self.routed[line] {
            return;
        }
        self.addrs[line] = now;
        self.routed[line] = routed;
        self.apply(moved.then_some(line));
    }
}
