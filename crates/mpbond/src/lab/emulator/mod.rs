//! The link emulator: a daemon in the lab's `emu` namespace that carries every line's frames
//! between the gateway's end and the vps's end, applying rate, queue, delay, jitter and loss per
//! direction, and obeys `mpbond lab line` (down, up, blackhole, set) at run time.
//!
//! Layout: [`model`] decides (pure, virtual time), [`worker`] runs one line in real time over
//! [`packet_socket`]s, [`control`] is the protocol of the control socket, [`stats`] the counters.

pub mod control;
pub mod model;
pub mod packet_socket;
pub mod stats;
pub mod worker;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use self::control::{LineChanges, Request, Response};
use self::model::Serialiser;
use self::packet_socket::{PacketSocket, set_link_up};
use self::stats::{LabStats, LineState, LineStats};
use self::worker::LineShared;
use super::plan::{LabInfo, Role};
use super::spec::LineSpec;
use super::{netns, run_dir};

/// A line being emulated.
struct Line {
    shared: Arc<LineShared>,
    /// Shares a serialiser with another line (either end of `share=`): rate and queue stay.
    shares_serialiser: bool,
    gw_side: String,
    vps_side: String,
    /// `tx_dropped` of `[gw_side, vps_side]` when the emulator started.
    tx_dropped_base: [u64; 2],
}

/// `tx_dropped` of every interface of the calling thread's namespace, from `/proc/net/dev`
/// (which shows the reader's namespace).
fn tx_dropped() -> std::collections::HashMap<String, u64> {
    let text = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit:
            // bytes packets errs drop ...
            let drop = rest.split_whitespace().nth(11)?.parse().ok()?;
            Some((name.trim().to_owned(), drop))
        })
        .collect()
}

/// The seed of one direction's random decisions, from the lab's seed.
fn direction_seed(lab_seed: u64, line_index: u8, direction: usize) -> u64 {
    lab_seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (u64::from(line_index) << 8 | direction as u64)
}

/// Runs the emulator of lab `name` until it is told to stop (a `shutdown` request, SIGTERM or
/// SIGINT). With `detach`, forks into the background first and returns in the parent at once.
///
/// Must be called before the process starts any thread (it may fork).
pub fn run(name: &str, detach: bool) -> Result<()> {
    let dir = run_dir(name);
    let info_path = dir.join("lab.json");
    let info: LabInfo = serde_json::from_slice(
        &std::fs::read(&info_path).with_context(|| format!("reading {}", info_path.display()))?,
    )
    .with_context(|| format!("parsing {}", info_path.display()))?;

    let sock = &info.emulator.control;
    if ping(sock).is_ok() {
        bail!("lab {name} already has a running emulator");
    }
    if detach {
        // SAFETY: no other thread exists yet (documented precondition), so the child is a
        // faithful copy; the parent only exits.
        match unsafe { libc::fork() } {
            -1 => bail!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                // SAFETY: plain system call; the child is not a group leader, so it succeeds.
                unsafe { libc::setsid() };
            }
            // The parent's only job was to let `lab up` reap it, leaving the daemon to init.
            _ => std::process::exit(0),
        }
    }
    // The pid goes on record at once, so that `lab up` notices quickly if we die while setting
    // up, and `lab down` finds us whatever happens next.
    std::fs::write(
        dir.join("emulator.pid"),
        format!("{}\n", std::process::id()),
    )?;
    if std::env::var(super::FAULT_ENV).as_deref() == Ok("emulator") {
        bail!("fault injected at emulator start");
    }

    netns::enter(info.netns(Role::Emu)).context("entering the emulator's namespace")?;
    // Wake-ups on time matter more here than power: ask the kernel for 1 µs timer slack.
    // SAFETY: plain prctl with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000, 0, 0, 0) };

    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&shutdown))
            .context("installing signal handlers")?;
    }

    // One upstream and one downstream serialiser per line that others share, by its name.
    let mut serialisers: std::collections::HashMap<&str, [Arc<Serialiser>; 2]> =
        std::collections::HashMap::new();
    for owner in info.lines.iter().filter_map(|l| l.share.as_deref()) {
        serialisers.entry(owner).or_default();
    }
    let mut lines = Vec::new();
    let mut threads = Vec::new();
    for l in &info.lines {
        let group = serialisers.get(l.share.as_deref().unwrap_or(&l.name));
        let (line, thread) = start_line(l, info.seed, group, &shutdown)?;
        lines.push(line);
        threads.push(thread);
    }

    let _ = std::fs::remove_file(sock);
    let listener =
        UnixListener::bind(sock).with_context(|| format!("binding {}", sock.display()))?;
    listener.set_nonblocking(true)?;
    tracing::info!(lab = name, lines = lines.len(), "emulator running");

    let started = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = serve(&stream, &info, &lines, started, &shutdown) {
                    tracing::warn!("control connection: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                wait_readable(&listener, Duration::from_millis(100));
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    shutdown.store(true, Ordering::Relaxed);
    for l in &lines {
        l.shared.poke();
    }
    for t in threads {
        let _ = t.join();
    }
    let _ = std::fs::remove_file(sock);
    let _ = std::fs::remove_file(dir.join("emulator.pid"));
    tracing::info!(lab = name, "emulator stopped");
    Ok(())
}

/// Opens the packet sockets of line `l` and starts its worker thread; `serialisers` are the
/// ones it shares with other lines, if any.
fn start_line(
    l: &super::plan::LineInfo,
    lab_seed: u64,
    serialisers: Option<&[Arc<Serialiser>; 2]>,
    shutdown: &Arc<AtomicBool>,
) -> Result<(Line, std::thread::JoinHandle<()>)> {
    let spec = LineSpec {
        name: l.name.clone(),
        upstream: l.upstream.spec.clone(),
        downstream: l.downstream.spec.clone(),
        share: l.share.clone(),
    };
    let gw_side = format!("g-{}", l.name);
    let vps_side = format!("v-{}", l.name);
    let sockets = [
        PacketSocket::bind(&gw_side)
            .with_context(|| format!("opening a packet socket on {gw_side}"))?,
        PacketSocket::bind(&vps_side)
            .with_context(|| format!("opening a packet socket on {vps_side}"))?,
    ];
    let shared = Arc::new(LineShared::new(&spec).context("creating an eventfd")?);
    let seeds = [
        direction_seed(lab_seed, l.index, 0),
        direction_seed(lab_seed, l.index, 1),
    ];
    let (s, stop) = (Arc::clone(&shared), Arc::clone(shutdown));
    let line_serialisers = serialisers.map_or([None, None], |[up, down]| {
        [Some(Arc::clone(up)), Some(Arc::clone(down))]
    });
    let shares_serialiser = serialisers.is_some();
    let thread = std::thread::Builder::new()
        .name(format!("line-{}", l.name))
        .spawn(move || worker::run(&s, &sockets, seeds, line_serialisers, &stop))
        .context("starting a line thread")?;
    let drops = tx_dropped();
    let tx_dropped_base = [
        drops.get(&gw_side).copied().unwrap_or(0),
        drops.get(&vps_side).copied().unwrap_or(0),
    ];
    Ok((
        Line {
            shared,
            shares_serialiser,
            gw_side,
            vps_side,
            tx_dropped_base,
        },
        thread,
    ))
}

fn wait_readable(listener: &UnixListener, timeout: Duration) {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(100);
    // SAFETY: one live pollfd.
    unsafe { libc::poll(&raw mut fd, 1, ms) };
}

fn serve(
    stream: &UnixStream,
    info: &LabInfo,
    lines: &[Line],
    started: Instant,
    shutdown: &AtomicBool,
) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = String::new();
    BufReader::new(stream).read_line(&mut request)?;
    let response = match serde_json::from_str::<Request>(&request) {
        Ok(req) => {
            tracing::debug!(?req, "control request");
            handle(req, info, lines, started, shutdown)
        }
        Err(e) => Response::error(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    let mut w = stream;
    w.write_all(&out)?;
    Ok(())
}

fn find<'a>(lines: &'a [Line], name: &str) -> Result<&'a Line, Response> {
    lines.iter().find(|l| l.shared.name == name).ok_or_else(|| {
        let known: Vec<&str> = lines.iter().map(|l| l.shared.name.as_str()).collect();
        Response::error(format!(
            "unknown line `{name}` (lines: {})",
            known.join(", ")
        ))
    })
}

fn handle(
    req: Request,
    info: &LabInfo,
    lines: &[Line],
    started: Instant,
    shutdown: &AtomicBool,
) -> Response {
    match req {
        Request::Ping => Response {
            pid: Some(std::process::id()),
            ..Response::ok()
        },
        Request::Shutdown => {
            shutdown.store(true, Ordering::Relaxed);
            Response::ok()
        }
        Request::Stats => Response {
            stats: Some(stats(info, lines, started)),
            ..Response::ok()
        },
        Request::State { line, state } => {
            let l = match find(lines, &line) {
                Ok(l) => l,
                Err(r) => return r,
            };
            match set_state(l, state) {
                Ok(()) => {
                    tracing::info!(line, %state, "line state changed");
                    Response::ok()
                }
                Err(e) => Response::error(format!("line `{line}`: {e}")),
            }
        }
        Request::Set { line, settings } => {
            let l = match find(lines, &line) {
                Ok(l) => l,
                Err(r) => return r,
            };
            let (dirs, changes) = match LineChanges::parse(&settings) {
                Ok(c) => c,
                Err(e) => return Response::error(e),
            };
            // Validate on a copy so a bad combination changes nothing.
            let mut params = {
                let c = l
                    .shared
                    .control
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                c.params.clone()
            };
            for (k, p) in params.iter_mut().enumerate() {
                if dirs.includes(k) {
                    changes.apply(p);
                }
            }
            if l.shares_serialiser && (changes.rate.is_some() || changes.queue.is_some()) {
                return Response::error(format!(
                    "line `{line}` shares a serialiser (share=): its rate and queue are fixed \
                     while the lab runs"
                ));
            }
            let check = LineSpec {
                name: line.clone(),
                upstream: params[0].clone(),
                downstream: params[1].clone(),
                share: None,
            };
            if let Err(e) = check.validate() {
                return Response::error(e.to_string());
            }
            match l.shared.update(|c| c.params = params) {
                Ok(()) => {
                    tracing::info!(line, ?settings, "line settings changed");
                    Response::ok()
                }
                Err(e) => Response::error(format!("line `{line}`: {e}")),
            }
        }
    }
}

/// Changes a line's state. Going down, the worker first stops carrying (and forgets what was in
/// flight), then the links lose carrier; coming up, the reverse.
fn set_state(l: &Line, state: LineState) -> std::io::Result<()> {
    let links_up = state != LineState::Down;
    if links_up {
        set_link_up(&l.gw_side, true)?;
        set_link_up(&l.vps_side, true)?;
    }
    l.shared.update(|c| c.state = state)?;
    if !links_up {
        set_link_up(&l.gw_side, false)?;
        set_link_up(&l.vps_side, false)?;
    }
    Ok(())
}

fn stats(info: &LabInfo, lines: &[Line], started: Instant) -> LabStats {
    let drops = tx_dropped();
    LabStats {
        lab: info.name.clone(),
        uptime_s: started.elapsed().as_secs_f64(),
        lines: lines
            .iter()
            .map(|l| {
                let c = l
                    .shared
                    .control
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let mut upstream = l.shared.counters[0].snapshot(c.params[0].clone());
                let mut downstream = l.shared.counters[1].snapshot(c.params[1].clone());
                // Upstream leaves by the vps-side veth, downstream by the gateway-side one.
                let egress = |ifname: &str, base: u64| {
                    drops.get(ifname).map_or(0, |d| d.saturating_sub(base))
                };
                upstream.dropped.egress = egress(&l.vps_side, l.tx_dropped_base[1]);
                downstream.dropped.egress = egress(&l.gw_side, l.tx_dropped_base[0]);
                LineStats {
                    name: l.shared.name.clone(),
                    state: c.state,
                    upstream,
                    downstream,
                }
            })
            .collect(),
    }
}

/// Asks the emulator behind `control` whether it runs; returns its pid.
pub fn ping(control: &Path) -> Result<u32, control::ControlError> {
    let r = control::request(control, &Request::Ping, Duration::from_secs(2))?;
    Ok(r.pid.unwrap_or(0))
}
