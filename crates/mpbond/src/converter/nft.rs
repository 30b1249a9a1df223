//! The converter's nftables table (`inet mpbond_conv_PORT`): the kernel drops the SYNs of new
//! connections to the converter's port from a source (an IPv4 address, an IPv6 /64) that opens
//! more than [`crate::converter::Config::syn_rate_per_source`] a second (a burst of four
//! seconds' worth allowed), before they reach the converter or cost it a descriptor.
//!
//! It is stateless: a token bucket per source in a dynamic set whose entries expire after a
//! minute of silence, no connection tracking (which would track every connection of the host
//! and could itself fill up and drop gateways' packets). A source that floods the set with
//! spoofed addresses only fills it (new sources are then not limited, SYN cookies still work);
//! what keeps idle connections from locking gateways out is the converter's own accounting of
//! unauthenticated connections ([`super::admission`]). MPTCP joins are SYNs too: a gateway's
//! bursts are well inside the default. A dropped SYN is sent again by its sender a second later.
//!
//! The table is installed at start and deleted on exit; it is in the host journal, so a killed
//! converter's is removed by the next mpbond to start ([`crate::host`]).

use anyhow::{Context as _, Result};

/// The table of the converter on `port`.
#[must_use]
pub fn table_name(port: u16) -> String {
    format!("mpbond_conv_{port}")
}

/// The ruleset: a token bucket of `per_second` new connections (burst: four seconds' worth) per
/// source and family.
#[must_use]
pub fn render(port: u16, per_second: u32) -> String {
    let t = table_name(port);
    let burst = per_second.saturating_mul(4);
    let syn = format!("tcp dport {port} tcp flags & (syn | ack) == syn");
    let over = format!("limit rate over {per_second}/second burst {burst} packets");
    let set = "size 65535; flags dynamic,timeout; timeout 60s;";
    format!(
        "table inet {t} {{
  counter over_source_rate {{ }}
  set syn4 {{ type ipv4_addr; {set} }}
  set syn6 {{ type ipv6_addr; {set} }}
  chain input {{
    type filter hook input priority filter; policy accept;
    {syn} update @syn4 {{ ip saddr {over} }} counter name over_source_rate drop
    {syn} update @syn6 {{ ip6 saddr & ffff:ffff:ffff:ffff:: {over} }} counter name over_source_rate drop
  }}
}}
"
    )
}

/// The installed table; deleted when dropped (and, should the converter be killed, by the next
/// mpbond to start in the namespace).
#[derive(Debug)]
pub struct SourceLimit {
    table: String,
    _installed: crate::host::Change,
}

impl SourceLimit {
    /// Installs the limit of `per_second` new connections per source on `port` (replacing a
    /// table a killed converter left there).
    ///
    /// # Errors
    /// If `nft` is missing or refuses (not root).
    pub fn install(port: u16, per_second: u32) -> Result<Self> {
        let table = table_name(port);
        let installed = install_table(&table, &render(port, per_second), "per-source SYN rate")?;
        Ok(Self {
            table,
            _installed: installed,
        })
    }

    /// The table's name.
    #[must_use]
    pub fn table(&self) -> &str {
        &self.table
    }
}

/// The table that refuses new connections to a draining converter on `port`.
#[must_use]
pub fn drain_table_name(port: u16) -> String {
    format!("mpbond_drain_{port}")
}

/// `MP_JOIN`'s subtype (RFC 8684 §3.2; nft 1.0.6 takes only the number).
const MP_JOIN: u8 = 1;

/// The drain ruleset: every SYN to `port` is refused with a reset, except `MP_JOIN`s, which
/// bring subflows to the connections that are draining (RFC 8684 §3.2).
#[must_use]
pub fn render_drain(port: u16) -> String {
    let t = drain_table_name(port);
    let syn = format!("tcp dport {port} tcp flags & (syn | ack) == syn");
    format!(
        "table inet {t} {{
  counter refused {{ }}
  chain input {{
    type filter hook input priority filter - 1; policy accept;
    {syn} tcp option mptcp subtype {MP_JOIN} accept
    {syn} counter name refused reject with tcp reset
  }}
}}
"
    )
}

/// New connections refused by the kernel while the converter drains: a client's `connect`
/// fails at once, before it has sent anything, so it can try again at once, and a balancer's
/// next pick is another instance; the converter never accepts them. Joins still pass. Deleted
/// when dropped (or by the next mpbond to start, should the converter be killed).
#[derive(Debug)]
pub struct Drain {
    _installed: crate::host::Change,
}

impl Drain {
    /// Refuses new connections to `port` from now on.
    ///
    /// # Errors
    /// If `nft` is missing or refuses (not root).
    pub fn install(port: u16) -> Result<Self> {
        let installed = install_table(&drain_table_name(port), &render_drain(port), "drain")?;
        Ok(Self {
            _installed: installed,
        })
    }
}

/// Installs `ruleset`, the whole of table `inet table` (`what` it is for, for errors), in
/// place of one a killed converter left there, recorded in the host journal first: deleted
/// when the returned change is dropped, or by the next mpbond to start.
fn install_table(table: &str, ruleset: &str, what: &str) -> Result<crate::host::Change> {
    let _ = crate::host::nft("", &["delete", "table", "inet", table]);
    let installed =
        crate::host::Change::apply(crate::host::Setting::NftTable(table.to_owned()), |_| {
            Some("present".to_owned())
        })?;
    crate::host::nft(ruleset, &["-f", "-"])
        .with_context(|| format!("nftables table {table} ({what})"))?;
    Ok(installed)
}

/// SYNs the kernel dropped so far in `table` (see [`SourceLimit`]).
#[must_use]
pub fn dropped(table: &str) -> Option<u64> {
    let out = std::process::Command::new("nft")
        .args(["-j", "list", "counter", "inet", table, "over_source_rate"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get("nftables")?
        .as_array()?
        .iter()
        .find_map(|e| e.get("counter")?.get("packets")?.as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_limits_syns_per_source_in_both_families() {
        let r = render(7000, 1000);
        assert!(r.starts_with("table inet mpbond_conv_7000 {"));
        assert!(r.contains(
            "tcp dport 7000 tcp flags & (syn | ack) == syn update @syn4 { ip saddr limit rate over 1000/second burst 4000 packets }"
        ));
        assert!(r.contains("ip6 saddr & ffff:ffff:ffff:ffff:: limit rate over 1000/second"));
        assert!(!r.contains(" ct "), "no connection tracking");
        assert_eq!(r.matches(" drop").count(), 2);
    }

    #[test]
    fn the_drain_ruleset_refuses_new_connections_but_not_joins() {
        let r = render_drain(7000);
        assert!(r.starts_with("table inet mpbond_drain_7000 {"));
        let join = r.find("tcp option mptcp subtype 1 accept").unwrap();
        let reject = r.find("reject with tcp reset").unwrap();
        assert!(join < reject, "joins are let through first");
        assert!(!r.contains(" ct "), "no connection tracking");
    }

    /// With the drain table, a new connection (plain TCP or MPTCP) is refused at its SYN; an
    /// MPTCP connection made before it still gets its join.
    #[test]
    fn draining_refuses_new_connections_and_lets_joins_through() {
        use std::io::{Read as _, Write as _};
        use std::net::SocketAddr;
        crate::lab::testing::in_private_netns(
            "draining_refuses_new_connections_and_lets_joins_through",
            || {
                let run = |args: &[&str]| {
                    let ok = std::process::Command::new("ip")
                        .args(args)
                        .status()
                        .unwrap();
                    assert!(ok.success(), "ip {args:?}");
                };
                run(&["addr", "add", "10.9.0.1/32", "dev", "lo"]);
                run(&["addr", "add", "10.9.0.2/32", "dev", "lo"]);
                run(&[
                    "mptcp",
                    "limits",
                    "set",
                    "subflows",
                    "2",
                    "add_addr_accepted",
                    "2",
                ]);
                let mptcp = Some(socket2::Protocol::MPTCP);
                let server: SocketAddr = "10.9.0.1:7000".parse().unwrap();
                let listener =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, mptcp)
                        .unwrap();
                listener.set_reuse_address(true).unwrap();
                listener.bind(&server.into()).unwrap();
                listener.listen(16).unwrap();
                let client =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, mptcp)
                        .unwrap();
                client
                    .bind(&SocketAddr::from(([10, 9, 0, 1], 0)).into())
                    .unwrap();
                client.connect(&server.into()).unwrap();
                let (accepted, _) = listener.accept().unwrap();
                // Data both ways: the connection is fully established, the path manager acts.
                let mut buf = [0u8; 4];
                (&client).write_all(b"ping").unwrap();
                (&accepted).read_exact(&mut buf).unwrap();
                (&accepted).write_all(b"pong").unwrap();
                (&client).read_exact(&mut buf).unwrap();

                let _drain = Drain::install(7000).expect("nft takes the table");
                for proto in [None, mptcp] {
                    let fresh =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, proto)
                            .unwrap();
                    let e = fresh
                        .connect_timeout(&server.into(), std::time::Duration::from_secs(2))
                        .expect_err("a new connection is refused");
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{proto:?}");
                }
                // The in-kernel path manager joins the existing connection from 10.9.0.2.
                run(&[
                    "mptcp", "endpoint", "add", "10.9.0.2", "dev", "lo", "subflow",
                ]);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                let subflows =
                    || crate::stack::kernel::mptcp_info(&client).map_or(0, |i| i.subflows);
                while subflows() < 1 {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the join passed the drain table"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            },
        );
    }

    /// The kernel takes the ruleset, drops a source's SYNs over its rate (counted) while
    /// another source's pass, and the table goes when dropped.
    #[test]
    fn a_source_over_its_syn_rate_is_dropped_and_counted() {
        crate::lab::testing::in_private_netns(
            "a_source_over_its_syn_rate_is_dropped_and_counted",
            || {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let port = l.local_addr().unwrap().port();
                let limit = SourceLimit::install(port, 2).expect("nft takes the table");
                assert_eq!(dropped(limit.table()), Some(0));
                // Burst of 8 allowed, then 2 a second: 30 SYNs at once from one source.
                let mut socks = Vec::new();
                for _ in 0..30 {
                    let s =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                            .unwrap();
                    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 7], 0)).into())
                        .unwrap();
                    s.set_nonblocking(true).unwrap();
                    let _ = s.connect(&l.local_addr().unwrap().into());
                    socks.push(s);
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
                let n = dropped(limit.table()).unwrap();
                assert!(n >= 15, "{n} SYNs dropped of 30");
                // Another source is not limited by the first one's rate.
                let other =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                        .unwrap();
                other
                    .bind(&std::net::SocketAddr::from(([127, 0, 0, 8], 0)).into())
                    .unwrap();
                other
                    .connect_timeout(
                        &l.local_addr().unwrap().into(),
                        std::time::Duration::from_secs(1),
                    )
                    .expect("another source connects at once");
                let table = limit.table().to_owned();
                drop(limit);
                let out = std::process::Command::new("nft")
                    .args(["list", "tables"])
                    .output()
                    .unwrap();
                assert!(!String::from_utf8_lossy(&out.stdout).contains(&table));
            },
        );
    }
}
