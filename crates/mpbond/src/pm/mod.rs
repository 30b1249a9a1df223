//! mpbond's own MPTCP path manager for the kernel data plane (`net.mptcp.pm_type=1`): it
//! decides which subflows each MPTCP connection of the host has, from the health of each WAN
//! line, instead of the kernel's in-kernel path manager.
//!
//! - [`health`]: which lines work (links, addresses, active probes), sans-IO.
//! - [`manager`]: what to ask the kernel for each connection, sans-IO.
//! - [`cost`]: what probing costs each line.

pub mod cost;
pub mod driver;
pub mod health;
pub mod manager;
pub mod probe;

pub use driver::{PmConfig, PmHandle, PmStatus, start};
pub use health::ProbeConfig;
pub use manager::{Announce, LineConfig};

/// Which path manager makes the subflows of the kernel's MPTCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PmKind {
    /// mpbond's own ([`crate::pm`]): probes lines, fails over fast, re-creates subflows.
    #[default]
    Mpbond,
    /// The kernel's in-kernel path manager, with endpoints and limits.
    Kernel,
}

impl std::str::FromStr for PmKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mpbond" => Ok(Self::Mpbond),
            "kernel" => Ok(Self::Kernel),
            _ => Err(format!("`{s}`: the path manager is `mpbond` or `kernel`")),
        }
    }
}

impl std::fmt::Display for PmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mpbond => "mpbond",
            Self::Kernel => "kernel",
        })
    }
}

/// The WAN lines set up for bonding, and mpbond's path manager using them. Dropping it stops
/// the path manager, then undoes the kernel configuration (routes, rules, `pm_type` or
/// endpoints).
#[derive(Debug)]
pub struct Bonding {
    // Field order is drop order: the path manager stops before its lines go.
    pm: Option<PmHandle>,
    wan: std::sync::Arc<std::sync::Mutex<crate::gateway::wan::WanSetup>>,
}

impl Bonding {
    /// Configures `lines` for the path manager `kind`; with mpbond's, starts it for the
    /// connections to `peer`, probing `peer` every `probe.interval`.
    ///
    /// # Errors
    /// If the lines cannot be configured or the path manager cannot start.
    pub fn start(
        lines: &[crate::gateway::wan::WanSpec],
        kind: PmKind,
        peer: std::net::IpAddr,
        probe: ProbeConfig,
    ) -> anyhow::Result<Self> {
        use std::sync::{Arc, Mutex};
        let setup = crate::gateway::wan::WanSetup::apply(lines, kind)?;
        let configured = setup.configured.clone();
        let wan = Arc::new(Mutex::new(setup));
        if kind == PmKind::Kernel {
            return Ok(Self { pm: None, wan });
        }
        let cfg = PmConfig {
            lines: configured
                .iter()
                .map(|l| LineConfig {
                    name: l.spec.iface.clone(),
                    ifindex: l.index,
                    backup: l.spec.backup,
                    probe: l.spec.probe,
                    probe_idle: l.spec.probe_idle,
                })
                .collect(),
            peers: vec![peer],
            probe_target: (!probe.interval.is_zero()).then_some(peer),
            probe,
            announce: Announce::default(),
        };
        let shared = Arc::clone(&wan);
        let on_addresses: driver::OnAddresses = Box::new(move |line, addrs| {
            if let Ok(mut w) = shared.lock() {
                w.set_addresses(line, addrs);
            }
        });
        let pm = start(cfg, Some(on_addresses))?;
        Ok(Self { pm: Some(pm), wan })
    }

    /// The path manager, when it is mpbond's.
    #[must_use]
    pub fn pm(&self) -> Option<&PmHandle> {
        self.pm.as_ref()
    }

    /// The lines configured: (interface, addresses at start).
    #[must_use]
    pub fn lines(&self) -> Vec<(String, Vec<std::net::IpAddr>)> {
        self.wan.lock().map(|w| w.lines.clone()).unwrap_or_default()
    }
}

/// The probe settings for an interval: a line silent for three intervals is dead; an idle
/// line is probed at the default idle pace (or at `interval`, if that is slower).
#[must_use]
pub fn probe_every(interval: std::time::Duration) -> ProbeConfig {
    let d = ProbeConfig::default();
    ProbeConfig {
        interval,
        dead_after: interval * 3,
        idle_interval: d.idle_interval.max(interval),
        ..d
    }
}

/// The `pm_kernel_input` fuzz target's body: what the path manager reads from the kernel and
/// the network (an `mptcp_pm` event datagram, one event's attributes, an ICMP echo reply) must
/// not panic, whatever the bytes. The first byte picks the reader and its parameter.
#[doc(hidden)]
pub fn fuzz_kernel_input(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    match first % 3 {
        0 => drop(crate::netlink::pm_event::parse_datagram(
            u16::from(first),
            rest,
        )),
        1 => drop(crate::netlink::pm_event::Event::parse(first, rest)),
        _ => drop(probe::parse_reply(first & 4 != 0, rest, u16::from(first))),
    }
}

/// mpbond's path manager on the server side (converter, `listen`): it announces `addrs` to
/// each connection's peer (`ADD_ADDR`, RFC 8684 §3.4.1) so that a multi-homed server is reached
/// by all its addresses. While it runs the namespace's `pm_type` is 1 (joins are accepted as
/// long as it listens to the kernel's events); dropping it stops the path manager and puts the
/// old `pm_type` back.
#[derive(Debug)]
pub struct Announcer {
    // Field order is drop order: the path manager stops before `pm_type` is put back.
    pm: Option<PmHandle>,
    _pm_type: crate::host::Change,
}

impl Announcer {
    /// Starts announcing `announce` on every connection accepted from now on.
    ///
    /// # Errors
    /// If `pm_type` cannot be set or the path manager cannot start (not root, no MPTCP).
    pub fn start(announce: Announce) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let pm_type = crate::netlink::userspace_pm()
            .context("handing MPTCP path management to mpbond (net.mptcp.pm_type=1)")?;
        let cfg = PmConfig {
            lines: Vec::new(),
            peers: Vec::new(),
            probe_target: None,
            probe: ProbeConfig::default(),
            announce,
        };
        Ok(Self {
            pm: Some(start(cfg, None)?),
            _pm_type: pm_type,
        })
    }

    /// The path manager.
    #[must_use]
    pub fn pm(&self) -> Option<&PmHandle> {
        self.pm.as_ref()
    }
}
