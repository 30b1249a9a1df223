//! The TUN device and what the host must do for mpbond's own TCP/MPTCP engine (`--stack
//! user`) to reach the network through it.
//!
//! The engine owns addresses of its own, inside the TUN's subnet (`198.18.N.0/24`, instance
//! `N`): the host's kernel routes its packets like a router would, and its TCP never sees
//! them. IPv4 only so far: IPv6 forwarding would make Linux drop the routes it learned from
//! router advertisements. What the host is given:
//!
//! - the TUN `mpbuN` with the host's side of the subnet (`.1`); the engine sends from `.2`
//!   (and, per `--wan` line `i`, from `.2 + i`);
//! - an nftables table `inet mpbuN` that masquerades the engine's packets on whichever
//!   interface they leave by, and for `listen` maps the port on the host's addresses to the
//!   engine (DNAT); [`nat`];
//! - per `--wan` line, a routing table and a rule `from <engine address> lookup <table>`, so
//!   each line's packets leave by that line;
//! - forwarding on (the engine's packets are forwarded from the TUN and back); when the host did
//!   not forward before, the table drops every forwarded packet that is not the engine's, so
//!   the host does not become a router for anything else.
//!
//! All of it is undone on drop; a state file in `/run/mpbond` lets the next run undo what a
//! killed one left.

pub mod nat;

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result, bail};

/// The first three bytes of an instance's IPv4 subnet (`198.18.N.0/24`, RFC 2544's
/// benchmarking range, which no Internet line uses).
const V4_PREFIX: [u8; 2] = [198, 18];
/// Interface name prefix.
pub const NAME_PREFIX: &str = "mpbu";
/// Most engine addresses per family (one per `--wan` line).
pub const MAX_LINES: u8 = 16;

/// The addresses of instance `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The instance number (0–255).
    pub n: u8,
}

impl Subnet {
    /// The TUN's name.
    #[must_use]
    pub fn ifname(self) -> String {
        format!("{NAME_PREFIX}{}", self.n)
    }

    /// The host's IPv4 address on the TUN.
    #[must_use]
    pub fn host_v4(self) -> Ipv4Addr {
        Ipv4Addr::new(V4_PREFIX[0], V4_PREFIX[1], self.n, 1)
    }

    /// The engine's address for line `i` (0 without `--wan`).
    #[must_use]
    pub fn engine_v4(self, i: u8) -> Ipv4Addr {
        Ipv4Addr::new(V4_PREFIX[0], V4_PREFIX[1], self.n, 2 + i)
    }

    /// The IPv4 subnet as nftables writes it.
    #[must_use]
    pub fn v4_cidr(self) -> String {
        format!(
            "{}/24",
            Ipv4Addr::new(V4_PREFIX[0], V4_PREFIX[1], self.n, 0)
        )
    }
}

/// Picks the first instance whose TUN does not exist.
pub fn free_subnet() -> Result<Subnet> {
    for n in 0..=u8::MAX {
        let s = Subnet { n };
        if !std::path::Path::new("/sys/class/net")
            .join(s.ifname())
            .exists()
        {
            return Ok(s);
        }
    }
    bail!("no free {NAME_PREFIX}N interface name (256 instances running?)")
}

/// Creates the TUN of `subnet` (raw IP packets), with the host's address, up. With the
/// virtio-net header and TCP offloads (`TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`) when the kernel
/// takes them and `MPBOND_TUN_OFFLOAD` is not `0`; without, one packet per read and write.
pub fn create(subnet: Subnet, mtu: u16) -> Result<tun_rs::AsyncDevice> {
    let name = subnet.ifname();
    let build = |offload: bool| {
        tun_rs::DeviceBuilder::new()
            .name(&name)
            .mtu(mtu)
            .ipv4(subnet.host_v4(), 24, None)
            .offload(offload)
            .build_async()
    };
    let wanted = std::env::var("MPBOND_TUN_OFFLOAD").map_or(true, |v| v != "0");
    let dev = if wanted {
        build(true).or_else(|e| {
            tracing::debug!("TUN {name} without offloads ({e})");
            build(false)
        })
    } else {
        build(false)
    };
    let dev =
        dev.with_context(|| format!("creating TUN device {name} (needs root and /dev/net/tun)"))?;
    tracing::debug!(tun = %name, offloads = dev.tcp_gso(), "TUN device created");
    Ok(dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_has_its_own_subnet_and_name() {
        let s = Subnet { n: 3 };
        assert_eq!(s.ifname(), "mpbu3");
        assert_eq!(s.host_v4(), Ipv4Addr::new(198, 18, 3, 1));
        assert_eq!(s.engine_v4(0), Ipv4Addr::new(198, 18, 3, 2));
        assert_eq!(s.engine_v4(2), Ipv4Addr::new(198, 18, 3, 4));
        assert_eq!(s.v4_cidr(), "198.18.3.0/24");
        assert!(Subnet { n: 255 }.ifname().len() <= 15);
    }
}
