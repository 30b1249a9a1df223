//! Gateway and converter under faults and attack, in the lab (issue 12): a transfer that breaks
//! anywhere reaches the LAN client as a reset, never as a complete-looking close; a wrong key or
//! clock is reported by the gateway in words an operator can act on; a killed daemon leaves
//! nothing behind once the next one has run; idle connections cannot lock gateways out. And
//! the operator's hand (issue 17): a converter stopped with SIGTERM drains, and its keys are
//! reloaded by SIGHUP without cutting a transfer.
//!
//! Every test here needs root (network namespaces, nftables, routes); without it each says so and
//! passes. Lines: dsl 20mbit/10ms and lte 10mbit/40ms.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "a test fails loudly on the first surprise"
)]

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mpbond::lab::failover::{self, PatternServer, Transport};
use mpbond::lab::testing::{
    CONVERTER, Daemon, TestLab, skip_unless_root, start_bonding, start_bonding_with, write_secret,
};
use mpbond::lab::{Role, netns};

const EXE: &str = env!("CARGO_BIN_EXE_mpbond");
const LINES: [&str; 2] = ["dsl:20mbit:10ms", "lte:10mbit:40ms"];
/// The web host's pattern servers: one that serves, one that resets after 8 MB.
const PATTERN: &str = "203.0.113.2:9000";
const RESETTING: &str = "203.0.113.2:9001";
const MB: u64 = 1_000_000;
/// The downloads that faults break: longer than the buffers on their way can hold.
const BROKEN_LEN: u64 = 64 * MB;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("mpbond-faults-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn str(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap(), sig) };
}

/// Waits (at most 15 s) for `pid` to be gone.
fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while netns::alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How a download ended.
#[derive(Debug)]
struct Ending {
    bytes: u64,
    /// Every byte received was the pattern's.
    intact: bool,
    /// `None`: an orderly end (EOF); else the read's error.
    error: Option<io::ErrorKind>,
}

/// From the LAN host, asks the pattern server at `addr` for `len` bytes of pattern `seed` and
/// reads until the stream ends, whichever way.
fn download_to_the_end(lab: &TestLab, addr: &str, len: u64, seed: u64) -> Ending {
    download_counting(lab, addr, len, seed, &AtomicU64::new(0))
}

/// [`download_to_the_end`], counting the bytes received so far in `progress`.
fn download_counting(
    lab: &TestLab,
    addr: &str,
    len: u64,
    seed: u64,
    progress: &AtomicU64,
) -> Ending {
    let addr: SocketAddr = addr.parse().unwrap();
    netns::in_netns(lab.info().netns(Role::Lan), move || {
        let mut c = failover::connect(addr, Transport::Tcp, Duration::from_secs(20)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut req = len.to_le_bytes().to_vec();
        req.extend_from_slice(&seed.to_le_bytes());
        c.write_all(&req).unwrap();
        let mut end = Ending {
            bytes: 0,
            intact: true,
            error: None,
        };
        let mut buf = vec![0u8; 64 * 1024];
        let mut expect = vec![0u8; buf.len()];
        loop {
            match c.read(&mut buf) {
                Ok(0) => return end,
                Ok(n) => {
                    failover::fill(seed, end.bytes, &mut expect[..n]);
                    end.intact &= buf[..n] == expect[..n];
                    end.bytes += n as u64;
                    progress.store(end.bytes, Ordering::Relaxed);
                }
                Err(e) => {
                    end.error = Some(e.kind());
                    return end;
                }
            }
        }
    })
    .unwrap()
}

/// A download of `len` bytes during which `fault` runs once `after` bytes arrived: it must end
/// in a reset.
fn assert_reset(
    what: &str,
    lab: &TestLab,
    addr: &str,
    len: u64,
    after: u64,
    fault: impl FnOnce() + Send,
) {
    let progress = AtomicU64::new(0);
    let end = std::thread::scope(|s| {
        let d = s.spawn(|| download_counting(lab, addr, len, 7, &progress));
        // Once the download is well under way, whatever the machine's load.
        let deadline = Instant::now() + Duration::from_secs(60);
        while progress.load(Ordering::Relaxed) < after && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        fault();
        d.join().unwrap()
    });
    eprintln!("{what}: {end:?}");
    assert!(end.intact, "{what}: what arrived is the pattern");
    assert!(
        end.bytes > 0 && end.bytes < len,
        "{what}: the fault struck mid-download"
    );
    assert_eq!(
        end.error,
        Some(io::ErrorKind::ConnectionReset),
        "{what}: a truncated download ends in a reset, never an orderly close ({} of {len} bytes)",
        end.bytes
    );
}

fn start_converter(lab: &TestLab, dir: &TempDir, log: &str, extra: &[&str]) -> Daemon {
    let keys = dir.str("converter.keys");
    let mut args = vec!["converter", "--listen", CONVERTER, "--keys", &keys];
    args.extend_from_slice(extra);
    Daemon::start(
        lab.info(),
        Role::Vps,
        Path::new(EXE),
        &args,
        dir.path(log),
        "converter ready",
    )
    .unwrap()
}

/// The lab of the broken-transfer tests: the pattern server and one that resets after 8 MB on
/// the web host, and a gateway with `stack` (`--stack` and its value, or nothing) on its
/// command line; the converter it was started with is stopped, for the test to start its own.
fn broken_transfer_lab(
    tag: &str,
    stack: &[&str],
) -> (TestLab, [PatternServer; 2], TempDir, Daemon) {
    let lab = TestLab::up(EXE, &LINES);
    let web = lab.info().netns(Role::Web).to_owned();
    let servers = [
        PatternServer::start(&web, PATTERN.parse().unwrap(), Transport::Tcp).unwrap(),
        PatternServer::start_resetting(&web, RESETTING.parse().unwrap(), Transport::Tcp, 8 * MB)
            .unwrap(),
    ];
    let dir = TempDir::new(tag);
    let (gateway, mut first) = start_bonding_with(&lab, EXE, &dir.0, &["dsl", "lte"], stack, &[]);
    assert!(first.stop());
    (lab, servers, dir, gateway)
}

#[test]
fn a_transfer_broken_anywhere_reaches_the_client_as_a_reset() {
    if skip_unless_root("a_transfer_broken_anywhere_reaches_the_client_as_a_reset") {
        return;
    }
    let (lab, _servers, dir, gateway) = broken_transfer_lab("reset", &[]);
    // A second of drain after SIGTERM: far too short for the rest of the download.
    let mut converter = start_converter(&lab, &dir, "converter1.log", &["--drain-timeout", "1s"]);
    // Faults strike after 4 MB of the 64: more than the buffers between the web server and the
    // client hold (converter, bond and gateway sockets grow to some 30 MB with Linux's
    // defaults), so that the web server still has data to send when one strikes. (With 20 MB
    // the whole download sat in those buffers once, and a failed relay lost nothing.)
    let len = BROKEN_LEN;
    let at = 4 * MB;

    let pid = converter.pid();
    assert_reset(
        "converter SIGTERM, drain time over",
        &lab,
        PATTERN,
        len,
        at,
        || {
            signal(pid, libc::SIGTERM);
        },
    );
    assert!(converter.stop(), "the converter exits cleanly on SIGTERM");
    let converter = start_converter(&lab, &dir, "converter2.log", &[]);

    let pid = converter.pid();
    assert_reset("converter SIGKILL", &lab, PATTERN, len, at, || {
        signal(pid, libc::SIGKILL);
    });
    wait_gone(pid);
    drop(converter);
    let converter = start_converter(&lab, &dir, "converter3.log", &[]);

    assert_reset("web server reset", &lab, RESETTING, len, 0, || {});

    // The converter's own connection to the web server fails: its kernel resets it (as a
    // firewall on the converter's host would).
    let vps = lab.info().netns(Role::Vps).to_owned();
    assert_reset("relay to the server failed", &lab, PATTERN, len, at, || {
        let rules = "table inet fault {\n chain out {\n type filter hook output priority 0;\n ip daddr 203.0.113.2 tcp dport 9000 reject with tcp reset\n }\n}\n";
        let ok = Command::new("ip")
            .args(["netns", "exec", &vps, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(rules.as_bytes())?;
                c.wait()
            })
            .unwrap();
        assert!(ok.success());
    });
    let _ = Command::new("ip")
        .args([
            "netns", "exec", &vps, "nft", "delete", "table", "inet", "fault",
        ])
        .status();

    connect_via_fails_when_the_converter_dies(&lab, &dir, converter, len, at);
    drop(gateway);
}

/// The same with gateway and converter on mpbond's own engine (`--stack user`): a converter
/// stopped mid-download resets its connections (`MP_FASTCLOSE`), a killed one's host answers
/// for it with resets, and a reset on the far side is passed on, so the LAN client's read
/// ends in a reset, never EOF (nor a hang).
#[test]
fn on_the_engine_too_a_broken_transfer_reaches_the_client_as_a_reset() {
    if skip_unless_root("on_the_engine_too_a_broken_transfer_reaches_the_client_as_a_reset") {
        return;
    }
    let user = ["--stack", "user"];
    let (lab, _servers, dir, gateway) = broken_transfer_lab("reset-user", &user);
    let mut converter = start_converter(
        &lab,
        &dir,
        "converter1.log",
        &["--stack", "user", "--drain-timeout", "1s"],
    );
    let (len, at) = (BROKEN_LEN, 4 * MB);
    let pid = converter.pid();
    assert_reset(
        "engine converter SIGTERM, drain time over",
        &lab,
        PATTERN,
        len,
        at,
        || signal(pid, libc::SIGTERM),
    );
    assert!(converter.stop(), "the converter exits cleanly on SIGTERM");
    let converter = start_converter(&lab, &dir, "converter2.log", &user);
    assert_reset("web server reset", &lab, RESETTING, len, 0, || {});
    // Killed, the engine takes its TUN along; the host routes what comes for it by its
    // default route, where the converter's table answers with resets (the lab's vps has no
    // default route of its own: a server's would go to its uplink).
    let vps = lab.info().netns(Role::Vps).to_owned();
    let routed = Command::new("ip")
        .args([
            "netns", "exec", &vps, "ip", "route", "add", "default", "via",
        ])
        .args(["10.1.0.2", "dev", "dsl"])
        .status()
        .unwrap();
    assert!(routed.success());
    let pid = converter.pid();
    assert_reset("engine converter SIGKILL", &lab, PATTERN, len, at, || {
        signal(pid, libc::SIGKILL);
    });
    wait_gone(pid);
    drop(converter);
    let log = gateway.log_text();
    assert!(!log.contains("ERROR"), "{log}");
}

/// `GET path` on the converter's metrics port (in its namespace): the status line.
fn status_line(lab: &TestLab, addr: SocketAddr, path: &str) -> String {
    let path = path.to_owned();
    netns::in_netns(lab.info().netns(Role::Vps), move || {
        let mut c = std::net::TcpStream::connect(addr).ok()?;
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut s = String::new();
        c.read_to_string(&mut s).ok()?;
        s.lines().next().map(str::to_owned)
    })
    .ok()
    .flatten()
    .unwrap_or_default()
}

#[test]
fn a_converter_stopped_with_sigterm_drains_its_connections_and_takes_no_new_ones() {
    if skip_unless_root(
        "a_converter_stopped_with_sigterm_drains_its_connections_and_takes_no_new_ones",
    ) {
        return;
    }
    let lab = TestLab::up(EXE, &LINES);
    let web = lab.info().netns(Role::Web).to_owned();
    let _pattern = PatternServer::start(&web, PATTERN.parse().unwrap(), Transport::Tcp).unwrap();
    let dir = TempDir::new("drain");
    let (gateway, mut first) = start_bonding(&lab, EXE, &dir.0, &["dsl", "lte"], &[]);
    assert!(first.stop());
    let metrics: SocketAddr = "127.0.0.1:9479".parse().unwrap();
    let converter = start_converter(
        &lab,
        &dir,
        "converter.log",
        &["--drain-timeout", "30s", "--metrics", "127.0.0.1:9479"],
    );
    assert!(status_line(&lab, metrics, "/readyz").contains("200"));
    let len = 20 * MB;
    let progress = AtomicU64::new(0);
    let pid = converter.pid();
    let (end, ready, newcomer) = std::thread::scope(|s| {
        let d = s.spawn(|| download_counting(&lab, PATTERN, len, 5, &progress));
        let deadline = Instant::now() + Duration::from_secs(60);
        while progress.load(Ordering::Relaxed) < 4 * MB && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        signal(pid, libc::SIGTERM);
        // Not ready at once: within a second of the signal, whatever the machine's load.
        let asked = Instant::now();
        let mut ready = status_line(&lab, metrics, "/readyz");
        while !ready.contains("503") && asked.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(10));
            ready = status_line(&lab, metrics, "/readyz");
        }
        let alive = status_line(&lab, metrics, "/healthz");
        assert!(alive.contains("200"), "alive while draining: {alive}");
        // A connection that arrives now is not taken (the balancer sends it elsewhere).
        let newcomer = download_to_the_end(&lab, PATTERN, MB, 9);
        (d.join().unwrap(), ready, newcomer)
    });
    eprintln!("draining: /readyz {ready:?}, newcomer {newcomer:?}, download {end:?}");
    assert!(ready.contains("503"), "not ready once draining: {ready}");
    assert!(
        newcomer.bytes == 0 && newcomer.error.is_some(),
        "a new connection is refused while draining: {newcomer:?}"
    );
    assert!(
        end.intact && end.bytes == len && end.error.is_none(),
        "the download under way finishes intact: {end:?}"
    );
    // Nothing left to relay: the converter stops by itself, long before its drain time.
    wait_gone(pid);
    let log = std::fs::read_to_string(dir.path("converter.log")).unwrap();
    assert!(log.contains("draining") && log.contains("drained"), "{log}");
    drop(converter);
    drop(gateway);
}

/// What `connect --via` did: its exit status, the bytes it printed, whether they were the
/// pattern's, and its stderr.
#[derive(Debug)]
struct Via {
    ok: bool,
    bytes: u64,
    intact: bool,
    stderr: String,
}

/// `connect --via` the converter with key file `key` (in the gateway's namespace), asking the
/// pattern server for `len` bytes of pattern `seed`.
fn via(lab: &TestLab, dir: &TempDir, key: &str, len: u64, seed: u64) -> Via {
    let mut child = Command::new("ip")
        .args(["netns", "exec", lab.info().netns(Role::Gw)])
        .arg(EXE)
        .args([
            "connect",
            "--via",
            CONVERTER,
            "--key",
            &dir.str(key),
            PATTERN,
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut req = len.to_le_bytes().to_vec();
    req.extend_from_slice(&seed.to_le_bytes());
    // Written and closed: the pattern server needs nothing more.
    let _ = child.stdin.take().unwrap().write_all(&req);
    let out = child.wait_with_output().unwrap();
    let mut expect = vec![0u8; out.stdout.len()];
    failover::fill(seed, 0, &mut expect);
    Via {
        ok: out.status.success(),
        bytes: out.stdout.len() as u64,
        intact: out.stdout == expect,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn keys_reloaded_by_sighup_admit_and_revoke_gateways_and_a_broken_file_changes_nothing() {
    if skip_unless_root(
        "keys_reloaded_by_sighup_admit_and_revoke_gateways_and_a_broken_file_changes_nothing",
    ) {
        return;
    }
    let lab = TestLab::up(EXE, &LINES);
    let web = lab.info().netns(Role::Web).to_owned();
    let _pattern = PatternServer::start(&web, PATTERN.parse().unwrap(), Transport::Tcp).unwrap();
    let dir = TempDir::new("reload");
    // The gateway's key (home) is in the keys file from the start; so is "old", and "new"
    // is not yet.
    let (gateway, mut first) = start_bonding(&lab, EXE, &dir.0, &["dsl", "lte"], &[]);
    assert!(first.stop());
    let home = std::fs::read_to_string(dir.path("home.key")).unwrap();
    write_key(&dir, "old.key", "old");
    write_key(&dir, "new.key", "new");
    let line = |f: &str| std::fs::read_to_string(dir.path(f)).unwrap();
    let keys_file = |lines: &[String]| {
        write_secret(&dir.path("converter.keys"), lines.concat().trim_end()).unwrap();
    };
    keys_file(&[home.clone(), line("old.key")]);
    let converter = start_converter(&lab, &dir, "converter.log", &[]);
    let pid = converter.pid();
    let before = via(&lab, &dir, "old.key", MB, 1);
    assert!(
        before.ok && before.intact && before.bytes == MB,
        "{before:?}"
    );
    let refused = via(&lab, &dir, "new.key", MB, 2);
    assert!(
        !refused.ok && refused.bytes == 0,
        "not in the keys yet: {refused:?}"
    );

    let len = 20 * MB;
    let progress = AtomicU64::new(0);
    let (end, added, removed, kept) = std::thread::scope(|s| {
        let d = s.spawn(|| download_counting(&lab, PATTERN, len, 5, &progress));
        let deadline = Instant::now() + Duration::from_secs(60);
        while progress.load(Ordering::Relaxed) < 2 * MB && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // "new" added, "old" removed, during the gateway's transfer.
        keys_file(&[home.clone(), line("new.key")]);
        signal(pid, libc::SIGHUP);
        let reloaded = Instant::now() + Duration::from_secs(5);
        let mut added = via(&lab, &dir, "new.key", MB, 3);
        while !added.ok && Instant::now() < reloaded {
            std::thread::sleep(Duration::from_millis(100));
            added = via(&lab, &dir, "new.key", MB, 3);
        }
        let removed = via(&lab, &dir, "old.key", MB, 4);
        // A broken file: the keys in force stay.
        write_secret(&dir.path("converter.keys"), "new not-a-key").unwrap();
        signal(pid, libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(300));
        let kept = via(&lab, &dir, "new.key", MB, 6);
        (d.join().unwrap(), added, removed, kept)
    });
    eprintln!("reload: added {added:?}, removed {removed:?}, kept {kept:?}, download {end:?}");
    assert!(
        added.ok && added.intact && added.bytes == MB,
        "an added gateway gets through: {added:?}"
    );
    assert!(
        !removed.ok
            && removed.bytes == 0
            && removed
                .stderr
                .contains("does not accept this gateway's key"),
        "a removed gateway is refused, and told so: {removed:?}"
    );
    assert!(
        kept.ok && kept.intact && kept.bytes == MB,
        "a broken keys file keeps the keys in force: {kept:?}"
    );
    assert!(
        end.intact && end.bytes == len && end.error.is_none(),
        "the transfer under way goes on intact: {end:?}"
    );
    let log = std::fs::read_to_string(dir.path("converter.log")).unwrap();
    assert!(log.contains("keys reloaded"), "{log}");
    assert!(
        log.contains("keys not reloaded, keeping the old ones"),
        "{log}"
    );
    drop(converter);
    drop(gateway);
}

/// `connect --via`: the converter killed mid-transfer makes it fail, with a message.
fn connect_via_fails_when_the_converter_dies(
    lab: &TestLab,
    dir: &TempDir,
    converter: Daemon,
    len: u64,
    at: u64,
) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", lab.info().netns(Role::Gw)])
        .arg(EXE)
        .args([
            "connect",
            "--via",
            CONVERTER,
            "--key",
            &dir.str("home.key"),
            PATTERN,
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut req = len.to_le_bytes().to_vec();
    req.extend_from_slice(&7u64.to_le_bytes());
    stdin.write_all(&req).unwrap();
    let mut out = child.stdout.take().unwrap();
    let progress = std::sync::Arc::new(AtomicU64::new(0));
    let count = std::sync::Arc::clone(&progress);
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        while let Ok(n @ 1..) = out.read(&mut buf) {
            got += n as u64;
            count.store(got, Ordering::Relaxed);
        }
        got
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.load(Ordering::Relaxed) < at && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = converter.pid();
    signal(pid, libc::SIGKILL);
    let status = child.wait().unwrap();
    let got = reader.join().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    drop(stdin);
    eprintln!("connect --via: {status}, {got} bytes, stderr: {err}");
    assert!(
        !status.success(),
        "connect --via fails when the converter dies"
    );
    assert!(got < len);
    assert!(err.contains("reset"), "it says why: {err}");
    wait_gone(pid);
    drop(converter);
}

/// Starts a gateway with key file `key` (optionally under `faketime OFFSET`) and returns its
/// log once it is ready.
fn gateway_log(
    lab: &TestLab,
    dir: &TempDir,
    key: &str,
    log: &str,
    clock: Option<&str>,
) -> (Daemon, String) {
    let key = dir.str(key);
    let mut args: Vec<String> = Vec::new();
    // libfaketime preloaded into mpbond itself (the `faketime` wrapper forks, and a signal to
    // it would not reach mpbond); only the wall clock is moved.
    let exe = match clock {
        Some(offset) => {
            let lib = libfaketime().expect("libfaketime");
            args.extend([
                format!("LD_PRELOAD={}", lib.display()),
                format!("FAKETIME={offset}"),
                "FAKETIME_DONT_FAKE_MONOTONIC=1".to_owned(),
                EXE.to_owned(),
            ]);
            "/usr/bin/env"
        }
        None => EXE,
    };
    args.extend(gateway_args(&key));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start(
        lab.info(),
        Role::Gw,
        Path::new(exe),
        &args,
        dir.path(log),
        "gateway ready",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let text = d.log_text();
    (d, text)
}

/// Where Debian's `faketime` package puts its library, if installed.
fn libfaketime() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.exists())
}

fn write_key(dir: &TempDir, file: &str, name: &str) -> String {
    use mpbond::convert::auth::{Key, Name, key_line};
    let line = key_line(&Name::new(name).unwrap(), &Key::generate().unwrap());
    write_secret(&dir.path(file), &line).unwrap();
    line.split_whitespace().nth(1).unwrap().to_owned()
}

/// A gateway's command line with key file `key` on lines dsl and lte, capturing `lan0`.
fn gateway_args(key: &str) -> Vec<String> {
    [
        "gateway",
        "--converter",
        CONVERTER,
        "--key",
        key,
        "--lan",
        "lan0",
        "--wan",
        "dsl",
        "--wan",
        "lte",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn a_wrong_key_name_or_clock_is_reported_at_start_in_words_a_user_can_act_on() {
    if skip_unless_root("a_wrong_key_name_or_clock_is_reported_at_start_in_words_a_user_can_act_on")
    {
        return;
    }
    let lab = TestLab::up(EXE, &LINES);
    let web = lab.info().netns(Role::Web).to_owned();
    let _pattern = PatternServer::start(&web, PATTERN.parse().unwrap(), Transport::Tcp).unwrap();
    let dir = TempDir::new("key");
    let mut secrets = vec![write_key(&dir, "home.key", "home")];
    std::fs::copy(dir.path("home.key"), dir.path("converter.keys")).unwrap();
    secrets.push(write_key(&dir, "wrong.key", "home"));
    secrets.push(write_key(&dir, "stranger.key", "stranger"));
    let converter = start_converter(&lab, &dir, "converter.log", &[]);

    let (_, ok) = gateway_log(&lab, &dir, "home.key", "right.log", None);
    assert!(
        ok.contains("the converter accepts this gateway's key"),
        "{ok}"
    );
    assert!(ok.contains("key=\"accepted\""), "{ok}");

    for (key, log) in [("wrong.key", "wrong.log"), ("stranger.key", "stranger.log")] {
        let (mut gw, text) = gateway_log(&lab, &dir, key, log, None);
        let line = text
            .lines()
            .find(|l| l.contains("ERROR"))
            .unwrap_or_else(|| panic!("{key}: no ERROR at start:\n{text}"));
        assert!(
            line.contains("does not accept this gateway's key") && line.contains(key),
            "{key}: {line}"
        );
        assert!(text.contains("key=\"refused\""), "{text}");
        // A LAN connection is reset, and said so at ERROR.
        let end = download_to_the_end(&lab, PATTERN, MB, 1);
        assert_eq!(end.error, Some(io::ErrorKind::ConnectionReset), "{end:?}");
        assert!(gw.stop());
        let text = gw.log_text();
        assert!(
            text.contains("ERROR") && text.contains("LAN connections refused"),
            "{text}"
        );
    }

    if libfaketime().is_some() {
        for (offset, word) in [("+2m", "ahead"), ("-2m", "behind")] {
            let (mut gw, text) = gateway_log(&lab, &dir, "home.key", "clock.log", Some(offset));
            assert!(gw.stop());
            let line = text.lines().find(|l| l.contains("ERROR")).unwrap_or("");
            assert!(
                line.contains("clock") && line.contains(word) && line.contains("NTP"),
                "clock {offset}: {text}"
            );
        }
    } else {
        eprintln!("SKIPPED the clock part: no faketime (apt install faketime)");
    }
    drop(converter);
    // No key material in any log.
    for entry in std::fs::read_dir(&dir.0).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            for s in &secrets {
                assert!(
                    !text.contains(s.as_str()),
                    "a key in {}",
                    entry.path().display()
                );
            }
        }
    }
}

/// Everything of a host that mpbond may change: sysctls, nftables, rules, routes, MPTCP
/// endpoints and limits, interfaces, and mpbond's runtime files.
fn snapshot(lab: &TestLab, role: Role) -> String {
    let script = "sysctl net.mptcp net.ipv4.ip_forward net.ipv4.tcp_fastopen net.ipv4.conf net.ipv6.conf 2>/dev/null | sort; \
                  echo '# nft'; nft list ruleset; \
                  echo '# rules'; ip rule; ip -6 rule; \
                  echo '# routes'; ip route show table all; ip -6 route show table all | grep -v -e expires -e cache; \
                  echo '# mptcp'; ip mptcp endpoint; ip mptcp limits; \
                  echo '# links'; ip -o link | cut -d: -f2; \
                  echo '# files'; ls /run/mpbond | grep -v '^lab$'";
    let out = lab.cmd(role, "sh").args(["-c", script]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the runtime files named for `role`'s namespace inode that nobody holds.
fn remove_stale_files_of(lab: &TestLab, role: Role) {
    use std::os::unix::fs::MetadataExt as _;
    let ino = std::fs::metadata(format!("/run/netns/{}", lab.info().netns(role)))
        .unwrap()
        .ino();
    for name in [
        format!("wan-{ino}.lock"),
        format!("host-{ino}.json"),
        format!("user-forwarding-{ino}.state"),
    ] {
        let _ = std::fs::remove_file(Path::new("/run/mpbond").join(name));
    }
}

/// Lines of `a` and `b` that differ, for a failure message.
fn diff(a: &str, b: &str) -> String {
    let only = |x: &str, y: &str| -> Vec<String> {
        x.lines()
            .filter(|l| !y.lines().any(|m| m == *l))
            .map(str::to_owned)
            .collect()
    };
    format!(
        "before only: {:?}\nafter only: {:?}",
        only(a, b),
        only(b, a)
    )
}

/// Starts `args` in host `role` and waits until `ready(pid)` holds (at most 20 s).
fn start_until(
    lab: &TestLab,
    role: Role,
    args: &[&str],
    stdin: Stdio,
    ready: impl Fn(u32) -> bool,
) -> Child {
    let child = lab
        .cmd(role, EXE)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready(child.id()) {
        assert!(Instant::now() < deadline, "{args:?} not ready in 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    // What remains of its setup (a table after a rule, say) takes a moment more.
    std::thread::sleep(Duration::from_millis(500));
    child
}

/// For `role`'s daemon: the host as before its first start, after a `kill -9` and one more
/// start and stop. `changed(snapshot, pid)` is true once daemon `pid` has set up.
fn assert_restored_after_a_crash(
    lab: &TestLab,
    role: Role,
    what: &str,
    args: &[&str],
    changed: impl Fn(&str, u32) -> bool,
) {
    let before = snapshot(lab, role);
    let mut first = start_until(lab, role, args, Stdio::piped(), |pid| {
        changed(&snapshot(lab, role), pid)
    });
    signal(first.id(), libc::SIGKILL);
    first.wait().unwrap();
    let left = snapshot(lab, role);
    eprintln!("{what}: a kill -9 left:\n{}", diff(&before, &left));
    let mut second = start_until(lab, role, args, Stdio::piped(), |pid| {
        changed(&snapshot(lab, role), pid)
    });
    signal(second.id(), libc::SIGTERM);
    let status = second.wait().unwrap();
    let after = snapshot(lab, role);
    assert!(
        before == after,
        "{what} ({status}): the host differs:\n{}",
        diff(&before, &after)
    );
}

/// A lab and a key for the crash test, without files an earlier test's crash left: a
/// namespace may get the inode of one deleted before, and with it that one's files; and
/// `/run/mpbond` is shared by every namespace.
fn crash_lab() -> (TestLab, TempDir) {
    let lab = TestLab::up(EXE, &LINES);
    for role in [Role::Gw, Role::Vps] {
        remove_stale_files_of(&lab, role);
    }
    // Status sockets of daemons other tests killed, and files of namespaces that are gone (the
    // files are the machine's, not a lab's; the daemons remove them too, which must not count).
    mpbond::status::remove_stale_sockets();
    mpbond::host::remove_files_of_dead_namespaces(mpbond::host::RUN_FILES);
    let dir = TempDir::new("crash");
    write_key(&dir, "home.key", "home");
    std::fs::copy(dir.path("home.key"), dir.path("converter.keys")).unwrap();
    (lab, dir)
}

#[test]
fn after_a_kill_9_the_next_run_leaves_the_host_exactly_as_before() {
    if skip_unless_root("after_a_kill_9_the_next_run_leaves_the_host_exactly_as_before") {
        return;
    }
    let (lab, dir) = crash_lab();
    let vps = lab.info().netns(Role::Vps).to_owned();
    let _mptcp_peer =
        PatternServer::start(&vps, "198.51.100.1:5000".parse().unwrap(), Transport::Mptcp).unwrap();
    let _tcp_peer =
        PatternServer::start(&vps, "198.51.100.1:5001".parse().unwrap(), Transport::Tcp).unwrap();

    let keys = dir.str("converter.keys");
    assert_restored_after_a_crash(
        &lab,
        Role::Vps,
        "converter",
        &[
            "converter",
            "--listen",
            CONVERTER,
            "--keys",
            &keys,
            "--announce",
            "198.51.100.1",
        ],
        |s, pid| s.contains("mpbond_conv_7000") && s.contains(&format!("converter-{pid}.sock")),
    );
    let gateway = gateway_args(&dir.str("home.key"));
    let gateway: Vec<&str> = gateway.iter().map(String::as_str).collect();
    assert_restored_after_a_crash(&lab, Role::Gw, "gateway", &gateway, |s, pid| {
        s.contains("table inet mpbond") && s.contains(&format!("gateway-{pid}.sock"))
    });
    let kernel_pm = [&gateway[..], &["--pm", "kernel"]].concat();
    assert_restored_after_a_crash(
        &lab,
        Role::Gw,
        "gateway with the kernel's path manager",
        &kernel_pm,
        |s, pid| s.contains(&format!("gateway-{pid}.sock")) && s.contains("table inet mpbond"),
    );
    assert_restored_after_a_crash(
        &lab,
        Role::Gw,
        "connect --wan",
        &[
            "connect",
            "--wan",
            "dsl",
            "--wan",
            "lte",
            "198.51.100.1:5000",
        ],
        |s, pid| s.contains(&format!("connect-{pid}.sock")) && s.contains("lookup 4202"),
    );
    assert_restored_after_a_crash(
        &lab,
        Role::Gw,
        "connect --stack user",
        &[
            "connect",
            "--stack",
            "user",
            "--no-mptcp",
            "--wan",
            "dsl",
            "198.51.100.1:5001",
        ],
        |s, _| s.contains("mpbu") && s.contains("lookup"),
    );
}

/// Reads the converter's Prometheus metric `name` (in the vps host).
fn metric(lab: &TestLab, name: &str) -> f64 {
    let text = netns::in_netns(lab.info().netns(Role::Vps), || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9477").unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut t = String::new();
        s.read_to_string(&mut t).unwrap();
        t
    })
    .unwrap();
    text.lines()
        .find(|l| l.starts_with(&format!("mpbond_{name} ")))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}:\n{text}"))
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// From host netns `ns`, opens `n` connections to the converter that send nothing, from each
/// of `sources` in turn, holds them 3 s, and does it again until `stop`; returns how many waves
/// it sent.
fn flood(ns: &str, sources: &[std::net::Ipv4Addr], n: usize, stop: &AtomicBool) -> usize {
    netns::in_netns(ns, || {
        let conv: SocketAddr = CONVERTER.parse().unwrap();
        let mut waves = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut held = Vec::with_capacity(n);
            for i in 0..n {
                let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                let from = SocketAddr::from((sources[i % sources.len()], 0));
                sock.bind(&from.into()).unwrap();
                sock.set_nonblocking(true).unwrap();
                let _ = sock.connect(&conv.into());
                held.push(sock);
            }
            waves += 1;
            std::thread::sleep(Duration::from_secs(3));
        }
        waves
    })
    .unwrap()
}

/// The attack of issue 12: a host holds 3000 connections to the converter that send nothing,
/// reopened in waves, while the gateway starts a 4 MB download every second. The host attacks
/// from 40 addresses, and the converter keeps at most 512 unauthenticated connections, so both
/// the per-source limit and the budget are met (40 × 32 > 512).
#[test]
fn idle_connections_in_waves_never_lock_the_gateway_out() {
    const CONNECTIONS: usize = 3000;
    const SECONDS: u64 = 30;
    if skip_unless_root("idle_connections_in_waves_never_lock_the_gateway_out") {
        return;
    }
    let _ = mpbond::sys::raise_nofile_limit();
    let lab = TestLab::up(EXE, &LINES);
    let web = lab.info().netns(Role::Web).to_owned();
    let _pattern = PatternServer::start(&web, PATTERN.parse().unwrap(), Transport::Tcp).unwrap();
    let dir = TempDir::new("lockout");
    let sources: Vec<std::net::Ipv4Addr> = (100..140u8)
        .map(|i| std::net::Ipv4Addr::new(203, 0, 113, i))
        .collect();
    for a in &sources {
        let ok = lab
            .cmd(Role::Web, "ip")
            .args(["addr", "add", &format!("{a}/24"), "dev", "eth0"])
            .status()
            .unwrap();
        assert!(ok.success(), "address {a} on the web host");
    }
    write_key(&dir, "home.key", "home");
    std::fs::copy(dir.path("home.key"), dir.path("converter.keys")).unwrap();
    let keys = dir.str("converter.keys");
    let converter = Daemon::start(
        lab.info(),
        Role::Vps,
        Path::new(EXE),
        &[
            "converter",
            "--listen",
            CONVERTER,
            "--keys",
            &keys,
            "--metrics",
            "127.0.0.1:9477",
            "--max-handshakes",
            "512",
        ],
        dir.path("converter.log"),
        "converter ready",
    )
    .unwrap();
    let (gateway, _) = gateway_log(&lab, &dir, "home.key", "gateway.log", None);
    let rss_before = rss_kib(converter.pid());
    let stop = AtomicBool::new(false);
    let (downloads, waves, rss_max) = std::thread::scope(|s| {
        let attacker = s.spawn(|| flood(&web, &sources, CONNECTIONS, &stop));
        let monitor = s.spawn(|| {
            let mut max = 0;
            while !stop.load(Ordering::Relaxed) {
                max = max.max(rss_kib(converter.pid()));
                std::thread::sleep(Duration::from_millis(250));
            }
            max
        });
        // Let the first wave arrive before the gateway's downloads start.
        std::thread::sleep(Duration::from_secs(1));
        let mut results = Vec::new();
        let t0 = Instant::now();
        let mut clients = Vec::new();
        for i in 0..SECONDS {
            let at = Duration::from_secs(i);
            std::thread::sleep(at.saturating_sub(t0.elapsed()));
            let lab = &lab;
            clients.push(s.spawn(move || (i, download_to_the_end(lab, PATTERN, 4 * MB, 100 + i))));
        }
        for c in clients {
            results.push(c.join().unwrap());
        }
        stop.store(true, Ordering::Relaxed);
        (results, attacker.join().unwrap(), monitor.join().unwrap())
    });
    let pushed = metric(&lab, "unauthenticated_pushed_out_total");
    eprintln!(
        "{waves} waves of {CONNECTIONS} idle connections; converter RSS {rss_before} KiB before, at most {rss_max} KiB during; {pushed} unauthenticated connections pushed out"
    );
    for (i, end) in &downloads {
        assert!(
            end.error.is_none() && end.intact && end.bytes == 4 * MB,
            "download {i} during the attack: {end:?}\nconverter:\n{}\ngateway:\n{}",
            converter.problems(),
            gateway.problems()
        );
    }
    assert!(waves >= 5, "{waves} waves");
    assert!(pushed > 0.0, "the attack was met");
    assert!(
        rss_max < 256 * 1024,
        "converter memory bounded: {rss_max} KiB"
    );
    let log = converter.log_text();
    let lines = log.lines().count();
    assert!(lines < 200, "the log is not flooded: {lines} lines");
}

/// Random bytes, a few at a time, from a xorshift generator.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Sends `bytes` to `addr` from the calling thread's namespace, then its FIN, and reads until
/// the other side ends the connection: `true` if it did within 5 s (an answer and a close, or a
/// reset).
fn ends_cleanly(addr: SocketAddr, bytes: &[u8]) -> bool {
    let Ok(mut c) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)) else {
        return false;
    };
    // Shorter than the converter's handshake timeout and the SOCKS5 greeting timeout (10 s):
    // only an answer to the input (or its end) ends the connection in time.
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(bytes);
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut sink = Vec::new();
    match c.read_to_end(&mut sink) {
        Ok(_) => true,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::TimedOut,
    }
}

/// A SOCKS5 CONNECT to the pattern server through `socks`, then `len` bytes of pattern `seed`.
fn socks_download(socks: SocketAddr, len: u64, seed: u64) -> u64 {
    let mut c = std::net::TcpStream::connect_timeout(&socks, Duration::from_secs(10)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(&[5, 1, 0]).unwrap();
    let mut r = [0u8; 2];
    c.read_exact(&mut r).unwrap();
    assert_eq!(r, [5, 0], "no authentication on loopback");
    let p: SocketAddr = PATTERN.parse().unwrap();
    let SocketAddr::V4(p) = p else { unreachable!() };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&p.ip().octets());
    req.extend_from_slice(&p.port().to_be_bytes());
    c.write_all(&req).unwrap();
    let mut reply = [0u8; 10];
    c.read_exact(&mut reply).unwrap();
    assert_eq!(reply[1], 0, "SOCKS5 success");
    let mut ask = len.to_le_bytes().to_vec();
    ask.extend_from_slice(&seed.to_le_bytes());
    c.write_all(&ask).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    let mut want = vec![0u8; got.len()];
    failover::fill(seed, 0, &mut want);
    assert_eq!(got, want, "the pattern");
    got.len() as u64
}

/// Random bytes and mangled Convert messages to the converter, and random bytes to the
/// gateway's SOCKS5 port, each get an answer or a close, and real clients are served after.
#[test]
fn random_bytes_to_the_converter_and_the_socks_port_end_cleanly() {
    use mpbond::convert::auth::Signer;
    use mpbond::convert::client;
    if skip_unless_root("random_bytes_to_the_converter_and_the_socks_port_end_cleanly") {
        return;
    }
    let lab = TestLab::up(EXE, &LINES);
    let web = lab.info().netns(Role::Web).to_owned();
    let _pattern = PatternServer::start(&web, PATTERN.parse().unwrap(), Transport::Tcp).unwrap();
    let dir = TempDir::new("noise");
    let (gateway, converter) = start_bonding(
        &lab,
        EXE,
        &dir.0,
        &["dsl", "lte"],
        &["--socks", "127.0.0.1:1080"],
    );
    let signer =
        Signer::from_key_file_text(&std::fs::read_to_string(dir.path("home.key")).unwrap())
            .unwrap();
    let valid = client::connect_message(PATTERN.parse().unwrap(), &signer, false)
        .unwrap()
        .emit()
        .unwrap();
    let conv: SocketAddr = CONVERTER.parse().unwrap();
    let socks: SocketAddr = "127.0.0.1:1080".parse().unwrap();
    netns::in_netns(lab.info().netns(Role::Gw), || {
        for seed in 1..=40u64 {
            let len = usize::try_from(seed * 37 % 1500).unwrap();
            let mut mangled = valid.clone();
            let at = usize::try_from(seed).unwrap() % mangled.len();
            mangled[at] ^= u8::try_from(seed % 255).unwrap() | 1;
            mangled.truncate(mangled.len() - usize::try_from(seed % 3).unwrap());
            assert!(
                ends_cleanly(conv, &noise(seed, len)),
                "converter, noise {seed}"
            );
            assert!(ends_cleanly(conv, &mangled), "converter, mangled {seed}");
            assert!(
                ends_cleanly(socks, &noise(seed, len)),
                "SOCKS5, noise {seed}"
            );
        }
        assert_eq!(socks_download(socks, MB, 3), MB, "SOCKS5 still serves");
    })
    .unwrap();
    let end = download_to_the_end(&lab, PATTERN, MB, 4);
    assert!(
        end.error.is_none() && end.intact && end.bytes == MB,
        "the gateway still serves: {end:?}\n{}",
        converter.problems()
    );
    drop(gateway);
}
