//! Config files of `mpbond converter` and `mpbond gateway` (TOML): everything their flags set.
//! A flag given on the command line wins over the file; what neither sets takes its default.
//! Unknown keys are errors, so a typo never silently falls back to a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use ipnet::IpNet;
use serde::Deserialize;

use crate::stack::Stack;
use crate::units::parse_duration;

/// Reads and parses a TOML file.
pub fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        // toml's message spans lines (it quotes the file); keep the first, which says what.
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or("").trim().to_owned();
        let detail = msg.lines().last().unwrap_or("").trim().to_owned();
        anyhow!("config file {}: {first} {detail}", path.display())
    })
}

/// A duration from a flag or the file (`"10s"`, `"2h"`).
pub fn duration(what: &str, s: &str) -> Result<Duration> {
    parse_duration(s).with_context(|| what.to_owned())
}

/// CIDR ranges (`10.0.0.0/8`, `2001:db8::/32`; a bare address is a /32 or /128).
pub fn cidrs(what: &str, list: &[String]) -> Result<Vec<IpNet>> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| anyhow!("{what}: `{s}` is not a CIDR range like 10.0.0.0/8"))
        })
        .collect()
}

/// `mpbond converter`'s config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConverterFile {
    /// `listen = "[::]:7000"`.
    pub listen: Option<String>,
    /// `keys = "/etc/mpbond/converter.keys"`.
    pub keys: Option<PathBuf>,
    /// Destinations allowed although refused by default.
    pub allow_dest: Option<Vec<String>>,
    /// Destinations refused on top of the defaults.
    pub deny_dest: Option<Vec<String>>,
    /// Relayed connections at most.
    pub max_connections: Option<usize>,
    /// Relayed connections at most per gateway.
    pub max_connections_per_gateway: Option<usize>,
    /// Connections at most that have not authenticated yet.
    pub max_handshakes: Option<usize>,
    /// ... per source that no gateway authenticated from lately.
    pub max_handshakes_per_source: Option<usize>,
    /// New connections a second at most per source, enforced by the kernel (0: no limit).
    pub syn_rate_per_source: Option<u32>,
    /// `"10s"`.
    pub handshake_timeout: Option<String>,
    /// `"10s"`.
    pub connect_timeout: Option<String>,
    /// `"2h"`.
    pub idle_timeout: Option<String>,
    /// `"30s"`: how long open connections are relayed after SIGTERM.
    pub drain_timeout: Option<String>,
    /// TCP Fast Open for the Convert message.
    pub fast_open: Option<bool>,
    /// `announce = ["203.0.113.7"]`: extra addresses announced to gateways.
    pub announce: Option<Vec<std::net::IpAddr>>,
    /// `fleet_address = "192.0.2.7"`: this instance's own address behind a load balancer.
    pub fleet_address: Option<std::net::IpAddr>,
    /// `"127.0.0.1:9477"`: Prometheus metrics.
    pub metrics: Option<String>,
    /// `"kernel"` or `"user"`.
    pub stack: Option<Stack>,
    /// With `stack = "user"`: `"min-rtt"`, `"blest"`, `"ecf"`, `"redundant"`, `"round-robin"`.
    pub scheduler: Option<String>,
    /// With `stack = "user"`: `"auto"` (the default), `"cubic"`, `"reno"`, `"bbr"`, `"lia"`,
    /// `"olia"`, `"balia"`.
    pub congestion: Option<String>,
}

/// `mpbond gateway`'s config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// `converter = "vps.example.net:7000"`.
    pub converter: Option<String>,
    /// `key = "/etc/mpbond/gateway.key"`.
    pub key: Option<PathBuf>,
    /// `wan = ["eth1", "wwan0:backup"]`.
    pub wan: Option<Vec<String>>,
    /// `lan = ["br-lan"]`.
    pub lan: Option<Vec<String>>,
    /// Transparent listener port.
    pub transparent: Option<u16>,
    /// `socks = "127.0.0.1:1080"`.
    pub socks: Option<String>,
    /// SOCKS5 users: `[socks_users]` then `alice = "password"`.
    pub socks_users: Option<std::collections::HashMap<String, String>>,
    /// Reject UDP/443 from the LAN.
    pub block_quic: Option<bool>,
    /// More destinations never captured (the private ranges always are).
    pub bypass: Option<Vec<String>>,
    /// TCP Fast Open for the Convert message.
    pub fast_open: Option<bool>,
    /// `"2h"`.
    pub idle_timeout: Option<String>,
    /// `"kernel"` or `"user"`.
    pub stack: Option<Stack>,
    /// With `stack = "user"`: `"min-rtt"`, `"blest"`, `"ecf"`, `"redundant"`, `"round-robin"`.
    pub scheduler: Option<String>,
    /// With `stack = "user"`: `"auto"` (the default), `"cubic"`, `"reno"`, `"bbr"`, `"lia"`,
    /// `"olia"`, `"balia"`.
    pub congestion: Option<String>,
    /// Path manager: `"mpbond"` or `"kernel"`.
    pub pm: Option<crate::pm::PmKind>,
    /// `"100ms"`.
    pub probe_interval: Option<String>,
    /// `"10s"`: probe interval of idle lines.
    pub probe_idle_interval: Option<String>,
    /// `"127.0.0.1:9477"`: Prometheus metrics.
    pub metrics: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_are_errors_that_say_where() {
        let dir = std::env::temp_dir().join(format!("mpbond-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "listen = \"[::]:7000\"\nmax_conections = 5\n").unwrap();
        let e = read::<ConverterFile>(&f).unwrap_err().to_string();
        assert!(e.contains("max_conections") && e.contains("c.toml"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        std::fs::write(
            &f,
            "listen = \"[::]:7000\"\nkeys = \"/k\"\nfast_open = false\n",
        )
        .unwrap();
        let c: ConverterFile = read(&f).unwrap();
        assert_eq!(c.fast_open, Some(false));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(cidrs("--allow-dest", &["10.0.0.0/8".into(), "::1".into()]).is_ok());
        assert!(cidrs("--allow-dest", &["10.0.0.0/33".into()]).is_err());
        assert!(duration("idle", "2h").is_ok());
    }

    #[test]
    fn the_example_config_files_in_contrib_parse() {
        let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib");
        let g = read::<GatewayFile>(&contrib.join("gateway.toml")).unwrap();
        assert_eq!(
            g.wan.as_deref(),
            Some(&["eth1".to_owned(), "wwan0".to_owned()][..])
        );
        assert_eq!(g.block_quic, Some(true));
        let c = read::<ConverterFile>(&contrib.join("converter.toml")).unwrap();
        assert_eq!(c.listen.as_deref(), Some("[::]:7000"));
    }
}
