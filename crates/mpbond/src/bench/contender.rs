//! The contenders of `mpbond bench`: what carries the download, where its client and server run,
//! and what has to be started for it (nothing, the kernel's MPTCP endpoints, or a gateway and a
//! converter).
//!
//! ```text
//! tcp, mptcp-kernel:   gw (client) ══ lines ══ vps (server)
//! mpbond*:             lan (client) ── gw (gateway) ══ lines ══ vps (converter) ── web (server)
//! ```
//!
//! The hops that only the relayed contenders take (lan — gw, vps — web) are unshaped veths
//! without delay: every contender crosses the same emulated lines. `mpbond-user` runs gateway
//! and converter on mpbond's own engine; where a contender cannot run (no TUN devices),
//! [`Contender::availability`] says why, and the report lists it as not run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use serde::Serialize;

use crate::gateway::wan::{WanSetup, WanSpec};
use crate::lab::bonding::{self, Daemon};
use crate::lab::failover::Transport;
use crate::lab::plan::VPS_PUBLIC_V4;
use crate::lab::{LabInfo, Role, netns};
use crate::pm::PmKind;

/// The device through which TUN interfaces are made.
const TUN_DEVICE: &str = "/dev/net/tun";

/// Port of the plain TCP pattern server on the web host (reached through the relays).
pub const WEB_PORT: u16 = 8081;
/// Port of the plain TCP pattern server on the vps (every address: one per line).
pub const VPS_TCP_PORT: u16 = 8082;
/// Port of the MPTCP pattern server on the vps.
pub const VPS_MPTCP_PORT: u16 = 8083;
/// The web host's address (see docs/lab.md).
pub const WEB_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

/// One way of carrying a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contender {
    /// One plain kernel TCP flow over the best line only: gw to the vps's address on that line.
    Tcp,
    /// Kernel MPTCP end to end, gw to the vps, with the in-kernel path manager and one
    /// `subflow` endpoint per line (as `mpbond gateway --pm kernel` sets them up).
    MptcpKernel,
    /// `mpbond gateway --pm kernel` and `mpbond converter`: the LAN host's plain TCP relayed
    /// over kernel MPTCP with the in-kernel path manager.
    MpbondKernelPm,
    /// `mpbond gateway` (its own path manager) and `mpbond converter`.
    Mpbond,
    /// `mpbond gateway --stack user` and `mpbond converter --stack user`: mpbond's own engine.
    MpbondUser,
}

/// `mpbond-user`'s daemons where the lines share a bottleneck with other traffic: coupled
/// congestion control (RFC 6356's LIA), so that the two subflows take no more than one TCP
/// flow would.
const COUPLED: &[&str] = &["--stack", "user", "--congestion", "lia"];

impl Contender {
    /// Every contender, in the report's order.
    pub const ALL: [Contender; 5] = [
        Contender::Tcp,
        Contender::MptcpKernel,
        Contender::MpbondKernelPm,
        Contender::Mpbond,
        Contender::MpbondUser,
    ];

    /// Its name on the command line and in the JSON.
    #[must_use]
    pub const fn id(self) -> &'static str {
        match self {
            Contender::Tcp => "tcp",
            Contender::MptcpKernel => "mptcp-kernel",
            Contender::MpbondKernelPm => "mpbond-kernel-pm",
            Contender::Mpbond => "mpbond",
            Contender::MpbondUser => "mpbond-user",
        }
    }

    /// What it is, for people.
    #[must_use]
    pub const fn description(self) -> &'static str {
        match self {
            Contender::Tcp => "one plain kernel TCP flow on the best line (gw to vps)",
            Contender::MptcpKernel => {
                "kernel MPTCP gw to vps, in-kernel path manager, a subflow endpoint per line"
            }
            Contender::MpbondKernelPm => {
                "mpbond gateway --pm kernel + converter (kernel MPTCP, in-kernel path manager), lan to web"
            }
            Contender::Mpbond => {
                "mpbond gateway + converter (kernel MPTCP, mpbond's path manager), lan to web"
            }
            Contender::MpbondUser => {
                "mpbond gateway + converter on mpbond's user-space MPTCP stack (--stack user)"
            }
        }
    }

    /// Whether this machine can run it; the reason when not.
    pub fn availability(self) -> Result<(), String> {
        match self {
            Contender::MpbondUser if !Path::new(TUN_DEVICE).exists() => Err(format!(
                "no {TUN_DEVICE}: the user-space stack needs TUN devices (modprobe tun)"
            )),
            _ => Ok(()),
        }
    }

    /// Parses an id.
    ///
    /// # Errors
    /// For an id that is no contender's.
    pub fn from_id(id: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|c| c.id() == id).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|c| c.id()).collect();
            anyhow!(
                "unknown contender `{id}` (contenders: {})",
                known.join(", ")
            )
        })
    }

    /// Whether its traffic goes through a gateway and a converter.
    #[must_use]
    pub const fn is_relayed(self) -> bool {
        matches!(
            self,
            Contender::MpbondKernelPm | Contender::Mpbond | Contender::MpbondUser
        )
    }

    /// The host its client runs in.
    #[must_use]
    pub const fn client(self) -> Role {
        if self.is_relayed() {
            Role::Lan
        } else {
            Role::Gw
        }
    }

    /// The socket its client opens.
    #[must_use]
    pub const fn transport(self) -> Transport {
        match self {
            Contender::MptcpKernel => Transport::Mptcp,
            _ => Transport::Tcp,
        }
    }

    /// The server its client connects to, in lab `info`, whose best line is `best_line`.
    ///
    /// # Errors
    /// If the lab has no such line.
    pub fn server(self, info: &LabInfo, best_line: &str) -> Result<SocketAddr> {
        Ok(match self {
            Contender::Tcp => {
                let addr = info
                    .vps_line_addr(best_line, false)
                    .with_context(|| format!("no vps address on line {best_line}"))?;
                SocketAddr::new(addr, VPS_TCP_PORT)
            }
            Contender::MptcpKernel => SocketAddr::new(IpAddr::V4(VPS_PUBLIC_V4), VPS_MPTCP_PORT),
            _ => SocketAddr::new(IpAddr::V4(WEB_ADDR), WEB_PORT),
        })
    }

    /// Starts what it needs in lab `info` (`exe` is the `mpbond` binary; `dir` takes the
    /// daemons' keys and logs) and returns it; dropping the result stops it. `coupled`: the
    /// lines share a bottleneck with other traffic (`mpbond-user` then runs LIA).
    ///
    /// # Errors
    /// If it cannot start (the daemon's log is in the message).
    pub fn start(self, info: &LabInfo, exe: &Path, dir: &Path, coupled: bool) -> Result<Running> {
        let lines: Vec<&str> = info.lines.iter().map(|l| l.name.as_str()).collect();
        match self {
            Contender::Tcp => Ok(Running::Nothing),
            Contender::MptcpKernel => Ok(Running::Endpoints(Endpoints::apply(
                info.netns(Role::Gw),
                &lines,
            )?)),
            Contender::MpbondKernelPm | Contender::Mpbond | Contender::MpbondUser => {
                let (extra, converter_extra): (&[&str], &[&str]) = match self {
                    Contender::MpbondKernelPm => (&["--pm", "kernel"], &[]),
                    Contender::MpbondUser if coupled => (COUPLED, COUPLED),
                    Contender::MpbondUser => (&["--stack", "user"], &["--stack", "user"]),
                    _ => (&[], &[]),
                };
                let (gateway, converter) =
                    bonding::start_with(info, exe, dir, &lines, extra, converter_extra)?;
                Ok(Running::Bonding { gateway, converter })
            }
        }
    }
}

/// What a contender runs while it is measured.
#[derive(Debug)]
pub enum Running {
    /// Nothing (plain TCP).
    Nothing,
    /// The kernel's MPTCP endpoints and per-line routing on the gw host.
    Endpoints(Endpoints),
    /// A gateway and a converter.
    Bonding {
        /// The gateway, on the gw host.
        gateway: Daemon,
        /// The converter, on the vps.
        converter: Daemon,
    },
}

impl Running {
    /// Process ids whose CPU time is the contender's own (the daemons).
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Running::Bonding {
                gateway, converter, ..
            } => vec![gateway.pid(), converter.pid()],
            _ => Vec::new(),
        }
    }

    /// The daemons' warnings and errors, for a failure message.
    #[must_use]
    pub fn problems(&self) -> String {
        match self {
            Running::Bonding {
                gateway, converter, ..
            } => format!(
                "gateway: {}\nconverter: {}",
                gateway.problems(),
                converter.problems()
            ),
            _ => String::new(),
        }
    }
}

/// The gw host set up for end-to-end kernel MPTCP the way `mpbond gateway --pm kernel` does it
/// (a routing table, a rule and a `subflow` endpoint per line, raised limits), held by a thread
/// in the host's namespace until dropped, which undoes it.
#[derive(Debug)]
pub struct Endpoints {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Endpoints {
    /// Sets up `lines` in namespace `ns`.
    ///
    /// # Errors
    /// If the namespace cannot be entered or the kernel refuses the set-up.
    pub fn apply(ns: &str, lines: &[&str]) -> Result<Self> {
        let specs: Vec<WanSpec> = lines
            .iter()
            .map(|l| l.parse().map_err(|e: String| anyhow!(e)))
            .collect::<Result<_>>()?;
        let ns = ns.to_owned();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // The set-up logs each line at `info`, which would break the progress bar; its
            // errors come back as its result.
            let quiet = tracing::subscriber::NoSubscriber::default();
            let setup = netns::enter(&ns)
                .map_err(anyhow::Error::from)
                .and_then(|()| {
                    tracing::subscriber::with_default(quiet, || {
                        WanSetup::apply(&specs, PmKind::Kernel)
                    })
                });
            match setup {
                Ok(setup) => {
                    let _ = ready_tx.send(Ok(()));
                    // Held until the contender is done (or its owner is gone).
                    let _ = stop_rx.recv();
                    tracing::subscriber::with_default(quiet, || drop(setup));
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| anyhow!("setting up the MPTCP endpoints did not finish"))?
            .context("setting up the MPTCP endpoints on the gw host")?;
        Ok(Self {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_unknown_ones_list_the_known() {
        for c in Contender::ALL {
            assert_eq!(Contender::from_id(c.id()).unwrap(), c);
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::Value::String(c.id().into())
            );
        }
        let e = Contender::from_id("quic").unwrap_err().to_string();
        assert!(e.contains("mptcp-kernel"), "{e}");
    }

    #[test]
    fn relayed_contenders_run_from_the_lan_to_the_web_and_the_others_from_gw_to_vps() {
        let spec = crate::lab::spec::LabSpec {
            name: "x".into(),
            seed: 1,
            lines: crate::lab::spec::LabSpec::default_lines(),
            owner: None,
        };
        let info = crate::lab::plan::plan(&spec, Path::new("/run/x"));
        assert_eq!(
            Contender::Tcp.server(&info, "lte").unwrap(),
            "10.2.0.1:8082".parse().unwrap()
        );
        assert_eq!(Contender::Tcp.client(), Role::Gw);
        assert_eq!(Contender::MptcpKernel.transport(), Transport::Mptcp);
        assert_eq!(
            Contender::MptcpKernel.server(&info, "dsl").unwrap(),
            "198.51.100.1:8083".parse().unwrap()
        );
        for c in [Contender::Mpbond, Contender::MpbondKernelPm] {
            assert_eq!(c.client(), Role::Lan);
            assert_eq!(c.transport(), Transport::Tcp);
            assert_eq!(
                c.server(&info, "dsl").unwrap(),
                "203.0.113.2:8081".parse().unwrap()
            );
        }
    }

    #[test]
    fn the_user_space_stack_runs_where_there_are_tun_devices() {
        assert!(Contender::Mpbond.availability().is_ok());
        assert_eq!(
            Contender::MpbondUser.availability().is_ok(),
            Path::new(TUN_DEVICE).exists()
        );
    }
}
