//! `mpbond connect` and `mpbond listen` against the kernel's own MPTCP and plain TCP peers on
//! loopback: MPTCP when both sides speak it, a warning and plain TCP otherwise, half-close both
//! ways, and the exit status telling how it went. Runs as any user.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mpbond::stack::kernel;
use socket2::{Domain, Protocol, Socket, Type};

const EXE: &str = env!("CARGO_BIN_EXE_mpbond");
const IPPROTO_MPTCP: i32 = 262;

fn mptcp_available() -> bool {
    Socket::new(
        Domain::IPV4,
        Type::STREAM,
        Some(Protocol::from(IPPROTO_MPTCP)),
    )
    .is_ok()
}

/// A listener on an ephemeral loopback port: MPTCP (like any program that asks the kernel for
/// it) or plain TCP.
fn peer_listener(mptcp: bool) -> TcpListener {
    let proto = mptcp.then_some(Protocol::from(IPPROTO_MPTCP));
    let s = Socket::new(Domain::IPV4, Type::STREAM, proto).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(8).unwrap();
    s.into()
}

/// Deterministic test bytes.
fn payload(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| u8::try_from((i * 31 + usize::from(salt)) % 251).unwrap())
        .collect()
}

/// Starts `mpbond args` and feeds `input` to its stdin from a thread, then closes it.
fn spawn_mpbond(args: &[&str], input: Vec<u8>) -> (Child, std::thread::JoinHandle<()>) {
    let mut child = Command::new(EXE)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        // Dropping stdin closes it: mpbond sends its FIN.
    });
    (child, feeder)
}

/// Waits for `child` (at most 30 s) and returns its output.
fn finish(mut child: Child, feeder: std::thread::JoinHandle<()>) -> Output {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mpbond did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = feeder.join();
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// Exchanges data with the peer side of a connection: sends `send`, half-closes, reads to EOF.
fn peer_exchange(mut s: TcpStream, send: &[u8]) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let send = send.to_vec();
    let writer = std::thread::spawn(move || {
        w.write_all(&send).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    got
}

fn check(test: &str) -> bool {
    if mptcp_available() {
        return true;
    }
    eprintln!("SKIPPED {test}: this kernel has no MPTCP (net.mptcp.enabled=0 or no CONFIG_MPTCP)");
    false
}

/// `mpbond connect` to a peer listening with `mptcp`: data both ways, and whether the accepted
/// connection speaks MPTCP.
fn connect_to(mptcp_peer: bool) -> (Output, bool) {
    let l = peer_listener(mptcp_peer);
    let addr = l.local_addr().unwrap().to_string();
    let up = payload(1_000_000, 1);
    let down = payload(700_000, 2);
    let (child, feeder) = spawn_mpbond(&["connect", &addr], up.clone());
    let (s, _) = l.accept().unwrap();
    let is_mptcp = kernel::is_mptcp(&s);
    let got = peer_exchange(s, &down);
    let out = finish(child, feeder);
    assert!(got == up, "peer got {} of {} bytes", got.len(), up.len());
    assert!(
        out.stdout == down,
        "connect printed {} of {} bytes",
        out.stdout.len(),
        down.len()
    );
    (out, is_mptcp)
}

#[test]
fn connect_speaks_mptcp_with_a_kernel_mptcp_peer() {
    if !check("connect_speaks_mptcp_with_a_kernel_mptcp_peer") {
        return;
    }
    let (out, is_mptcp) = connect_to(true);
    assert!(out.status.success(), "{out:?}");
    assert!(is_mptcp, "the peer's socket fell back to TCP");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("WARN"), "no warning expected: {err}");
}

#[test]
fn connect_falls_back_to_tcp_with_a_warning_against_a_plain_tcp_peer() {
    if !check("connect_falls_back_to_tcp_with_a_warning_against_a_plain_tcp_peer") {
        return;
    }
    let (out, is_mptcp) = connect_to(false);
    assert!(out.status.success(), "{out:?}");
    assert!(!is_mptcp);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not multipath: the peer answered without MPTCP"),
        "a fallback is said, with its cause: {err}"
    );
}

/// `mpbond listen` on a free port, and a peer connecting with `mptcp`.
fn listen_for(mptcp_peer: bool) -> (Output, bool) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let down = payload(900_000, 3);
    let up = payload(500_000, 4);
    let (child, feeder) = spawn_mpbond(&["listen", &addr.to_string()], down.clone());
    // Wait for the listener.
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let proto = mptcp_peer.then_some(Protocol::from(IPPROTO_MPTCP));
        let s = Socket::new(Domain::IPV4, Type::STREAM, proto).unwrap();
        if s.connect(&addr.into()).is_ok() {
            break TcpStream::from(s);
        }
        assert!(Instant::now() < deadline, "mpbond listen did not listen");
        std::thread::sleep(Duration::from_millis(20));
    };
    let is_mptcp = kernel::is_mptcp(&s);
    let got = peer_exchange(s, &up);
    let out = finish(child, feeder);
    assert!(
        got == down,
        "peer got {} of {} bytes",
        got.len(),
        down.len()
    );
    assert!(
        out.stdout == up,
        "listen printed {} of {} bytes",
        out.stdout.len(),
        up.len()
    );
    (out, is_mptcp)
}

#[test]
fn listen_speaks_mptcp_with_a_kernel_mptcp_client() {
    if !check("listen_speaks_mptcp_with_a_kernel_mptcp_client") {
        return;
    }
    let (out, is_mptcp) = listen_for(true);
    assert!(out.status.success(), "{out:?}");
    assert!(is_mptcp);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("WARN"), "no warning expected: {err}");
}

#[test]
fn listen_serves_a_plain_tcp_client_with_a_warning() {
    if !check("listen_serves_a_plain_tcp_client_with_a_warning") {
        return;
    }
    let (out, is_mptcp) = listen_for(false);
    assert!(out.status.success(), "{out:?}");
    assert!(!is_mptcp);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plain TCP"), "a fallback is said: {err}");
}

#[test]
fn connect_to_a_closed_port_fails_with_one_line_and_a_nonzero_status() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = Command::new(EXE)
        .args(["connect", &closed])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn a_peer_reset_makes_connect_fail() {
    if !check("a_peer_reset_makes_connect_fail") {
        return;
    }
    let l = peer_listener(true);
    let addr = l.local_addr().unwrap().to_string();
    let (child, feeder) = spawn_mpbond(&["connect", &addr], Vec::new());
    let (s, _) = l.accept().unwrap();
    // Linger 0: close sends a reset.
    Socket::from(s).set_linger(Some(Duration::ZERO)).unwrap();
    let out = finish(child, feeder);
    assert!(!out.status.success(), "a reset is a failure: {out:?}");
}
