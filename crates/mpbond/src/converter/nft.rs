//! The converter's nftables table (`inet mpbond_conv_PORT`): the kernel refuses, with a TCP
//! reset, a new connection to the converter's port from a source (an IPv4 address, an IPv6
//! /64) that already has [`crate::converter::Config::max_per_source`] connections open, before
//! it reaches the converter or costs it a descriptor.
//!
//! The count is conntrack's (`ct count`): every TCP connection to the port, MPTCP subflows
//! included, for as long as it lasts. It is a ceiling for one host, far above what a gateway
//! uses (a gateway's relayed connections are capped lower, per gateway, by the converter); the
//! converter's own accounting of unauthenticated connections ([`super::admission`]) is what
//! keeps idle connections from locking gateways out. The table is installed at start and
//! deleted on exit; a killed converter's is replaced by the next one on the same port.

use anyhow::{Context as _, Result};

/// The table of the converter on `port`.
#[must_use]
pub fn table_name(port: u16) -> String {
    format!("mpbond_conv_{port}")
}

/// The ruleset: one dynamic set per family, counting connections per source.
#[must_use]
pub fn render(port: u16, per_source: usize) -> String {
    let t = table_name(port);
    format!(
        "table inet {t} {{
  counter over_source_limit {{ }}
  set conn4 {{ type ipv4_addr; size 65535; flags dynamic; }}
  set conn6 {{ type ipv6_addr; size 65535; flags dynamic; }}
  chain input {{
    type filter hook input priority filter; policy accept;
    tcp dport {port} ct state new add @conn4 {{ ip saddr ct count over {per_source} }} counter name over_source_limit reject with tcp reset
    tcp dport {port} ct state new add @conn6 {{ ip6 saddr & ffff:ffff:ffff:ffff:: ct count over {per_source} }} counter name over_source_limit reject with tcp reset
  }}
}}
"
    )
}

/// The installed table; deleted when dropped (and, should the converter be killed, by the next
/// mpbond to start in the namespace: the table is in the host journal).
#[derive(Debug)]
pub struct SourceLimit {
    table: String,
    _installed: crate::host::Change,
}

impl SourceLimit {
    /// Installs the limit of `per_source` connections per source on `port` (replacing a table a
    /// killed converter left there).
    ///
    /// # Errors
    /// If `nft` is missing or refuses (no conntrack in this kernel, not root).
    pub fn install(port: u16, per_source: usize) -> Result<Self> {
        let table = table_name(port);
        let _ = crate::host::nft("", &["delete", "table", "inet", &table]);
        let installed =
            crate::host::Change::apply(crate::host::Setting::NftTable(table.clone()), |_| {
                Some("present".to_owned())
            })?;
        crate::host::nft(&render(port, per_source), &["-f", "-"])
            .with_context(|| format!("nftables table {table} (per-source connection limit)"))?;
        Ok(Self {
            table,
            _installed: installed,
        })
    }

    /// Connections the kernel refused so far.
    #[must_use]
    pub fn refused(&self) -> Option<u64> {
        let out = std::process::Command::new("nft")
            .args([
                "-j",
                "list",
                "counter",
                "inet",
                &self.table,
                "over_source_limit",
            ])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.get("nftables")?
            .as_array()?
            .iter()
            .find_map(|e| e.get("counter")?.get("packets")?.as_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_limits_both_families_on_the_port() {
        let r = render(7000, 4096);
        assert!(r.starts_with("table inet mpbond_conv_7000 {"));
        assert!(
            r.contains("tcp dport 7000 ct state new add @conn4 { ip saddr ct count over 4096 }")
        );
        assert!(r.contains("ip6 saddr & ffff:ffff:ffff:ffff:: ct count over 4096"));
        assert_eq!(r.matches("reject with tcp reset").count(), 2);
    }

    /// The kernel takes the ruleset (nft checks it without applying it).
    #[test]
    fn nft_accepts_the_ruleset() {
        crate::lab::testing::in_private_netns("nft_accepts_the_ruleset", || {
            let limit = SourceLimit::install(7000, 2).expect("nft takes the table");
            assert_eq!(limit.refused(), Some(0));
            drop(limit);
            let out = std::process::Command::new("nft")
                .args(["list", "tables"])
                .output()
                .unwrap();
            assert!(!String::from_utf8_lossy(&out.stdout).contains("mpbond_conv_7000"));
        });
    }
}
