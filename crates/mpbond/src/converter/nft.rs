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
        let _ = crate::host::nft("", &["delete", "table", "inet", &table]);
        let installed =
            crate::host::Change::apply(crate::host::Setting::NftTable(table.clone()), |_| {
                Some("present".to_owned())
            })?;
        crate::host::nft(&render(port, per_second), &["-f", "-"])
            .with_context(|| format!("nftables table {table} (per-source SYN rate)"))?;
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
