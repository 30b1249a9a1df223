//! A converter as one instance of a fleet behind a load balancer (issue 17), in the lab: with
//! `--fleet-address` it sets the C flag in its `MP_CAPABLE` and announces its own address
//! (RFC 8684 §3.1, §3.4.1), and the gateway joins only that address, never the balanced one.
//! Read on the wire by `mpbond decode` from a capture made in the test, also after a line failed
//! and came back. And a fleet of three instances behind an nftables balancer: connections
//! spread, joins at the right instance, one instance drained, one killed.
//!
//! Needs root (network namespaces); without it the test says so and passes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mpbond::lab::failover::{self, PatternServer, Transport};
use mpbond::lab::testing::{
    CONVERTER, Capture, Daemon, TempDir, TestLab, skip_unless_root, start_bonding,
};
use mpbond::lab::{LineState, Role, netns};
use mpbond::status::Status;

const EXE: &str = env!("CARGO_BIN_EXE_mpbond");
const PATTERN: &str = "203.0.113.2:9000";
/// The instance's own address (on the vps's `lo`, next to the balanced one, 198.51.100.1).
const OWN: &str = "198.51.100.7";

/// A packet as `mpbond decode --json` prints it, as far as the test reads it.
#[derive(Debug, serde::Deserialize)]
struct Packet {
    src: IpAddr,
    dst: IpAddr,
    dport: u16,
    flags: String,
    #[serde(default)]
    mptcp: Vec<MptcpOption>,
}

/// One of its MPTCP options.
#[derive(Debug, serde::Deserialize)]
struct MptcpOption {
    subtype: String,
    flags: Option<String>,
    address: Option<IpAddr>,
}

/// The packets of capture `pcap`, read by `mpbond decode`, as a user would.
fn decode(pcap: &Path) -> Vec<Packet> {
    let out = Command::new(EXE)
        .args(["decode", "--json"])
        .arg(pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("{\"summary\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sysctl(lab: &TestLab, name: &str) -> String {
    let out = lab
        .cmd(Role::Vps, "sysctl")
        .args(["-n", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Downloads `len` bytes of the pattern from the LAN host through the gateway: whether every
/// byte came, in order.
fn download(lab: &TestLab, len: u64) -> bool {
    let addr: SocketAddr = PATTERN.parse().unwrap();
    netns::in_netns(lab.info().netns(Role::Lan), move || {
        let mut c = failover::connect(addr, Transport::Tcp, Duration::from_secs(20)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut req = len.to_le_bytes().to_vec();
        req.extend_from_slice(&3u64.to_le_bytes());
        c.write_all(&req).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        let mut want = vec![0u8; got.len()];
        failover::fill(3, 0, &mut want);
        got.len() as u64 == len && got == want
    })
    .unwrap()
}

#[test]
fn a_fleet_converter_sets_the_c_flag_and_the_gateway_joins_only_its_own_address() {
    if skip_unless_root(
        "a_fleet_converter_sets_the_c_flag_and_the_gateway_joins_only_its_own_address",
    ) {
        return;
    }
    let lab = TestLab::up(EXE, &["dsl:20mbit:10ms", "lte:10mbit:40ms"]);
    let web = lab.info().netns(Role::Web).to_owned();
    let _pattern = PatternServer::start(&web, PATTERN.parse().unwrap(), Transport::Tcp).unwrap();
    let ok = Command::new("ip")
        .args(["-n", lab.info().netns(Role::Vps), "addr", "add"])
        .args([&format!("{OWN}/32"), "dev", "lo"])
        .status()
        .unwrap();
    assert!(ok.success());
    let dir = TempDir::new("fleet");
    let (gateway, mut first) = start_bonding(&lab, EXE, &dir.0, &["dsl", "lte"], &[]);
    assert!(first.stop());
    let before = sysctl(&lab, "net.mptcp.allow_join_initial_addr_port");
    let keys = dir.path("converter.keys").to_string_lossy().into_owned();
    let port = CONVERTER.parse::<SocketAddr>().unwrap().port();
    let listen = format!("0.0.0.0:{port}");
    let mut converter = Daemon::start(
        lab.info(),
        Role::Vps,
        Path::new(EXE),
        &[
            "converter",
            "--listen",
            &listen,
            "--keys",
            &keys,
            "--fleet-address",
            OWN,
        ],
        dir.path("converter.log"),
        "converter ready",
    )
    .unwrap();
    assert_eq!(sysctl(&lab, "net.mptcp.allow_join_initial_addr_port"), "0");

    let pcap = dir.path("vps.pcap");
    let capture = Capture::start(&lab, Role::Vps, &format!("tcp port {port}"), &pcap);
    // lte fails (silently) mid-download and comes back: the path manager's new subflow on lte
    // must go to the instance's own address too.
    let intact = std::thread::scope(|s| {
        let d = s.spawn(|| download(&lab, 24_000_000));
        std::thread::sleep(Duration::from_millis(1500));
        lab.set_state("lte", LineState::Blackhole);
        std::thread::sleep(Duration::from_secs(3));
        lab.set_state("lte", LineState::Up);
        d.join().unwrap()
    });
    assert!(intact, "the download arrives intact");
    capture.stop();

    let packets = decode(&pcap);
    let balanced: IpAddr = CONVERTER.parse::<SocketAddr>().unwrap().ip();
    let own: IpAddr = OWN.parse().unwrap();
    let has = |p: &Packet, subtype: &str| p.mptcp.iter().any(|o| o.subtype == subtype);
    let c_flag = packets.iter().any(|p| {
        p.src == balanced
            && p.flags.contains('S')
            && p.mptcp.iter().any(|o| {
                o.subtype == "MP_CAPABLE" && o.flags.as_deref().is_some_and(|f| f.contains('C'))
            })
    });
    assert!(c_flag, "the SYN/ACK's MP_CAPABLE carries the C flag");
    let announced = packets.iter().any(|p| {
        p.mptcp
            .iter()
            .any(|o| o.subtype == "ADD_ADDR" && o.address == Some(own))
    });
    assert!(announced, "ADD_ADDR {OWN} on the wire");
    let join_syns: Vec<&Packet> = packets
        .iter()
        .filter(|p| p.flags == "S" && has(p, "MP_JOIN"))
        .collect();
    eprintln!(
        "joins: {:?}",
        join_syns
            .iter()
            .map(|p| (p.src, p.dst, p.dport))
            .collect::<Vec<_>>()
    );
    let lte: IpAddr = "10.2.0.2".parse().unwrap();
    assert!(
        join_syns.iter().filter(|p| p.src == lte).count() >= 2,
        "lte joined, and joined again after its return"
    );
    for p in &join_syns {
        assert_eq!(
            p.dst, own,
            "every join goes to the instance's own address: {p:?}"
        );
    }
    // Once the converter is gone, the sysctl is as it was.
    assert!(converter.stop());
    assert_eq!(
        sysctl(&lab, "net.mptcp.allow_join_initial_addr_port"),
        before
    );
    drop(gateway);
}

// ---------------------------------------------------------------------------------------------
// A fleet of three converters behind an nftables balancer.
//
// ```text
//  lan ── gw ═ dsl, lte ═ vps (the balancer: 198.51.100.1:7000 DNAT jhash → .11/.12/.13)
//                          ├── lb1 ── c1 (converter, own address 198.51.100.11)
//                          ├── lb2 ── c2 (                        198.51.100.12)
//                          └── lb3 ── c3 (                        198.51.100.13)
// ```
//
// The vps plays the balancer: a `jhash` map over the instances' own addresses, as kube-proxy's
// nftables mode builds, and a health checker (a thread of the test) that asks each instance's
// `/readyz` and rewrites the map when an answer changes. Each instance sets the C flag and
// announces its own address, so the gateway's joins bypass the balancer and reach the instance
// that holds their connection.
// ---------------------------------------------------------------------------------------------

/// The balanced (virtual) address and port, where gateways are told the converter is.
const VIRTUAL: &str = "198.51.100.1:7000";
/// Where each instance serves its metrics and health checks, on its own address.
const HEALTH_PORT: u16 = 9479;
/// The test's web server: sends what is asked, then holds the connection until the client
/// closes it.
const HOLD: &str = "203.0.113.2:9100";

/// Instance `i` (0-based) of the fleet: its namespace and its own address.
struct Instance {
    netns: String,
    own: Ipv4Addr,
    converter: Option<Daemon>,
}

impl Instance {
    fn health(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.own), HEALTH_PORT)
    }

    /// The converter's connections, as `mpbond status` shows them.
    fn status(&self) -> Status {
        let pid = self.converter.as_ref().unwrap().pid();
        let out = Command::new(EXE)
            .args(["status", "--json", "--socket"])
            .arg(format!("/run/mpbond/converter-{pid}.sock"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mpbond status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut all: Vec<Status> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(all.len(), 1);
        all.remove(0)
    }
}

/// The instances and the balancer in front of them; removes the instances' namespaces when
/// dropped (also after a failure).
struct Fleet {
    vps: String,
    instances: Vec<Instance>,
    /// Which instances the health checker keeps in the balancer's map.
    in_map: Arc<Mutex<Vec<bool>>>,
    /// The health checker looks at nothing while set (a balancer that has not noticed yet).
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    checker: Option<JoinHandle<()>>,
}

fn ip(netns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["-n", netns])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip -n {netns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Points the balanced address at `backends`: one atomic nftables transaction that replaces
/// the rule (connections already balanced keep their instance: conntrack remembers it).
fn balance(vps: &str, backends: &[Ipv4Addr]) {
    let rule = if backends.is_empty() {
        "ip daddr 198.51.100.1 tcp dport 7000 reject with tcp reset".to_owned()
    } else {
        let map: Vec<String> = backends
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{i} : {a}"))
            .collect();
        format!(
            "ip daddr 198.51.100.1 tcp dport 7000 dnat to jhash ip saddr . tcp sport mod {} map {{ {} }}",
            backends.len(),
            map.join(", ")
        )
    };
    let script = format!(
        "table ip mpbond-lb {{\n chain prerouting {{\n  type nat hook prerouting priority dstnat; policy accept;\n }}\n}}\n\
         flush chain ip mpbond-lb prerouting\n\
         add rule ip mpbond-lb prerouting {rule}\n"
    );
    let mut nft = Command::new("ip")
        .args(["netns", "exec", vps, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    nft.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(nft.wait().unwrap().success(), "nft: {script}");
}

/// What `GET /readyz` answers (the status line), or why there is no answer.
fn readyz(addr: SocketAddr) -> Result<String, String> {
    let mut c =
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    write!(
        c,
        "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut s = String::new();
    c.read_to_string(&mut s).map_err(|e| e.to_string())?;
    Ok(s.lines().next().unwrap_or_default().to_owned())
}

fn is_ready(answer: &Result<String, String>) -> bool {
    answer.as_ref().is_ok_and(|l| l.contains(" 200 "))
}

impl Fleet {
    /// Three instance namespaces behind the lab's vps, each with a converter (the lab's keys in
    /// `keys`), the balancer's map over the three, and its health checker.
    fn up(lab: &TestLab, dir: &TempDir, keys: &str) -> Self {
        let vps = lab.info().netns(Role::Vps).to_owned();
        let mut fleet = Fleet {
            vps: vps.clone(),
            instances: Vec::new(),
            in_map: Arc::new(Mutex::new(vec![true; 3])),
            paused: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            checker: None,
        };
        for i in 1..=3u8 {
            let netns = format!("{}-c{i}", lab.name());
            netns::add(&netns).unwrap();
            let own = Ipv4Addr::new(198, 51, 100, 10 + i);
            fleet.instances.push(Instance {
                netns: netns.clone(),
                own,
                converter: None,
            });
            let (outer, inner) = (format!("lb{i}"), "eth0");
            ip(
                &vps,
                &[
                    "link", "add", &outer, "type", "veth", "peer", "name", inner, "netns", &netns,
                ],
            );
            ip(
                &vps,
                &["addr", "add", &format!("10.200.{i}.1/24"), "dev", &outer],
            );
            ip(&vps, &["link", "set", &outer, "up"]);
            ip(
                &vps,
                &[
                    "route",
                    "add",
                    &format!("{own}/32"),
                    "via",
                    &format!("10.200.{i}.2"),
                ],
            );
            ip(
                &netns,
                &["addr", "add", &format!("10.200.{i}.2/24"), "dev", inner],
            );
            ip(&netns, &["link", "set", inner, "up"]);
            ip(&netns, &["link", "set", "lo", "up"]);
            ip(&netns, &["addr", "add", &format!("{own}/32"), "dev", "lo"]);
            ip(
                &netns,
                &["route", "add", "default", "via", &format!("10.200.{i}.1")],
            );
        }
        let port = VIRTUAL.parse::<SocketAddr>().unwrap().port();
        let listen = format!("0.0.0.0:{port}");
        for (i, inst) in fleet.instances.iter_mut().enumerate() {
            let own = inst.own.to_string();
            let metrics = inst.health().to_string();
            inst.converter = Some(
                Daemon::start_in(
                    &inst.netns,
                    Path::new(EXE),
                    &[
                        "converter",
                        "--listen",
                        &listen,
                        "--keys",
                        keys,
                        "--fleet-address",
                        &own,
                        "--metrics",
                        &metrics,
                        "--drain-timeout",
                        "60s",
                    ],
                    dir.path(&format!("converter{}.log", i + 1)),
                    "converter ready",
                )
                .unwrap(),
            );
        }
        let all: Vec<Ipv4Addr> = fleet.instances.iter().map(|i| i.own).collect();
        balance(&vps, &all);
        fleet.checker = Some(fleet.spawn_checker());
        fleet
    }

    /// The balancer's health checker: every 100 ms, each instance's `/readyz`; the map
    /// follows.
    fn spawn_checker(&self) -> JoinHandle<()> {
        let vps = self.vps.clone();
        let (stop, in_map) = (Arc::clone(&self.stop), Arc::clone(&self.in_map));
        let paused = Arc::clone(&self.paused);
        let targets: Vec<(Ipv4Addr, SocketAddr)> =
            self.instances.iter().map(|i| (i.own, i.health())).collect();
        std::thread::spawn(move || {
            netns::enter(&vps).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if paused.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let verdicts: Vec<bool> = targets.iter().map(|t| is_ready(&readyz(t.1))).collect();
                if *in_map.lock().unwrap() != verdicts {
                    let backends: Vec<Ipv4Addr> = targets
                        .iter()
                        .zip(&verdicts)
                        .filter(|(_, ok)| **ok)
                        .map(|(t, _)| t.0)
                        .collect();
                    eprintln!("health check: the balancer now sends to {backends:?}");
                    balance(&vps, &backends);
                    // Only once the map is in the kernel.
                    in_map.lock().unwrap().clone_from(&verdicts);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    }

    /// Waits (at most 5 s) until the health checker has `i` in its map or not, as `wanted`.
    fn wait_in_map(&self, i: usize, wanted: bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.in_map.lock().unwrap()[i] != wanted {
            assert!(
                Instant::now() < deadline,
                "the health checker did not {} instance {}",
                if wanted { "add" } else { "drop" },
                i + 1
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The connections each instance's converter holds (0 for a stopped one).
    fn connections(&self) -> Vec<usize> {
        self.instances
            .iter()
            .map(|i| {
                if i.converter.is_some() {
                    i.status().connections.len()
                } else {
                    0
                }
            })
            .collect()
    }

    /// Waits (at most 15 s) until no instance holds a connection: those of the last step are
    /// closed on both sides, the next step counts its own.
    fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let n = self.connections();
            if n.iter().all(|&n| n == 0) {
                return;
            }
            assert!(Instant::now() < deadline, "connections left open: {n:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (at most 60 s) until the instances hold `n` connections in all, each with a
    /// subflow from each line: every join reached its connection's instance.
    fn wait_joined(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let statuses: Vec<Status> = self.instances.iter().map(Instance::status).collect();
            let conns: Vec<_> = statuses.iter().flat_map(|s| &s.connections).collect();
            let joined = conns
                .iter()
                .filter(|c| {
                    ["10.1.0.2", "10.2.0.2"].iter().all(|line| {
                        c.subflows
                            .iter()
                            .any(|s| s.state == "established" && s.remote.ip().to_string() == *line)
                    })
                })
                .count();
            if conns.len() == n && joined == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{joined} of {} connections joined on both lines (expected {n})",
                conns.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `/readyz` of instance `i`, asked from the balancer.
    fn readyz(&self, i: usize) -> Result<String, String> {
        let addr = self.instances[i].health();
        netns::in_netns(&self.vps, move || readyz(addr)).unwrap()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(c) = self.checker.take() {
            let _ = c.join();
        }
        for inst in &mut self.instances {
            if let Some(c) = &inst.converter
                && std::thread::panicking()
            {
                eprintln!("{}: {}", inst.netns, c.problems());
            }
            drop(inst.converter.take());
            let _ = netns::stop_processes(&netns::pids(&inst.netns), Duration::from_secs(2));
            let _ = netns::delete(&inst.netns);
        }
        mpbond::host::remove_files_of_dead_namespaces(mpbond::host::RUN_FILES);
    }
}

/// The test's web server ([`HOLD`]): a request is the length and the seed of a pattern
/// (little-endian u64s); it sends that, then holds the connection open until the client
/// closes it (so the converters' `mpbond status` can be read while every connection exists).
struct HoldServer {
    stop: Arc<AtomicBool>,
    /// Until set, requests are read and their answer waits.
    go: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HoldServer {
    fn start(web: &str) -> Self {
        let listener = netns::in_netns(web, || TcpListener::bind(HOLD))
            .unwrap()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let go = Arc::new(AtomicBool::new(false));
        let (stopping, going) = (Arc::clone(&stop), Arc::clone(&go));
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let go = Arc::clone(&going);
                        std::thread::spawn(move || {
                            let _ = Self::serve(c, &go);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            stop,
            go,
            thread: Some(thread),
        }
    }

    /// Answers the requests that wait, and every later one at once.
    fn go(&self) {
        self.go.store(true, Ordering::Relaxed);
    }

    fn serve(mut c: TcpStream, go: &AtomicBool) -> std::io::Result<()> {
        c.set_nonblocking(false)?;
        let mut req = [0u8; 16];
        c.read_exact(&mut req)?;
        while !go.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let len = u64::from_le_bytes(req[..8].try_into().unwrap());
        let seed = u64::from_le_bytes(req[8..].try_into().unwrap());
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        while sent < len {
            let n = usize::try_from((len - sent).min(buf.len() as u64)).unwrap();
            failover::fill(seed, sent, &mut buf[..n]);
            c.write_all(&buf[..n])?;
            sent += n as u64;
        }
        // Held until the client closes (or resets).
        let mut rest = [0u8; 1];
        while c.read(&mut rest)? > 0 {}
        Ok(())
    }
}

impl Drop for HoldServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How a LAN client's connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// The whole pattern came, the connection stayed open until the test let it go.
    Complete,
    /// Reset (after `bytes` good bytes).
    Reset { bytes: u64 },
    /// Closed in order by the other side before the test let it go (after `bytes`).
    Closed { bytes: u64 },
    /// Another failure.
    Failed(String),
}

/// LAN clients, each downloading `len` bytes of its own pattern from [`HOLD`] through the
/// gateway and then holding its connection until [`Clients::finish`].
struct Clients {
    got: mpsc::Receiver<()>,
    release: Arc<AtomicBool>,
    threads: Vec<JoinHandle<End>>,
}

impl Clients {
    fn open(lab: &TestLab, n: usize, len: u64, first_seed: u64) -> Self {
        let (tx, got) = mpsc::channel();
        let release = Arc::new(AtomicBool::new(false));
        let lan = lab.info().netns(Role::Lan).to_owned();
        let threads = (0..n as u64)
            .map(|k| {
                let (tx, release, lan) = (tx.clone(), Arc::clone(&release), lan.clone());
                std::thread::spawn(move || {
                    netns::enter(&lan).unwrap();
                    Self::run(len, first_seed + k, &tx, &release)
                })
            })
            .collect();
        Self {
            got,
            release,
            threads,
        }
    }

    fn run(len: u64, seed: u64, got: &mpsc::Sender<()>, release: &AtomicBool) -> End {
        let addr: SocketAddr = HOLD.parse().unwrap();
        let mut c = match failover::connect(addr, Transport::Tcp, Duration::from_secs(20)) {
            Ok(c) => c,
            Err(e) => return End::Failed(format!("connect: {e}")),
        };
        let mut req = len.to_le_bytes().to_vec();
        req.extend_from_slice(&seed.to_le_bytes());
        if let Err(e) = c.write_all(&req) {
            return End::Failed(format!("request: {e}"));
        }
        let ended = |e: std::io::Error, bytes| match e.kind() {
            std::io::ErrorKind::ConnectionReset => End::Reset { bytes },
            _ => End::Failed(format!("after {bytes} bytes: {e}")),
        };
        // Nothing for 30 s is a hang.
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (mut buf, mut want) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
        let mut bytes = 0u64;
        while bytes < len {
            let room = usize::try_from((len - bytes).min(buf.len() as u64)).unwrap();
            match c.read(&mut buf[..room]) {
                Ok(0) => return End::Closed { bytes },
                Ok(n) => {
                    failover::fill(seed, bytes, &mut want[..n]);
                    if buf[..n] != want[..n] {
                        return End::Failed(format!("corrupt after {bytes} bytes"));
                    }
                    bytes += n as u64;
                }
                Err(e) => return ended(e, bytes),
            }
        }
        let _ = got.send(());
        // Held: nothing more comes; the connection must stay until released (at most 120 s).
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match c.read(&mut buf) {
                Ok(0) => return End::Closed { bytes },
                Ok(_) => return End::Failed("more than was asked".into()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if release.load(Ordering::Relaxed) {
                        return End::Complete;
                    }
                    if Instant::now() > deadline {
                        return End::Failed("never released".into());
                    }
                }
                Err(e) => return ended(e, bytes),
            }
        }
    }

    /// Waits until `n` clients have their whole download (at most `within`): how many have.
    fn wait_downloaded(&self, n: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        let mut count = 0;
        while count < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.got.recv_timeout(left).is_err() {
                break;
            }
            count += 1;
        }
        count
    }

    /// Waits until every client has its whole download (at most `within`); if one does not,
    /// fails with how each ended.
    fn all_downloaded(self, within: Duration) -> Self {
        let n = self.threads.len();
        let got = self.wait_downloaded(n, within);
        if got < n {
            let ends = self.finish();
            panic!("{got} of {n} downloads completed in {within:?}: {ends:?}");
        }
        self
    }

    /// Lets every client close its connection; how each ended.
    fn finish(self) -> Vec<End> {
        self.release.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect()
    }
}

/// Every connection a converter holds has two established subflows, one per line, both of
/// which carried data: the gateway's join reached the instance that holds the connection.
fn assert_joined_on_both_lines(status: &Status, instance: usize, netns: &str, gw: &str) {
    for c in &status.connections {
        let lines: Vec<(IpAddr, u64)> = c
            .subflows
            .iter()
            .filter(|s| s.state == "established")
            .map(|s| (s.remote.ip(), s.bytes_sent))
            .collect();
        let dsl: IpAddr = "10.1.0.2".parse().unwrap();
        let lte: IpAddr = "10.2.0.2".parse().unwrap();
        for line in [dsl, lte] {
            assert!(
                lines.iter().any(|&(a, bytes)| a == line && bytes > 0),
                "instance {instance}: connection {} has a subflow from {line} that carried data: {lines:?}\ninstance:\n{}\ngateway:\n{}",
                c.remote,
                mptcp_counters(netns),
                mptcp_counters(gw)
            );
        }
        assert!(!c.fallback, "instance {instance}: {} fell back", c.remote);
    }
}

/// The kernel's MPTCP counters of `netns` that are not zero, for a failure message.
fn mptcp_counters(netns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "nstat", "-as"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("MPTcp"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The size of every download of the fleet test.
const LEN: u64 = 256 * 1024;

/// 100 LAN connections, spread over the three instances, each joined on both lines at its own
/// instance; every byte intact.
fn spread(lab: &TestLab, fleet: &Fleet, hold: &HoldServer) {
    // Opened (and balanced) all at once; their data waits until every one has its join, so
    // that each can use both lines.
    let clients = Clients::open(lab, 100, LEN, 1000);
    let asked = Instant::now();
    fleet.wait_joined(100);
    eprintln!("100 connections joined in {:?}", asked.elapsed());
    hold.go();
    let clients = clients.all_downloaded(Duration::from_secs(90));
    let spread = fleet.connections();
    for (i, inst) in fleet.instances.iter().enumerate() {
        assert_joined_on_both_lines(
            &inst.status(),
            i + 1,
            &inst.netns,
            lab.info().netns(Role::Gw),
        );
    }
    let ends = clients.finish();
    eprintln!("100 connections over the instances: {spread:?}");
    assert!(ends.iter().all(|e| *e == End::Complete), "{ends:?}");
    assert_eq!(spread.iter().sum::<usize>(), 100, "{spread:?}");
    assert!(
        spread.iter().all(|&n| n >= 10),
        "the balancer spread the connections: {spread:?}"
    );
    fleet.wait_idle();
}

/// SIGTERM to the instance that holds the most of 12 open connections. It says not ready at
/// once; 12 connections opened before the balancer notices succeed all the same (the draining
/// instance refuses them at their SYN, the gateway tries again); the balancer drops it, new
/// connections go to the other two, its own finish intact and then it exits by itself. Which
/// instance it was.
fn drain_one(lab: &TestLab, fleet: &mut Fleet) -> usize {
    let old = Clients::open(lab, 12, LEN, 2000).all_downloaded(Duration::from_secs(60));
    let before = fleet.connections();
    let drained = (0..3).max_by_key(|&i| before[i]).unwrap();
    let pid = fleet.instances[drained].converter.as_ref().unwrap().pid();
    fleet.paused.store(true, Ordering::Relaxed);
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap(), libc::SIGTERM) };
    let asked = Instant::now();
    let mut answer = fleet.readyz(drained);
    while is_ready(&answer) && asked.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(10));
        answer = fleet.readyz(drained);
    }
    assert!(
        answer.as_ref().is_ok_and(|l| l.contains(" 503 ")),
        "a draining instance says not ready within a second: {answer:?}"
    );
    // The balancer still sends a third of new connections to the draining instance until its
    // health check runs again.
    let early = Clients::open(lab, 12, LEN, 2500);
    fleet.paused.store(false, Ordering::Relaxed);
    fleet.wait_in_map(drained, false);
    let early = early.all_downloaded(Duration::from_secs(60));
    let new = Clients::open(lab, 24, LEN, 3000).all_downloaded(Duration::from_secs(60));
    let after = fleet.connections();
    eprintln!(
        "draining instance {}: before {before:?}, after {after:?}",
        drained + 1
    );
    assert_eq!(
        after[drained], before[drained],
        "no new connection reached the draining instance"
    );
    assert_eq!(after.iter().sum::<usize>(), 12 + 12 + 24, "{after:?}");
    let refused = Command::new("ip")
        .args(["netns", "exec", &fleet.instances[drained].netns])
        .args([
            "nft",
            "list",
            "counter",
            "inet",
            "mpbond_drain_7000",
            "refused",
        ])
        .output()
        .unwrap();
    let refused = String::from_utf8_lossy(&refused.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("packets "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("?")
        .to_owned();
    eprintln!("SYNs the draining instance refused (the gateway tried again): {refused}");
    let ends: Vec<End> = old
        .finish()
        .into_iter()
        .chain(early.finish())
        .chain(new.finish())
        .collect();
    assert!(ends.iter().all(|e| *e == End::Complete), "{ends:?}");
    let converter = fleet.instances[drained].converter.as_mut().unwrap();
    let exit = converter.wait_exit(Duration::from_secs(20));
    assert!(
        exit.is_some_and(|s| s.success()),
        "the drained instance exits by itself once its connections are done: {exit:?}\n{}",
        converter.problems()
    );
    fleet.instances[drained].converter = None;
    fleet.wait_idle();
    drained
}

/// SIGKILL to the busier of the two live instances while 12 connections are open. Its
/// connections end in a reset on the LAN side (not a hang, not an orderly close); once the
/// health checker drops it, new connections succeed on the last one.
fn kill_one(lab: &TestLab, fleet: &mut Fleet, drained: usize) {
    let open = Clients::open(lab, 12, LEN, 4000).all_downloaded(Duration::from_secs(60));
    let before = fleet.connections();
    let killed = (0..3).max_by_key(|&i| before[i]).unwrap();
    let victim = fleet.instances[killed].converter.as_ref().unwrap().pid();
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(libc::pid_t::try_from(victim).unwrap(), libc::SIGKILL) };
    let mut dead = fleet.instances[killed].converter.take().unwrap();
    assert!(dead.wait_exit(Duration::from_secs(5)).is_some());
    fleet.wait_in_map(killed, false);
    let later = Clients::open(lab, 12, LEN, 5000).all_downloaded(Duration::from_secs(60));
    let last = fleet.connections();
    let survivor = (0..3).find(|&i| i != killed && i != drained).unwrap();
    eprintln!(
        "killed instance {}: before {before:?}, the survivor now {}",
        killed + 1,
        last[survivor]
    );
    assert_eq!(last[survivor], before[survivor] + 12, "{last:?}");
    let ends = open.finish();
    let resets = ends
        .iter()
        .filter(|e| matches!(e, End::Reset { .. }))
        .count();
    assert_eq!(
        resets, before[killed],
        "exactly the dead instance's connections were reset: {ends:?}"
    );
    assert!(
        ends.iter()
            .all(|e| matches!(e, End::Complete | End::Reset { .. })),
        "the others were not disturbed: {ends:?}"
    );
    let ends = later.finish();
    assert!(ends.iter().all(|e| *e == End::Complete), "{ends:?}");
}

#[test]
fn a_fleet_behind_an_nftables_balancer_spreads_drains_and_survives_a_dead_instance() {
    if skip_unless_root(
        "a_fleet_behind_an_nftables_balancer_spreads_drains_and_survives_a_dead_instance",
    ) {
        return;
    }
    let lab = TestLab::up(EXE, &["dsl:20mbit:10ms", "lte:10mbit:40ms"]);
    let web = lab.info().netns(Role::Web).to_owned();
    let hold = HoldServer::start(&web);
    let dir = TempDir::new("fleet-lb");
    // The lab's converter only gives the gateway its key and keys file; the fleet takes over.
    let (gateway, mut first) = start_bonding(&lab, EXE, &dir.0, &["dsl", "lte"], &[]);
    assert!(first.stop());
    let keys = dir.path("converter.keys").to_string_lossy().into_owned();
    let mut fleet = Fleet::up(&lab, &dir, &keys);
    for i in 0..3 {
        assert!(is_ready(&fleet.readyz(i)), "instance {} ready", i + 1);
    }
    assert_eq!(
        VIRTUAL, CONVERTER,
        "the gateway is told the balanced address"
    );
    spread(&lab, &fleet, &hold);
    let drained = drain_one(&lab, &mut fleet);
    kill_one(&lab, &mut fleet, drained);
    drop(fleet);
    drop(gateway);
}
