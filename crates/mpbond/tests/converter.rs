//! The converter, in process, on loopback: what a client sends decides what it gets back
//! (RFC 8803 §4.2 and mpbond's authentication), and one bad client never stops the others.
//!
//! These run as any user: traffic stays on 127.0.0.1, and the policy lets the converter reach
//! loopback only where a test says so.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mpbond::convert::auth::{Auth, Key, Name, Signer};
use mpbond::convert::client::{self, ClientError, ClientOptions, unix_now};
use mpbond::convert::message::{Connect, ErrorCode, Message};
use mpbond::converter::{Config, Converter, Policy};
use mpbond::stack::kernel::{self, ListenOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const REPLY: Duration = Duration::from_secs(10);

fn key(b: u8) -> Key {
    Key::from_bytes([b; 32])
}

fn signer(name: &str, k: u8) -> Signer {
    Signer::new(Name::new(name).unwrap(), key(k))
}

/// A converter serving gateway `home` (key byte 1) on an ephemeral loopback port.
struct TestConverter {
    addr: SocketAddr,
    conv: Arc<Converter>,
}

impl TestConverter {
    fn start(policy: Policy, tune: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::new(([127, 0, 0, 1], 0).into(), "/nonexistent".into());
        config.policy = policy;
        config.admission.timeout = Duration::from_secs(2);
        config.fast_open = false;
        tune(&mut config);
        let l = kernel::listen(
            config.listen,
            &ListenOptions {
                mptcp: true,
                ..ListenOptions::default()
            },
        )
        .unwrap();
        let addr = l.listener.local_addr().unwrap();
        let conv = Arc::new(Converter::new(
            config,
            vec![(Name::new("home").unwrap(), key(1))],
        ));
        let c = Arc::clone(&conv);
        tokio::spawn(async move {
            while let Ok((s, peer)) = l.listener.accept().await {
                let c = Arc::clone(&c);
                tokio::spawn(
                    async move { c.handle(mpbond::stack::AnyConn::Kernel(s), peer).await },
                );
            }
        });
        Self { addr, conv }
    }

    fn options(&self) -> ClientOptions {
        let mut o = ClientOptions::new(self.addr);
        o.reply_timeout = REPLY;
        o
    }
}

fn loopback_allowed() -> Policy {
    Policy {
        allow: vec!["127.0.0.0/8".parse().unwrap()],
        deny: Vec::new(),
    }
}

/// An echo server on loopback that counts the connections it accepted.
async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Relaxed);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, accepted)
}

/// Opens a converted connection to `dest` as `who` and checks that `data` echoes back whole.
async fn echo_through(conv: &TestConverter, who: &Signer, dest: SocketAddr, data: &[u8]) {
    let up = client::open(dest, who, &conv.options()).await.unwrap();
    let reply = client::read_reply(&up.stream, REPLY).await.unwrap();
    assert!(
        reply.extended_tcp_header.is_some(),
        "success carries an Extended TCP Header TLV: {reply:?}"
    );
    let mut s = up.stream.into_kernel().unwrap();
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let recv = r.read_to_end(&mut got);
    let ((), n) = tokio::join!(send, recv);
    n.unwrap();
    assert!(
        got == data,
        "echo differs: {} of {} bytes",
        got.len(),
        data.len()
    );
}

/// What the converter answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Answer {
    /// An Extended TCP Header TLV: connected.
    Connected,
    /// An Error TLV.
    Error(ErrorCode),
    /// A close without a message.
    Closed,
}

/// Sends `bytes` as the whole of what a client says and returns the converter's answer.
async fn raw_exchange(conv: &TestConverter, bytes: &[u8]) -> Answer {
    let mut s = TcpStream::connect(conv.addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    // Half-close: a converter waiting for more bytes than were sent sees the end.
    s.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(REPLY, s.read_to_end(&mut answer)).await;
    let _ = read.expect("the converter answers or closes in time");
    if answer.is_empty() {
        return Answer::Closed;
    }
    let len = mpbond::convert::message::message_len(&answer).expect("a Convert message");
    let msg = Message::parse(&answer[..len]).expect("a well-formed answer");
    match (&msg.error, &msg.extended_tcp_header) {
        (Some(e), None) => Answer::Error(e.code),
        (None, Some(_)) => Answer::Connected,
        _ => panic!("an answer is an error or a success: {msg:?}"),
    }
}

/// Expects the converter to answer `expected` to `bytes`.
async fn expect_error(conv: &TestConverter, bytes: &[u8], expected: ErrorCode) {
    assert_eq!(raw_exchange(conv, bytes).await, Answer::Error(expected));
}

fn signed(dest: SocketAddr, who: &Signer) -> Vec<u8> {
    client::connect_message(dest, who, false)
        .unwrap()
        .emit()
        .unwrap()
}

#[tokio::test]
async fn an_authenticated_gateway_reaches_an_allowed_destination() {
    let conv = TestConverter::start(loopback_allowed(), |_| {});
    let (dest, accepted) = echo_server().await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    echo_through(&conv, &signer("home", 1), dest, &data).await;
    assert_eq!(accepted.load(Relaxed), 1);
    let s = &conv.conv.stats;
    assert_eq!(s.accepted.load(Relaxed), 1);
    assert_eq!(s.auth_failures.load(Relaxed), 0);
}

#[tokio::test]
async fn wrong_key_unknown_name_missing_or_stale_auth_get_not_authorized() {
    let conv = TestConverter::start(loopback_allowed(), |_| {});
    let (dest, accepted) = echo_server().await;
    let na = ErrorCode::NotAuthorized;
    // Wrong key for a known name.
    expect_error(&conv, &signed(dest, &signer("home", 2)), na).await;
    // A name the converter does not know.
    expect_error(&conv, &signed(dest, &signer("stranger", 1)), na).await;
    // No authentication TLV at all.
    let bare = Message {
        connect: Some(Connect::new(dest)),
        ..Message::default()
    };
    expect_error(&conv, &bare.emit().unwrap(), na).await;
    // Right key, but outside the ±60 s clock window.
    for skew in [-120i64, 120] {
        let connect = Connect::new(dest);
        let when = unix_now().checked_add_signed(skew).unwrap();
        let auth = Auth::sign(
            &key(1),
            &Name::new("home").unwrap(),
            when,
            [7; 16],
            &connect,
        );
        let msg = Message {
            connect: Some(connect),
            auth: Some(auth),
            ..Message::default()
        };
        expect_error(&conv, &msg.emit().unwrap(), na).await;
    }
    // The authentication covers the Connect TLV: the destination cannot be changed.
    let mut msg = client::connect_message(dest, &signer("home", 1), false).unwrap();
    let mut other = dest;
    other.set_port(dest.port() ^ 1);
    msg.connect = Some(Connect::new(other));
    expect_error(&conv, &msg.emit().unwrap(), na).await;

    assert_eq!(
        accepted.load(Relaxed),
        0,
        "no refused client reached the destination"
    );
    assert_eq!(conv.conv.stats.auth_failures.load(Relaxed), 6);
    // And the converter keeps serving the real gateway.
    echo_through(&conv, &signer("home", 1), dest, b"still here").await;
}

#[tokio::test]
async fn a_replayed_authentication_is_refused() {
    let conv = TestConverter::start(loopback_allowed(), |_| {});
    let (dest, accepted) = echo_server().await;
    let once = signed(dest, &signer("home", 1));
    // The original goes through (the echo server closes when we do).
    assert_eq!(raw_exchange(&conv, &once).await, Answer::Connected);
    assert_eq!(accepted.load(Relaxed), 1);
    // The same bytes again, from an eavesdropper: refused, destination not contacted.
    expect_error(&conv, &once, ErrorCode::NotAuthorized).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(accepted.load(Relaxed), 1);
}

#[tokio::test]
async fn internal_destinations_are_refused_by_default() {
    let conv = TestConverter::start(Policy::default(), |_| {});
    let (dest, accepted) = echo_server().await;
    let who = signer("home", 1);
    for d in [
        dest,
        "10.1.2.3:80".parse().unwrap(),
        "192.168.1.1:80".parse().unwrap(),
        "100.64.0.1:80".parse().unwrap(),
        "169.254.169.254:80".parse().unwrap(),
        "[::1]:80".parse().unwrap(),
        "[::ffff:127.0.0.1]:80".parse().unwrap(),
        "[fd00::1]:80".parse().unwrap(),
        "224.0.0.1:80".parse().unwrap(),
    ] {
        let up = client::open(d, &who, &conv.options()).await.unwrap();
        match client::read_reply(&up.stream, REPLY).await {
            Err(ClientError::Refused(e)) => assert_eq!(e.code, ErrorCode::NotAuthorized, "{d}"),
            other => panic!("{d}: expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(accepted.load(Relaxed), 0);
    assert_eq!(conv.conv.stats.refused_destinations.load(Relaxed), 9);
}

#[tokio::test]
async fn an_unreachable_destination_gets_a_reset_or_unreachable_error() {
    let conv = TestConverter::start(loopback_allowed(), |_| {});
    // A port nobody listens on: the kernel answers the SYN with a reset.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let up = client::open(closed, &signer("home", 1), &conv.options())
        .await
        .unwrap();
    match client::read_reply(&up.stream, REPLY).await {
        Err(ClientError::Refused(e)) => assert_eq!(e.code, ErrorCode::ConnectionReset),
        other => panic!("expected error 96, got {other:?}"),
    }
    assert_eq!(conv.conv.stats.connect_failures.load(Relaxed), 1);
}

#[tokio::test]
async fn a_gateway_over_its_connection_limit_gets_resource_exceeded() {
    let conv = TestConverter::start(loopback_allowed(), |c| c.max_per_gateway = 2);
    let (dest, _) = echo_server().await;
    let who = signer("home", 1);
    let mut held = Vec::new();
    for _ in 0..2 {
        let up = client::open(dest, &who, &conv.options()).await.unwrap();
        client::read_reply(&up.stream, REPLY).await.unwrap();
        held.push(up);
    }
    let up = client::open(dest, &who, &conv.options()).await.unwrap();
    match client::read_reply(&up.stream, REPLY).await {
        Err(ClientError::Refused(e)) => assert_eq!(e.code, ErrorCode::ResourceExceeded),
        other => panic!("expected error 64, got {other:?}"),
    }
    // A slot frees when a connection ends.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    echo_through(&conv, &who, dest, b"a freed slot").await;
}

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

/// Mutates a valid message: flipped bits, changed lengths, truncation, garbage TLVs.
fn mutate(valid: &[u8], rng: &mut XorShift) -> Vec<u8> {
    let mut m = valid.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(m.len());
                m[i] = u8::try_from(rng.next() & 0xff).unwrap();
            }
            2 => m.truncate(rng.below(m.len()).max(1)),
            3 if m.len() > 1 => {
                // A header length that disagrees with what follows.
                m[1] = u8::try_from(rng.next() & 0xff).unwrap();
            }
            3 => {}
            _ => {
                let extra = rng.below(12) * 4;
                m.extend((0..extra).map(|_| u8::try_from(rng.next() & 0xff).unwrap()));
            }
        }
    }
    m
}

#[tokio::test]
async fn malformed_messages_get_an_error_or_a_close_and_others_are_still_served() {
    let conv = TestConverter::start(loopback_allowed(), |c| {
        c.admission.timeout = Duration::from_millis(300);
    });
    let (dest, accepted) = echo_server().await;
    let valid = signed(dest, &signer("home", 1));
    let seed = std::env::var("MPBOND_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let mut rng = XorShift(seed | 1);
    let mut answers = std::collections::HashMap::<Answer, usize>::new();
    let mut served = 0;
    for i in 0..300 {
        // Every tenth case, a real gateway must still get through.
        if i % 10 == 0 {
            echo_through(&conv, &signer("home", 1), dest, b"ping").await;
            served += 1;
        }
        let bad = mutate(&valid, &mut rng);
        if bad == valid {
            continue;
        }
        let got = raw_exchange(&conv, &bad).await;
        if let Answer::Error(code) = got {
            assert!(
                matches!(
                    code,
                    ErrorCode::UnsupportedVersion
                        | ErrorCode::MalformedMessage
                        | ErrorCode::UnsupportedMessage
                        | ErrorCode::NotAuthorized
                        | ErrorCode::UnsupportedTcpOption
                ),
                "case {i} (seed {seed}): unexpected answer {code:?} to {bad:02x?}"
            );
        }
        *answers.entry(got).or_default() += 1;
    }
    eprintln!("answers to 300 mutated messages (seed {seed}): {answers:?}");
    // A mutant is still valid when only bytes after the message changed (they are the first
    // bytes of the stream, relayed); all mutants share one nonce, so the replay cache lets at
    // most one of them through. Everything else reaching the destination is the real gateway.
    let connected = answers.get(&Answer::Connected).copied().unwrap_or(0);
    assert!(connected <= 1, "seed {seed}: {answers:?}");
    // The echo server counts its accepts in a task of its own: give it a moment.
    for _ in 0..100 {
        if accepted.load(Relaxed) >= served + connected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(accepted.load(Relaxed), served + connected, "seed {seed}");
    assert!(
        answers.contains_key(&Answer::Error(ErrorCode::MalformedMessage))
            && answers.contains_key(&Answer::Error(ErrorCode::NotAuthorized)),
        "the mutations cover parse and authentication failures: {answers:?}"
    );
}

#[test]
fn keygen_prints_a_key_line_that_signs_and_refuses_bad_names() {
    let exe = env!("CARGO_BIN_EXE_mpbond");
    let out = std::process::Command::new(exe)
        .args(["keygen", "office-2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let signer = Signer::from_key_file_text(&text).unwrap();
    assert_eq!(signer.name().as_str(), "office-2");
    // The same line, as a converter's keys file, verifies what it signs.
    let keys = mpbond::convert::auth::parse_key_lines(&text).unwrap();
    assert_eq!(keys.len(), 1);
    let again = std::process::Command::new(exe)
        .args(["keygen", "office-2"])
        .output()
        .unwrap();
    assert_ne!(again.stdout, text.as_bytes(), "every key is new");
    let bad = std::process::Command::new(exe)
        .args(["keygen", "two words"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr)
            .trim_end()
            .lines()
            .count(),
        1
    );
}

/// A converter whose Convert messages never get acknowledged (every data segment to it is
/// dropped after the handshake): the client resets the first connection after 3 s, tries a
/// second one, and reports that neither was acknowledged. Runs in a private network namespace
/// (needs root).
#[test]
fn an_unacknowledged_convert_message_is_tried_once_more_on_a_new_connection() {
    let outcome = mpbond::lab::testing::in_private_netns(
        "an_unacknowledged_convert_message_is_tried_once_more_on_a_new_connection",
        || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            // Data segments to the port vanish; the handshake and pure ACKs pass.
            let rules = format!(
                "table inet blackhole {{\n chain out {{\n type filter hook output priority 0;\n \
                 tcp dport {port} tcp flags & (syn | rst) == 0 ip length > 64 drop\n }}\n}}\n"
            );
            let mut nft = std::process::Command::new("nft")
                .args(["-f", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(nft.stdin.as_mut().unwrap(), rules.as_bytes()).unwrap();
            assert!(nft.wait().unwrap().success());
            let accepted = std::thread::spawn(move || {
                listener.set_nonblocking(true).unwrap();
                let mut held = Vec::new();
                let end = Instant::now() + Duration::from_secs(8);
                while Instant::now() < end {
                    if let Ok((c, _)) = listener.accept() {
                        held.push(c);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                held.len()
            });
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let started = Instant::now();
            let r = rt.block_on(async {
                let mut opts = ClientOptions::new(format!("127.0.0.1:{port}").parse().unwrap());
                opts.mptcp = false;
                opts.connect_timeout = Duration::from_secs(2);
                let signer = Signer::new(Name::new("home").unwrap(), Key::generate().unwrap());
                client::open("192.0.2.1:80".parse().unwrap(), &signer, &opts).await
            });
            (r.map(drop), started.elapsed(), accepted.join().unwrap())
        },
    );
    let Some((r, elapsed, accepted)) = outcome else {
        return;
    };
    assert!(
        matches!(r, Err(ClientError::Unacknowledged { .. })),
        "{r:?}"
    );
    assert_eq!(accepted, 2, "a second connection was tried ({elapsed:?})");
}

/// A connection whose MPTCP SYNs are lost comes up as plain TCP (Linux's last SYN tries carry
/// no `MP_CAPABLE`): it is dropped before anything is sent and a new one is tried; the second
/// is kept whatever it speaks, and says why it is plain TCP.
#[test]
fn a_connection_that_fell_back_because_its_syn_was_lost_is_tried_once_more() {
    if !std::path::Path::new("/proc/sys/net/mptcp/syn_retrans_before_tcp_fallback").exists() {
        eprintln!(
            "SKIPPED a_connection_that_fell_back_because_its_syn_was_lost_is_tried_once_more: this kernel (before 6.12) never drops MP_CAPABLE from a SYN"
        );
        return;
    }
    let outcome = mpbond::lab::testing::in_private_netns(
        "a_connection_that_fell_back_because_its_syn_was_lost_is_tried_once_more",
        || {
            // Lost MPTCP SYNs must not switch MPTCP off for the namespace meanwhile.
            let _ = std::fs::write("/proc/sys/net/mptcp/blackhole_timeout", "0");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = kernel::listen(
                    "127.0.0.1:0".parse().unwrap(),
                    &ListenOptions {
                        mptcp: true,
                        ..ListenOptions::default()
                    },
                )
                .unwrap();
                let port = l.listener.local_addr().unwrap().port();
                // Every SYN with an MPTCP option to the port vanishes.
                let rules = format!(
                    "table inet lossy {{\n chain i {{\n type filter hook input priority 0;\n \
                     tcp dport {port} tcp flags syn tcp option mptcp exists drop\n }}\n}}\n"
                );
                let mut nft = std::process::Command::new("nft")
                    .args(["-f", "-"])
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                std::io::Write::write_all(nft.stdin.as_mut().unwrap(), rules.as_bytes()).unwrap();
                assert!(nft.wait().unwrap().success());
                let accepted = tokio::spawn(async move {
                    let mut held = Vec::new();
                    loop {
                        // Each attempt takes three SYNs (about 3 s); after two, a moment for a
                        // third that must not come.
                        let wait = Duration::from_secs(if held.len() < 2 { 12 } else { 1 });
                        match tokio::time::timeout(wait, l.listener.accept()).await {
                            Ok(Ok((c, _))) => held.push(c),
                            _ => return held.len(),
                        }
                    }
                });
                let opts = ClientOptions::new(format!("127.0.0.1:{port}").parse().unwrap());
                let r =
                    client::open("192.0.2.1:80".parse().unwrap(), &signer("home", 1), &opts).await;
                let r = r.map(|up| (up.fallback, mpbond::stack::Conn::is_mptcp(&up.stream)));
                (r, accepted.await.unwrap())
            })
        },
    );
    let Some((r, accepted)) = outcome else {
        return;
    };
    let (fallback, mptcp) = r.unwrap();
    assert!(!mptcp);
    assert!(
        matches!(fallback, Some(kernel::Fallback::SynLost { retransmits }) if retransmits >= 2),
        "{fallback:?}"
    );
    assert!(
        fallback
            .unwrap()
            .to_string()
            .contains("not a path without MPTCP"),
        "the cause is said"
    );
    assert_eq!(accepted, 2, "a second connection was tried");
}

/// The converter says why it refused a gateway, so the gateway can tell its operator; a wrong
/// key and an unknown name get the same answer (nobody learns which names exist), and a key
/// check is answered without relaying anything.
#[tokio::test]
async fn refusals_say_why_and_a_key_check_relays_nothing() {
    use mpbond::convert::auth::Refusal;
    let conv = TestConverter::start(loopback_allowed(), |_| {});
    let (_, accepted) = echo_server().await;
    let opts = conv.options();
    client::check_key(&signer("home", 1), &opts)
        .await
        .expect("the right key is accepted");
    let refusal = |r: Result<(), ClientError>| r.unwrap_err().gateway_refusal();
    assert_eq!(
        refusal(client::check_key(&signer("home", 2), &opts).await),
        Some(Refusal::Credentials)
    );
    assert_eq!(
        refusal(client::check_key(&signer("stranger", 1), &opts).await),
        Some(Refusal::Credentials)
    );
    for (skew, expected) in [(-120i64, Refusal::ClockBehind), (120, Refusal::ClockAhead)] {
        let connect = Connect::new(client::KEY_CHECK);
        let when = unix_now().checked_add_signed(skew).unwrap();
        let auth = Auth::sign(
            &key(1),
            &Name::new("home").unwrap(),
            when,
            [u8::from(skew > 0); 16],
            &connect,
        );
        let msg = Message {
            info: true,
            connect: Some(connect),
            auth: Some(auth),
            ..Message::default()
        };
        let mut s = TcpStream::connect(conv.addr).await.unwrap();
        s.write_all(&msg.emit().unwrap()).await.unwrap();
        let err = client::read_reply(&s, REPLY).await.unwrap_err();
        assert_eq!(err.gateway_refusal(), Some(expected), "{err}");
        assert!(err.to_string().contains("clock"), "{err}");
    }
    // A refused destination is not about the gateway.
    let up = client::open("10.1.2.3:80".parse().unwrap(), &signer("home", 1), &opts)
        .await
        .unwrap();
    let err = client::read_reply(&up.stream, REPLY).await.unwrap_err();
    assert_eq!(err.gateway_refusal(), None, "{err}");
    assert!(err.to_string().contains("destination refused"), "{err}");
    assert_eq!(accepted.load(Relaxed), 0, "nothing was relayed");
}

/// Opens `n` connections to the converter from `source` that send nothing.
async fn idle_connections(conv: &TestConverter, source: [u8; 4], n: usize) -> Vec<TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind((std::net::Ipv4Addr::from(source), 0).into())
            .unwrap();
        out.push(s.connect(conv.addr).await.unwrap());
    }
    out
}

/// How many of `conns` the converter closed.
async fn closed(conns: &mut [TcpStream]) -> usize {
    let mut n = 0;
    for c in conns {
        let mut b = [0u8; 1];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(20), c.read(&mut b)).await {
            assert!(
                !matches!(r, Ok(1..)),
                "the converter sends an idle client nothing"
            );
            n += 1;
        }
    }
    n
}

/// The lockout of issue 12: hosts that open many connections and send nothing never keep a
/// gateway out. One host keeps at most its per-source allowance; many hosts push out only
/// strangers' connections, never a known gateway's; and the converter keeps serving.
#[tokio::test]
async fn idle_connections_cannot_lock_a_gateway_out() {
    let conv = TestConverter::start(loopback_allowed(), |c| {
        c.admission.max_pending = 64;
        c.admission.per_source = 8;
        c.admission.timeout = Duration::from_secs(30);
    });
    let (dest, _) = echo_server().await;
    let home = signer("home", 1);
    // The gateway's address becomes known (as a gateway's key check at start does).
    client::check_key(&home, &conv.options()).await.unwrap();

    // One host, 300 idle connections: all but its allowance are reset.
    let mut flood = idle_connections(&conv, [127, 0, 0, 5], 300).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gone = closed(&mut flood).await;
    assert!(gone >= 300 - 8, "only {gone} of 300 closed");
    echo_through(&conv, &home, dest, b"served during a flood from one host").await;

    // A gateway's connection that has not sent its message yet survives a flood from many
    // hosts, far over the budget, and is then served.
    let mut held = TcpStream::connect(conv.addr).await.unwrap();
    let mut floods = Vec::new();
    for h in 0..40u8 {
        floods.push(idle_connections(&conv, [127, 0, 1, h], 8).await);
    }
    held.write_all(&signed(dest, &home)).await.unwrap();
    let reply = client::read_reply(&held, REPLY).await.unwrap();
    assert!(reply.extended_tcp_header.is_some());
    held.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    held.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"ping");
    // The converter takes the flood's connections at its own pace: wait for it.
    let stats = &conv.conv.stats;
    let want = 292 + 320 - 64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats.pushed_out.load(Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pushed = stats.pushed_out.load(Relaxed);
    assert!(pushed >= want, "{pushed} pushed out");
    echo_through(&conv, &home, dest, b"and after it").await;
}

/// A connection that never authenticates is closed after the handshake timeout and counted.
#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let conv = TestConverter::start(loopback_allowed(), |c| {
        c.admission.timeout = Duration::from_millis(300);
    });
    let mut silent = idle_connections(&conv, [127, 0, 0, 9], 1).await;
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(REPLY, silent[0].read(&mut b)).await;
    assert!(
        matches!(r, Ok(Ok(0) | Err(_))),
        "closed by the converter: {r:?}"
    );
    assert_eq!(conv.conv.stats.handshake_timeouts.load(Relaxed), 1);
}
