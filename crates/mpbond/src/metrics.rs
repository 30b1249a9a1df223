//! Prometheus metrics, opt-in with `--metrics ADDR:PORT`: `GET /metrics` answers the `OpenMetrics`
//! text of what the daemon counts (connections, refusals, authentication failures, bytes) and,
//! with mpbond's path manager, per line: state, probe RTT, bytes, failures, subflows made; and
//! the path manager's totals (subflows established and closed, withdrawals).
//!
//! `GET /healthz` and `GET /readyz` answer health checks (a load balancer's, systemd's, an
//! orchestrator's): see [`serve`].
//!
//! Each scrape builds the text afresh from the daemon's counters (a [`Sample`]): there is no
//! second copy of any number to keep in step.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context as _, Result};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{debug, info};

use crate::pm::PmStatus;
use crate::pm::health::Verdict;

/// What one scrape shows.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// The path manager's view, if the daemon runs one.
    pub pm: Option<PmStatus>,
    /// Daemon counters: name (without `_total`), help, value.
    pub counters: Vec<(&'static str, &'static str, u64)>,
    /// Daemon gauges: name, help, value.
    pub gauges: Vec<(&'static str, &'static str, i64)>,
}

/// Where a scrape's [`Sample`] comes from.
pub type Source = Arc<dyn Fn() -> Sample + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LineLabels {
    line: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirLabels {
    line: String,
    direction: &'static str,
}

fn line_metrics(reg: &mut Registry, pm: &PmStatus) {
    let up = Family::<LineLabels, Gauge>::default();
    let rtt = Family::<LineLabels, Gauge<f64, AtomicU64>>::default();
    let failures = Family::<LineLabels, Counter>::default();
    let created = Family::<LineLabels, Counter>::default();
    let bytes = Family::<DirLabels, Counter>::default();
    let probe_bytes = Family::<DirLabels, Counter>::default();
    let probe_day = Family::<LineLabels, Gauge>::default();
    for l in &pm.lines {
        let label = LineLabels {
            line: l.name.clone(),
        };
        up.get_or_create(&label).set(match l.state {
            Verdict::Up => 1,
            Verdict::Unknown => 2,
            Verdict::Down => 0,
        });
        if let Some(r) = l.probe_rtt_ms {
            rtt.get_or_create(&label).set(r / 1e3);
        }
        failures.get_or_create(&label).inc_by(l.failures);
        created.get_or_create(&label).inc_by(l.subflows_created);
        for (direction, n) in [("received", l.bytes.0), ("sent", l.bytes.1)] {
            bytes
                .get_or_create(&DirLabels {
                    line: l.name.clone(),
                    direction,
                })
                .inc_by(n);
        }
        for (direction, n) in [("received", l.probe_bytes.1), ("sent", l.probe_bytes.0)] {
            probe_bytes
                .get_or_create(&DirLabels {
                    line: l.name.clone(),
                    direction,
                })
                .inc_by(n);
        }
        if let Some(d) = l.probe_bytes_per_day {
            probe_day
                .get_or_create(&label)
                .set(i64::try_from(d).unwrap_or(i64::MAX));
        }
    }
    reg.register(
        "line_state",
        "Line health: 1 up, 0 down, 2 unknown (the peer answers no probes)",
        up,
    );
    reg.register(
        "line_probe_rtt_seconds",
        "Smoothed probe round-trip time",
        rtt,
    );
    reg.register("line_failures", "Times the line stopped working", failures);
    reg.register(
        "line_subflows_created",
        "Subflows asked for on the line",
        created,
    );
    reg.register("line_bytes", "Bytes through the line's interface", bytes);
    reg.register(
        "line_probe_bytes",
        "IP bytes of the line's probes (sent) and their answers (received)",
        probe_bytes,
    );
    reg.register(
        "line_probe_bytes_per_day",
        "Probe bytes of both directions at the last minute's rate, over a day",
        probe_day,
    );
    let c = &pm.counters;
    for (name, help, v) in [
        (
            "subflows_established",
            "Subflows established (joins)",
            c.subflows_established,
        ),
        ("subflows_closed", "Subflows closed", c.subflows_closed),
        (
            "failovers",
            "Address ids withdrawn from connections because their line stopped working",
            c.withdrawals,
        ),
        (
            "reannouncements",
            "ADD_ADDR made again on connections that no join followed (converter with --fleet-address)",
            c.reannouncements,
        ),
    ] {
        let m = Counter::<u64>::default();
        m.inc_by(v);
        reg.register(name, help, m);
    }
    let conns = Gauge::<i64>::default();
    conns.set(i64::try_from(pm.connections.len()).unwrap_or(i64::MAX));
    reg.register(
        "mptcp_connections",
        "MPTCP connections the path manager knows",
        conns,
    );
}

/// Daemon counters read afresh at each scrape: name (without `_total`), help, value.
pub type CounterView = Arc<dyn Fn() -> Vec<(&'static str, &'static str, u64)> + Send + Sync>;

/// What the counters of mpbond's engine (`--stack user`) show of its TCP Fast Open (RFC 7413)
/// as a client: a gateway's Convert message in the SYN (0-RTT).
#[must_use]
pub fn engine_client_counters(
    st: &mptcp_proto::endpoint::EndpointStats,
) -> Vec<(&'static str, &'static str, u64)> {
    vec![
        (
            "engine_fast_open_taken",
            "SYNs with data the engine sent whose data the server took (TCP Fast Open: no round trip before the first message)",
            st.fast_open_data_taken,
        ),
        (
            "engine_fast_open_refused",
            "SYNs with data the engine sent whose data the server did not take (sent again after the handshake)",
            st.fast_open_data_refused,
        ),
        (
            "engine_fast_open_syns_lost",
            "SYNs with data the engine sent that got no answer in time (Fast Open from that address to that server then held back for a minute or more, unless an answer comes after all)",
            st.fast_open_syns_lost,
        ),
    ]
}

/// What the counters of mpbond's engine (`--stack user`) show of its TCP Fast Open (RFC 7413)
/// as a server: a converter's.
#[must_use]
pub fn engine_server_counters(
    st: &mptcp_proto::endpoint::EndpointStats,
) -> Vec<(&'static str, &'static str, u64)> {
    vec![
        (
            "engine_fast_open_accepted",
            "SYNs with data the engine's listener took (a valid cookie)",
            st.fast_open_accepted,
        ),
        (
            "engine_fast_open_cookies_sent",
            "TCP Fast Open cookies the engine's listener gave",
            st.fast_open_cookies_sent,
        ),
    ]
}

/// What the gauges of mpbond's engine (`--stack user`) show of its connections: how many, and
/// their subflows (all, and established).
#[must_use]
pub fn engine_gauges(
    conns: &[crate::status::ConnectionStatus],
) -> Vec<(&'static str, &'static str, i64)> {
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let subflows: usize = conns.iter().map(|c| c.subflows.len()).sum();
    let established: usize = conns
        .iter()
        .map(|c| c.subflows.iter().filter(|s| s.fully_established).count())
        .sum();
    vec![
        (
            "engine_connections",
            "Connections of mpbond's engine (--stack user)",
            count(conns.len()),
        ),
        (
            "engine_subflows",
            "Their subflows, handshakes included",
            count(subflows),
        ),
        (
            "engine_subflows_established",
            "Their established subflows",
            count(established),
        ),
    ]
}

/// The `OpenMetrics` text of `s`.
#[must_use]
pub fn render(s: &Sample) -> String {
    let mut reg = Registry::with_prefix("mpbond");
    for &(name, help, v) in &s.counters {
        let m = Counter::<u64>::default();
        m.inc_by(v);
        reg.register(name, help, m);
    }
    for &(name, help, v) in &s.gauges {
        let m = Gauge::<i64>::default();
        m.set(v);
        reg.register(name, help, m);
    }
    if let Some(pm) = &s.pm {
        line_metrics(&mut reg, pm);
    }
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
        debug!("metrics: {e}");
    }
    out
}

/// Whether the daemon takes new work: `false` while a converter drains (SIGTERM).
pub type Ready = Arc<dyn Fn() -> bool + Send + Sync>;

/// Serves, on `addr` from a thread of its own, `GET /metrics`, and for a load balancer's or
/// an orchestrator's health checks `GET /healthz` (200 while the process serves at all) and
/// `GET /readyz` (200 while it takes new connections, 503 while it drains).
///
/// # Errors
/// If the address cannot be bound.
pub fn serve(addr: SocketAddr, source: Source, ready: Ready) -> Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("--metrics {addr}"))?;
    info!(%addr, "metrics on http://{addr}/metrics, health checks on /healthz and /readyz");
    std::thread::Builder::new()
        .name("mpbond-metrics".into())
        .spawn(move || {
            for c in listener.incoming() {
                let Ok(mut c) = c else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
                let mut request = String::new();
                if BufReader::new(&c).read_line(&mut request).is_err() {
                    continue;
                }
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let get = request.starts_with("GET ");
                let (status, kind, body) = match path {
                    "/metrics" if get => ("200 OK", OPENMETRICS, render(&source())),
                    "/healthz" if get => ("200 OK", TEXT, "ok\n".to_owned()),
                    "/readyz" if get && ready() => ("200 OK", TEXT, "ready\n".to_owned()),
                    "/readyz" if get => ("503 Service Unavailable", TEXT, "draining\n".to_owned()),
                    _ => (
                        "404 Not Found",
                        TEXT,
                        "try /metrics, /healthz or /readyz\n".to_owned(),
                    ),
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })
        .context("starting the metrics thread")?;
    Ok(())
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pm::driver::LineStatus;

    #[test]
    fn the_engines_fast_opens_are_counted() {
        let st = mptcp_proto::endpoint::EndpointStats {
            fast_open_data_taken: 7,
            fast_open_data_refused: 1,
            fast_open_syns_lost: 2,
            fast_open_accepted: 5,
            ..Default::default()
        };
        let text = render(&Sample {
            counters: [engine_client_counters(&st), engine_server_counters(&st)].concat(),
            ..Sample::default()
        });
        for line in [
            "mpbond_engine_fast_open_taken_total 7",
            "mpbond_engine_fast_open_refused_total 1",
            "mpbond_engine_fast_open_syns_lost_total 2",
            "mpbond_engine_fast_open_accepted_total 5",
            "mpbond_engine_fast_open_cookies_sent_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
    }

    #[test]
    fn the_engines_connections_and_subflows_are_counted() {
        use crate::status::{ConnectionStatus, SubflowStatus};
        let sf = |fully_established| SubflowStatus {
            line: Some("dsl".into()),
            local: "198.18.2.1:40000".parse().unwrap(),
            remote: "198.51.100.1:7000".parse().unwrap(),
            ids: (0, 0),
            state: "established".into(),
            backup: false,
            fully_established,
            rtt_ms: 20.0,
            cwnd: 10,
            bytes_sent: 1,
            bytes_acked: 1,
            bytes_received: 1,
            retransmits: 0,
            congestion: None,
        };
        let conn = |subflows| ConnectionStatus {
            token: 1,
            local: "198.18.2.1:40000".parse().unwrap(),
            remote: "198.51.100.1:7000".parse().unwrap(),
            fallback: false,
            extra_subflows: 0,
            subflows,
        };
        let conns = [conn(vec![sf(true), sf(false)]), conn(vec![sf(true)])];
        let text = render(&Sample {
            gauges: engine_gauges(&conns),
            ..Sample::default()
        });
        assert!(text.contains("mpbond_engine_connections 2"), "{text}");
        assert!(text.contains("mpbond_engine_subflows 3"), "{text}");
        assert!(
            text.contains("mpbond_engine_subflows_established 2"),
            "{text}"
        );
    }

    #[test]
    fn lines_and_counters_are_rendered_with_their_labels() {
        let pm = PmStatus {
            lines: vec![LineStatus {
                name: "dsl".into(),
                backup: false,
                state: Verdict::Up,
                addresses: vec![],
                probe_rtt_ms: Some(20.0),
                probes_sent: 10,
                probes_answered: 10,
                subflows_created: 3,
                failures: 1,
                bytes: (1000, 200),
                probe_pace: crate::pm::health::Pace::Idle,
                probe_bytes: (360, 324),
                probe_bytes_per_day: Some(6_220_800),
            }],
            ..PmStatus::default()
        };
        let text = render(&Sample {
            pm: Some(pm),
            counters: vec![("auth_failures", "Refused: authentication failed", 4)],
            gauges: vec![("active_connections", "Relayed now", 2)],
        });
        for want in [
            "mpbond_auth_failures_total 4",
            "mpbond_active_connections 2",
            "mpbond_line_state{line=\"dsl\"} 1",
            "mpbond_line_probe_rtt_seconds{line=\"dsl\"} 0.02",
            "mpbond_line_failures_total{line=\"dsl\"} 1",
            "mpbond_line_bytes_total{line=\"dsl\",direction=\"received\"} 1000",
            "mpbond_line_probe_bytes_total{line=\"dsl\",direction=\"sent\"} 360",
            "mpbond_line_probe_bytes_total{line=\"dsl\",direction=\"received\"} 324",
            "mpbond_line_probe_bytes_per_day{line=\"dsl\"} 6220800",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }

    #[test]
    fn the_endpoint_answers_metrics_health_readiness_and_404() {
        use std::io::Read as _;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let source: Source = Arc::new(|| Sample {
            counters: vec![("connections", "LAN connections taken", 7)],
            ..Sample::default()
        });
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let r = Arc::clone(&ready);
        serve(
            addr,
            source,
            Arc::new(move || r.load(std::sync::atomic::Ordering::Relaxed)),
        )
        .unwrap();
        let get = |path: &str| {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut s = String::new();
            c.read_to_string(&mut s).unwrap();
            s
        };
        let ok = get("/metrics");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("mpbond_connections_total 7"), "{ok}");
        assert!(get("/").starts_with("HTTP/1.1 404"));
        assert!(get("/healthz").starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").starts_with("HTTP/1.1 200"));
        ready.store(false, std::sync::atomic::Ordering::Relaxed);
        let draining = get("/readyz");
        assert!(draining.starts_with("HTTP/1.1 503"), "{draining}");
        assert!(
            get("/healthz").starts_with("HTTP/1.1 200"),
            "alive while draining"
        );
    }
}
