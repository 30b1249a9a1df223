//! The command line: argument definitions and dispatch to the modules that do the work.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::lab::{self, LabSpec, LineState, Role};
use crate::stack::Stack;

/// Bond several Internet lines into one with Multipath TCP.
#[derive(Debug, Parser)]
#[command(name = "mpbond", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). `RUST_LOG` overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Network-namespace testbeds with emulated lines.
    #[command(subcommand)]
    Lab(LabCommand),
    /// One command tour: a lab with two lines, a gateway and a converter, a download over both
    /// lines shown live, the fast line failing and coming back; then the lab is removed.
    Demo(DemoArgs),
    /// Measure every contender (plain TCP, kernel MPTCP, mpbond) side by side on the same
    /// emulated lines: goodput, efficiency, stalls, completion times, CPU; JSON and SVG charts.
    Bench(BenchArgs),
    /// Carry the LAN's TCP connections over MPTCP across every WAN line to a converter.
    Gateway(GatewayArgs),
    /// Relay gateways' MPTCP connections to their destinations (RFC 8803 Convert protocol).
    Converter(ConverterArgs),
    /// Open a connection and pipe standard input and output through it (MPTCP when the peer
    /// has it); usable as ssh `ProxyCommand`.
    Connect(ConnectArgs),
    /// Accept one connection and pipe standard input and output through it.
    Listen(ListenArgs),
    /// Print a new key line `NAME KEY` for gateway NAME: the gateway's key file, and one line of
    /// the converter's keys file.
    Keygen {
        /// The gateway's name (letters, digits, `.`, `_`, `-`; up to 64).
        name: String,
        /// Write the line to this new file (mode 600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show what running gateways, converters and `connect`s know: each MPTCP connection with
    /// its subflows (line, addresses, RTT, cwnd, bytes, state, backup), and line health.
    Status {
        /// JSON (an array, one object per daemon) instead of a table.
        #[arg(long)]
        json: bool,
        /// Ask only this daemon's socket (default: every `/run/mpbond/*.sock`).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Print every TCP packet of a pcap/pcapng capture with its MPTCP options, checking tokens,
    /// HMACs and DSS checksums, and a summary of the connections.
    Decode {
        /// The capture file (pcap or pcapng; Ethernet, Linux cooked, raw IP or loopback), or `-`
        /// for standard input (`tcpdump -U -w - | mpbond decode -`).
        file: PathBuf,
        /// One JSON object per TCP packet, and a final `{"summary": ...}`.
        #[arg(long)]
        json: bool,
    },
}

/// `mpbond lab ...`
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Build a lab and print its description as JSON.
    Up(UpArgs),
    /// Remove a lab (also what a crashed run left behind).
    Down {
        /// Lab name.
        name: String,
    },
    /// List the labs on this machine.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in one of a lab's hosts (lan, gw, emu, vps, web).
    Exec {
        /// Lab name.
        name: String,
        /// Host: lan, gw, emu, vps or web.
        host: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Change a line at run time: `down`, `up`, `blackhole`, or `set KEY=VALUE...`
    /// (rate, delay, loss, jitter, queue, reorder, dir=upstream|downstream|both).
    Line {
        /// Lab name.
        name: String,
        /// Line name.
        line: String,
        /// `down`, `up`, `blackhole` or `set`.
        action: String,
        /// `KEY=VALUE` settings for `set`.
        settings: Vec<String>,
    },
    /// Print the emulator's counters per line and direction as JSON.
    Stats {
        /// Lab name.
        name: String,
    },
    /// Measure how much traffic the link emulator carries without adding error.
    Bench(LabBenchArgs),
    /// Run a lab's link emulator (started by `lab up`).
    #[command(hide = true)]
    Emulate {
        /// Lab name.
        name: String,
        /// Fork into the background.
        #[arg(long)]
        detach: bool,
    },
}

/// `mpbond lab up`
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Lab name: namespaces are NAME-lan, NAME-gw, NAME-emu, NAME-vps, NAME-web.
    #[arg(long)]
    pub name: String,
    /// Lab config file (TOML); `--line` flags override its lines of the same name.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A line: NAME:RATE:DELAY[:loss=PCT][:queue=TIME][:jitter=TIME][:reorder][:up=RATE][:down=RATE],
    /// like `dsl:20mbit:10ms`. Repeat for more lines. Default: dsl:20mbit:10ms and lte:10mbit:40ms.
    #[arg(long = "line", value_name = "SPEC")]
    pub lines: Vec<String>,
    /// Seed of the emulator's random loss and jitter.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Marks the lab as made by a program (`test:<pid>`), which may then remove it as stale.
    #[arg(long, hide = true)]
    pub owner: Option<String>,
}

/// `mpbond lab bench`
#[derive(Debug, Args)]
pub struct LabBenchArgs {
    /// Number of lines, each carrying one TCP flow.
    #[arg(long, default_value_t = 2)]
    pub lines: u8,
    /// Rate of each line.
    #[arg(long, default_value = "500mbit")]
    pub rate: String,
    /// One-way delay of each line.
    #[arg(long, default_value = "2ms")]
    pub delay: String,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `mpbond converter`
#[derive(Debug, Args)]
pub struct ConverterArgs {
    /// Address and port to listen on, like `[::]:7000` (config: `listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// The gateways' keys file: one `NAME KEY` line per gateway, from `mpbond keygen`
    /// (config: `keys`). SIGHUP re-reads it.
    #[arg(long, value_name = "FILE")]
    pub keys: Option<PathBuf>,
    /// Relay to this range although it is refused by default (private, loopback, ...); repeat.
    #[arg(long, value_name = "CIDR")]
    pub allow_dest: Vec<String>,
    /// Never relay to this range; repeat.
    #[arg(long, value_name = "CIDR")]
    pub deny_dest: Vec<String>,
    /// Config file (TOML); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Relayed connections at most [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Relayed connections at most per gateway [default: 2000].
    #[arg(long, value_name = "N")]
    pub max_connections_per_gateway: Option<usize>,
    /// Close relayed connections idle this long [default: 2h].
    #[arg(long, value_name = "TIME")]
    pub idle_timeout: Option<String>,
    /// Time a client has to send its Convert message and authenticate [default: 10s; 2s for
    /// those that arrive while over half of --max-handshakes are waiting].
    #[arg(long, value_name = "TIME")]
    pub handshake_timeout: Option<String>,
    /// Connections at most that have not authenticated yet; beyond, the oldest (of sources
    /// that never authenticated first) are reset [default: 4096].
    #[arg(long, value_name = "N")]
    pub max_handshakes: Option<usize>,
    /// Connections at most that have not authenticated yet per source address (IPv6: per /64)
    /// that no gateway authenticated from in the last hour; beyond, its oldest are reset
    /// [default: 32].
    #[arg(long, value_name = "N")]
    pub max_handshakes_per_source: Option<usize>,
    /// New connections a second at most per source address (IPv6: per /64), four seconds'
    /// worth at once; beyond, the kernel drops their SYNs (an nftables table, removed on exit);
    /// 0: no such limit [default: 1000].
    #[arg(long, value_name = "N")]
    pub syn_rate_per_source: Option<u32>,
    /// Time to connect to a destination [default: 10s].
    #[arg(long, value_name = "TIME")]
    pub connect_timeout: Option<String>,
    /// On SIGTERM, stop taking new connections, say not ready (`/readyz`), and relay the open
    /// ones up to this long before resetting what is left; a second SIGTERM or SIGINT stops at
    /// once; 0: reset them at once [default: 30s].
    #[arg(long, value_name = "TIME")]
    pub drain_timeout: Option<String>,
    /// Do not accept the Convert message in the SYN (TCP Fast Open).
    #[arg(long)]
    pub no_fast_open: bool,
    /// Announce this extra address of the host to each peer (`ADD_ADDR`); repeat. Hands the
    /// host's MPTCP path management to mpbond while running (needs root).
    #[arg(long, value_name = "ADDR")]
    pub announce: Vec<std::net::IpAddr>,
    /// This instance's own address, when it is one of several behind a load balancer: sets the
    /// C flag (no join to the balanced address) and announces ADDR, where gateways then join
    /// (docs/converter.md; needs root).
    #[arg(long, value_name = "ADDR")]
    pub fleet_address: Option<std::net::IpAddr>,
    /// Serve Prometheus metrics on `http://ADDR:PORT/metrics`, and `/healthz` and `/readyz` for
    /// health checks (off by default).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    /// Data plane: `kernel` (Linux's MPTCP) or `user` (mpbond's own engine on a TUN device;
    /// IPv4; config: `stack`) [default: kernel].
    #[arg(long, value_enum)]
    pub stack: Option<Stack>,
    /// Scheduler and congestion control of the user-space stack (config: `scheduler`,
    /// `congestion`).
    #[command(flatten)]
    pub tuning: TuningArgs,
}

/// `mpbond gateway`
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The converter, HOST:PORT (config: `converter`).
    #[arg(long, value_name = "HOST:PORT")]
    pub converter: Option<String>,
    /// This gateway's key file, from `mpbond keygen NAME` (config: `key`).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// A WAN line: IFACE[:backup][:via=NEXTHOP]; repeat for each line. The gateway installs a
    /// routing table, a rule and an MPTCP endpoint per line, and removes them on exit.
    #[arg(long, value_name = "IFACE[:backup]")]
    pub wan: Vec<String>,
    /// A LAN interface whose forwarded TCP is captured; repeat. Implies --transparent 7070.
    #[arg(long, value_name = "IFACE")]
    pub lan: Vec<String>,
    /// Port of the transparent (TPROXY) listener.
    #[arg(long, value_name = "PORT")]
    pub transparent: Option<u16>,
    /// A SOCKS5 listener (no authentication on loopback; users from the config file otherwise).
    #[arg(long, value_name = "ADDR:PORT")]
    pub socks: Option<String>,
    /// Reject UDP/443 from the LAN so browsers fall back from QUIC to TCP.
    #[arg(long)]
    pub block_quic: bool,
    /// Never capture this destination range (besides private ones and the converter); repeat.
    #[arg(long, value_name = "CIDR")]
    pub bypass: Vec<String>,
    /// Config file (TOML); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Close relayed connections idle this long [default: 2h].
    #[arg(long, value_name = "TIME")]
    pub idle_timeout: Option<String>,
    /// Put the Convert message in the SYN (TCP Fast Open) once the kernel holds a cookie.
    /// Experimental: Linux 6.18's MPTCP stalls after a SYN with data (docs/troubleshooting.md).
    #[arg(long)]
    pub fast_open: bool,
    /// Path manager: `mpbond` (probes the lines, fails over in well under a second,
    /// re-creates subflows) or `kernel` (the in-kernel one, with endpoints) [default: mpbond].
    #[arg(long, value_name = "mpbond|kernel")]
    pub pm: Option<crate::pm::PmKind>,
    /// mpbond's path manager probes each line in use this often (ICMP echo to the peer); a line
    /// silent for three intervals (no answer, no packet received) is given up. A line whose
    /// received traffic proves it works is not probed. `0` turns probes off [default: 50ms].
    #[arg(long, value_name = "TIME")]
    pub probe_interval: Option<String>,
    /// ... and each idle line (nothing but probes sent for 10 s) this often; its first packet
    /// brings back `--probe-interval` at once. Per line: `--wan IFACE:probe-idle=TIME` [default: 1s].
    #[arg(long, value_name = "TIME")]
    pub probe_idle_interval: Option<String>,
    /// Serve Prometheus metrics on `http://ADDR:PORT/metrics`, and `/healthz` and `/readyz` for
    /// health checks (off by default).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    /// Data plane: `kernel` (Linux's MPTCP) or `user` (mpbond's own engine on a TUN device;
    /// IPv4; config: `stack`) [default: kernel].
    #[arg(long, value_enum)]
    pub stack: Option<Stack>,
    /// Scheduler and congestion control of the user-space stack (config: `scheduler`,
    /// `congestion`).
    #[command(flatten)]
    pub tuning: TuningArgs,
}

/// `mpbond connect`
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Where to connect: HOST:PORT (`%h:%p` in an ssh `ProxyCommand`).
    #[arg(value_name = "HOST:PORT")]
    pub target: String,
    /// Go through this converter (HOST:PORT): MPTCP to it, plain TCP from it to the target.
    #[arg(long, value_name = "HOST:PORT", requires = "key")]
    pub via: Option<String>,
    /// This gateway's key file (from `mpbond keygen NAME`), for `--via`.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Plain TCP instead of MPTCP (to compare, or for debugging).
    #[arg(long, alias = "no-mptcp")]
    pub tcp: bool,
    /// A line to use: IFACE[:backup][:via=NEXTHOP]; repeat. Installs a routing table, a rule and
    /// an MPTCP endpoint per line for the time of the connection (needs root). Without it the
    /// kernel's own MPTCP endpoints decide.
    #[arg(long, value_name = "IFACE[:backup]")]
    pub wan: Vec<String>,
    /// With `--via`: put the Convert message in the SYN (TCP Fast Open); experimental.
    #[arg(long, requires = "via")]
    pub fast_open: bool,
    /// Path manager: `mpbond` (probes the lines, fails over in well under a second,
    /// re-creates subflows) or `kernel` (the in-kernel one, with endpoints) [default: mpbond].
    #[arg(long, value_name = "mpbond|kernel")]
    pub pm: Option<crate::pm::PmKind>,
    /// mpbond's path manager probes each line in use this often (ICMP echo to the peer); a line
    /// silent for three intervals (no answer, no packet received) is given up. A line whose
    /// received traffic proves it works is not probed. `0` turns probes off [default: 50ms].
    #[arg(long, value_name = "TIME")]
    pub probe_interval: Option<String>,
    /// ... and each idle line (nothing but probes sent for 10 s) this often; its first packet
    /// brings back `--probe-interval` at once. Per line: `--wan IFACE:probe-idle=TIME` [default: 1s].
    #[arg(long, value_name = "TIME")]
    pub probe_idle_interval: Option<String>,
    /// Data plane: `kernel`, or `user` (mpbond's own TCP and MPTCP engine on a TUN device of
    /// its own; IPv4; needs root).
    #[arg(long, value_enum, default_value = "kernel")]
    pub stack: Stack,
    /// Scheduler and congestion control of the user-space stack.
    #[command(flatten)]
    pub tuning: TuningArgs,
}

/// `mpbond listen`
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address and port to listen on, like `0.0.0.0:9000` or `[::]:9000`.
    #[arg(value_name = "ADDR:PORT")]
    pub addr: String,
    /// Plain TCP instead of MPTCP.
    #[arg(long, alias = "no-mptcp")]
    pub tcp: bool,
    /// Announce this extra address of the host to each peer (`ADD_ADDR`); repeat. Hands the
    /// host's MPTCP path management to mpbond while running (needs root).
    #[arg(long, value_name = "ADDR")]
    pub announce: Vec<std::net::IpAddr>,
    /// Data plane: `kernel`, or `user` (mpbond's own TCP and MPTCP engine on a TUN device of
    /// its own; IPv4; needs root).
    #[arg(long, value_enum, default_value = "kernel")]
    pub stack: Stack,
    /// Scheduler and congestion control of the user-space stack.
    #[command(flatten)]
    pub tuning: TuningArgs,
}

/// `--scheduler` and `--congestion`: how the user-space stack runs each MPTCP connection.
#[derive(Debug, Args, Default)]
pub struct TuningArgs {
    /// With `--stack user`: which line carries the next bytes. `min-rtt` (the default, as
    /// Linux), `blest` or `ecf` (fewer stalls behind a slow line), `redundant` (every byte on
    /// every line: lowest delay, throughput of the best line only), `round-robin` (tests). The
    /// kernel stack uses Linux's own scheduler.
    #[arg(long, value_name = "NAME")]
    pub scheduler: Option<mptcp_proto::mptcp::SchedulerKind>,
    /// With `--stack user`: the subflows' congestion control, each line on its own: `auto`
    /// (the default: CUBIC, and BBR on a line whose losses come without a queue, a lossy LTE
    /// or Wi-Fi line that CUBIC would hold to a fraction of its rate), `cubic` (as Linux),
    /// `reno`, `bbr` (paced at the rate it measures; not fair to loss-based traffic at a
    /// shared bottleneck); or coupled: `lia` (RFC 6356), `olia`, `balia`, which take no more
    /// than one TCP flow's share where lines meet at one bottleneck and move traffic off a
    /// congested line. The kernel stack uses Linux's (uncoupled).
    #[arg(long, value_name = "NAME")]
    pub congestion: Option<mptcp_proto::mptcp::Congestion>,
}

/// `mpbond demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seconds of the download through the gateway; the fast line fails halfway and comes back
    /// at three quarters.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(8..=600))]
    pub seconds: u64,
    /// Data plane of the gateway and the converter: `kernel` (Linux's MPTCP, mpbond as its path
    /// manager) or `user` (mpbond's own engine on a TUN device).
    #[arg(long, value_enum, default_value = "kernel")]
    pub stack: Stack,
}

/// `mpbond bench`
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Run this scenario (repeat for more; default: all): balanced, unbalanced, dsl-lte,
    /// three-lines, failover, short-flows, shared-bottleneck.
    #[arg(long, value_name = "NAME")]
    pub scenario: Vec<String>,
    /// Shorter runs (8 s downloads, 200 short flows, one round): every scenario within
    /// 10 minutes on a 2-core machine.
    #[arg(long)]
    pub quick: bool,
    /// Write every figure as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write one chart per scenario (throughput per line over time, per contender) to DIR.
    #[arg(long, value_name = "DIR")]
    pub svg: Option<PathBuf>,
    /// Only this contender (repeat; default: all): tcp, mptcp-kernel, mpbond-kernel-pm,
    /// mpbond, mpbond-user.
    #[arg(long, value_name = "ID")]
    pub contender: Vec<String>,
    /// Runs of each contender per scenario, interleaved [default: 1 with --quick, else 3].
    #[arg(long, value_name = "N")]
    pub rounds: Option<usize>,
    /// Keep the gateway's and the converter's logs of every run in DIR
    /// (`<scenario>-<contender>-<round>-gateway.log`, ...).
    #[arg(long, value_name = "DIR")]
    pub logs: Option<PathBuf>,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Lab(cmd) => run_lab(cmd),
        Command::Demo(args) => crate::demo::run(&args),
        Command::Bench(args) => crate::bench::run(&args),
        Command::Gateway(a) => {
            let config = gateway_config(a)?;
            runtime(true)?.block_on(crate::gateway::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Converter(a) => {
            let config = converter_config(a)?;
            runtime(true)?.block_on(crate::converter::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Connect(a) => {
            let via = match (a.via, a.key) {
                (Some(via), Some(key)) => Some(crate::netcat::Via {
                    converter: via,
                    signer: crate::netcat::load_signer(&key)?,
                    key_file: key,
                }),
                (None, Some(_)) => bail!("--key is only used with --via"),
                _ => None,
            };
            let args = crate::netcat::ConnectArgs {
                target: a.target,
                via,
                mptcp: !a.tcp,
                wan: wan_specs(&a.wan)?,
                fast_open: a.fast_open,
                pm: a.pm.unwrap_or_default(),
                probe: probe_config(
                    a.probe_interval.as_deref(),
                    a.probe_idle_interval.as_deref(),
                )?,
                tuning: tuning_for(a.stack, &a.tuning)?,
                stack: a.stack,
            };
            finish(runtime(false)?, crate::netcat::connect(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Listen(a) => {
            let tuning = tuning_for(a.stack, &a.tuning)?;
            finish(
                runtime(false)?,
                crate::netcat::listen(&a.addr, !a.tcp, a.announce, a.stack, tuning),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json, socket } => {
            crate::status::run(json, socket.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { name, out } => {
            keygen(&name, out.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Decode { file, json } => {
            crate::decode::run(&file, json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_lab(cmd: LabCommand) -> Result<ExitCode> {
    match cmd {
        LabCommand::Up(a) => {
            let mut spec = LabSpec::from_parts(&a.name, a.config.as_deref(), &a.lines, a.seed)?;
            spec.owner = a.owner;
            let exe = std::env::current_exe().context("locating the mpbond binary")?;
            let info = lab::up(&spec, &exe)?;
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        LabCommand::Down { name } => {
            let r = lab::down(&name)?;
            println!(
                "removed lab {name}: {} namespaces, {} processes stopped",
                r.namespaces.len(),
                r.processes.len()
            );
        }
        LabCommand::List { json } => {
            let labs = lab::list();
            if json {
                println!("{}", serde_json::to_string_pretty(&labs)?);
            } else if labs.is_empty() {
                println!("no labs");
            } else {
                println!("{:<24} {:<8} {:>8}  lines", "NAME", "STATUS", "EMU PID");
                for l in labs {
                    let pid = l
                        .emulator_pid
                        .map_or_else(|| "-".to_owned(), |p| p.to_string());
                    println!(
                        "{:<24} {:<8} {:>8}  {}",
                        l.name,
                        l.status,
                        pid,
                        l.lines.join(",")
                    );
                }
            }
        }
        LabCommand::Exec {
            name,
            host,
            command,
        } => {
            let role: Role = host.parse()?;
            return Err(lab::exec(&name, role, &command).into());
        }
        LabCommand::Line {
            name,
            line,
            action,
            settings,
        } => {
            let state = match action.as_str() {
                "down" => Some(LineState::Down),
                "up" => Some(LineState::Up),
                "blackhole" => Some(LineState::Blackhole),
                "set" => None,
                other => bail!("unknown line action `{other}` (use down, up, blackhole or set)"),
            };
            match state {
                Some(_) if !settings.is_empty() => {
                    bail!(
                        "`{action}` takes no settings (did you mean `set {}`?)",
                        settings.join(" ")
                    )
                }
                Some(state) => lab::set_line_state(&name, &line, state)?,
                None => lab::set_line(&name, &line, &settings)?,
            }
        }
        LabCommand::Stats { name } => {
            println!("{}", serde_json::to_string_pretty(&lab::stats(&name)?)?);
        }
        LabCommand::Bench(a) => lab::bench::run(&a)?,
        LabCommand::Emulate { name, detach } => lab::emulator::run(&name, detach)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A tokio runtime: multi-threaded for the daemons, single-threaded for the netcat.
fn runtime(multi: bool) -> Result<tokio::runtime::Runtime> {
    let mut b = if multi {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().context("starting the async runtime")
}

fn keygen(name: &str, out: Option<&std::path::Path>) -> Result<()> {
    use crate::convert::auth::{Key, Name, key_line};
    let name = Name::new(name)?;
    let line = key_line(
        &name,
        &Key::generate().context("no random numbers from the OS")?,
    );
    match out {
        None => println!("{line}"),
        Some(path) => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Merges `mpbond converter`'s flags over its config file.
fn converter_config(a: ConverterArgs) -> Result<crate::converter::Config> {
    use crate::config::{self, ConverterFile, cidrs, duration};
    let file: ConverterFile = match &a.config {
        Some(p) => config::read(p)?,
        None => ConverterFile::default(),
    };
    let stack = a.stack.or(file.stack).unwrap_or_default();
    let tuning = a
        .tuning
        .over_file(file.scheduler.as_deref(), file.congestion.as_deref())?;
    let tuning = tuning_for(stack, &tuning)?;
    let listen = a
        .listen
        .or(file.listen)
        .context("--listen ADDR:PORT is required (or `listen` in the config file)")?;
    let listen = listen
        .parse()
        .with_context(|| format!("--listen: `{listen}` is not ADDR:PORT like [::]:7000"))?;
    let keys = a
        .keys
        .or(file.keys)
        .context("--keys FILE is required (or `keys` in the config file)")?;
    let mut c = crate::converter::Config::new(listen, keys);
    c.stack = stack;
    c.tuning = tuning;
    let mut allow = file.allow_dest.unwrap_or_default();
    allow.extend(a.allow_dest);
    let mut deny = file.deny_dest.unwrap_or_default();
    deny.extend(a.deny_dest);
    c.policy.allow = cidrs("--allow-dest", &allow)?;
    c.policy.deny = cidrs("--deny-dest", &deny)?;
    if let Some(n) = a.max_connections.or(file.max_connections) {
        c.max_connections = n;
    }
    if let Some(n) = a
        .max_connections_per_gateway
        .or(file.max_connections_per_gateway)
    {
        c.max_per_gateway = n;
    }
    if let Some(n) = a.max_handshakes.or(file.max_handshakes) {
        c.admission.max_pending = n.max(1);
    }
    if let Some(n) = a
        .max_handshakes_per_source
        .or(file.max_handshakes_per_source)
    {
        c.admission.per_source = n.max(1);
    }
    if let Some(n) = a.syn_rate_per_source.or(file.syn_rate_per_source) {
        c.syn_rate_per_source = n;
    }
    if let Some(t) = a.idle_timeout.or(file.idle_timeout) {
        c.idle_timeout = duration("--idle-timeout", &t)?;
    }
    if let Some(t) = a.handshake_timeout.or(file.handshake_timeout) {
        c.admission.timeout = duration("--handshake-timeout", &t)?;
    }
    if let Some(t) = a.connect_timeout.or(file.connect_timeout) {
        c.connect_timeout = duration("--connect-timeout", &t)?;
    }
    if let Some(t) = a.drain_timeout.or(file.drain_timeout) {
        c.drain_timeout = duration("--drain-timeout", &t)?;
    }
    c.fast_open = !a.no_fast_open && file.fast_open.unwrap_or(true);
    c.announce = if a.announce.is_empty() {
        file.announce.unwrap_or_default()
    } else {
        a.announce
    };
    c.metrics = metrics_addr(a.metrics.or(file.metrics))?;
    c.fleet_address = a.fleet_address.or(file.fleet_address);
    Ok(c)
}

/// Merges `mpbond gateway`'s flags over its config file.
fn gateway_config(a: GatewayArgs) -> Result<crate::gateway::Config> {
    use crate::config::{self, GatewayFile, cidrs, duration};
    let file: GatewayFile = match &a.config {
        Some(p) => config::read(p)?,
        None => GatewayFile::default(),
    };
    let stack = a.stack.or(file.stack).unwrap_or_default();
    let tuning = a
        .tuning
        .over_file(file.scheduler.as_deref(), file.congestion.as_deref())?;
    let tuning = tuning_for(stack, &tuning)?;
    let converter = a
        .converter
        .or(file.converter)
        .context("--converter HOST:PORT is required (or `converter` in the config file)")?;
    let key = a
        .key
        .or(file.key)
        .context("--key FILE is required (or `key` in the config file)")?;
    let mut c = crate::gateway::Config::new(converter, key);
    c.stack = stack;
    c.tuning = tuning;
    let wan = if a.wan.is_empty() {
        file.wan.unwrap_or_default()
    } else {
        a.wan
    };
    c.wan = wan_specs(&wan)?;
    c.lan = if a.lan.is_empty() {
        file.lan.unwrap_or_default()
    } else {
        a.lan
    };
    if let Some(bad) = c
        .lan
        .iter()
        .find(|n| !crate::gateway::wan::valid_iface_name(n))
    {
        bail!("--lan `{bad}`: not an interface name (1 to 15 of A-Z a-z 0-9 _ . - @)");
    }
    c.transparent = a
        .transparent
        .or(file.transparent)
        .or((!c.lan.is_empty()).then_some(7070));
    if let Some(s) = a.socks.or(file.socks) {
        c.socks = Some(
            s.parse()
                .with_context(|| format!("--socks: `{s}` is not ADDR:PORT like 127.0.0.1:1080"))?,
        );
    }
    c.socks_users = crate::gateway::SocksUsers(file.socks_users.unwrap_or_default());
    c.block_quic = a.block_quic || file.block_quic.unwrap_or(false);
    let mut bypass = file.bypass.unwrap_or_default();
    bypass.extend(a.bypass);
    c.bypass.extend(cidrs("--bypass", &bypass)?);
    if let Some(t) = a.idle_timeout.or(file.idle_timeout) {
        c.idle_timeout = duration("--idle-timeout", &t)?;
    }
    c.fast_open = a.fast_open || file.fast_open.unwrap_or(false);
    c.pm = a.pm.or(file.pm).unwrap_or_default();
    c.probe = probe_config(
        a.probe_interval.or(file.probe_interval).as_deref(),
        a.probe_idle_interval
            .or(file.probe_idle_interval)
            .as_deref(),
    )?;
    c.metrics = metrics_addr(a.metrics.or(file.metrics))?;
    Ok(c)
}

/// `--metrics ADDR:PORT`.
fn metrics_addr(s: Option<String>) -> Result<Option<std::net::SocketAddr>> {
    s.map(|s| {
        s.parse()
            .with_context(|| format!("--metrics: `{s}` is not ADDR:PORT like 127.0.0.1:9477"))
    })
    .transpose()
}

/// The user-space stack's congestion control unless one is asked for: CUBIC, and BBR on a line
/// whose losses come without a queue (a lossy radio line), where CUBIC would hold a fraction
/// of the line's rate (`mptcp_proto::tcp::congestion::Auto`).
pub const DEFAULT_CONGESTION: mptcp_proto::mptcp::Congestion = mptcp_proto::mptcp::Congestion::Auto;

/// The scheduler and congestion control asked for, which only the user-space stack has.
fn tuning_for(stack: Stack, asked: &TuningArgs) -> Result<crate::stack::user::Tuning> {
    if stack != Stack::User {
        if let Some(k) = asked.scheduler {
            bail!(
                "--scheduler {k} (or `scheduler` in the config file) needs --stack user: the kernel stack uses Linux's own scheduler (net.mptcp.scheduler)"
            );
        }
        if let Some(k) = asked.congestion {
            bail!(
                "--congestion {k} (or `congestion` in the config file) needs --stack user: the kernel stack's subflows use Linux's congestion control, uncoupled (net.ipv4.tcp_congestion_control)"
            );
        }
    }
    Ok(crate::stack::user::Tuning {
        scheduler: asked.scheduler.unwrap_or_default(),
        congestion: asked.congestion.unwrap_or(DEFAULT_CONGESTION),
    })
}

impl TuningArgs {
    /// The flags over the config file's `scheduler` and `congestion` keys.
    fn over_file(mut self, scheduler: Option<&str>, congestion: Option<&str>) -> Result<Self> {
        if self.scheduler.is_none() {
            self.scheduler = file_value("scheduler", scheduler)?;
        }
        if self.congestion.is_none() {
            self.congestion = file_value("congestion", congestion)?;
        }
        Ok(self)
    }
}

/// The config file's `key`, parsed; an error names the key.
fn file_value<T>(key: &str, value: Option<&str>) -> Result<Option<T>>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    value
        .map(|s| {
            s.parse()
                .map_err(|e| anyhow::anyhow!("config file, `{key}`: {e}"))
        })
        .transpose()
}

/// The probe settings of `--probe-interval` and `--probe-idle-interval`.
fn probe_config(interval: Option<&str>, idle: Option<&str>) -> Result<crate::pm::ProbeConfig> {
    let mut c = match interval {
        None => crate::pm::ProbeConfig::default(),
        Some(t) => {
            let d = crate::config::duration("--probe-interval", t)?;
            if !d.is_zero() && d < std::time::Duration::from_millis(10) {
                bail!("--probe-interval {t}: at least 10ms (or 0 for no probes)");
            }
            crate::pm::probe_every(d)
        }
    };
    if let Some(t) = idle {
        let d = crate::config::duration("--probe-idle-interval", t)?;
        if d < c.interval || d > std::time::Duration::from_secs(3600) {
            bail!(
                "--probe-idle-interval {t}: between --probe-interval ({}) and 1h",
                crate::units::format_duration(c.interval)
            );
        }
        c.idle_interval = d;
    }
    Ok(c)
}

fn wan_specs(specs: &[String]) -> Result<Vec<crate::gateway::wan::WanSpec>> {
    specs
        .iter()
        .map(|w| w.parse().map_err(|e: String| anyhow::anyhow!("--wan {e}")))
        .collect()
}

/// Runs `f` to its end, then shuts the runtime down without waiting for a blocked read of
/// standard input (tokio reads it on a blocking thread that only returns at the next line).
fn finish<T>(rt: tokio::runtime::Runtime, f: impl Future<Output = Result<T>>) -> Result<T> {
    let r = rt.block_on(f);
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    r
}

/// Turns a clap error into one line: its message without the usage block.
#[must_use]
pub fn one_line_clap_error(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = message.join(" ");
    joined.strip_prefix("error: ").unwrap_or(&joined).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_errors_become_one_line() {
        let e = Cli::try_parse_from(["mpbond", "lab", "up"]).unwrap_err();
        let line = one_line_clap_error(&e);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--name"), "{line}");
    }

    /// `--scheduler` and `--congestion` are parsed by name on connect and listen, and
    /// refused with the kernel stack, which has Linux's scheduler and uncoupled congestion
    /// control only.
    #[test]
    fn scheduler_and_congestion_are_for_the_user_stack() {
        use mptcp_proto::mptcp::{Congestion, SchedulerKind};
        let cli = Cli::try_parse_from([
            "mpbond",
            "listen",
            "0.0.0.0:9000",
            "--stack",
            "user",
            "--scheduler",
            "blest",
            "--congestion",
            "olia",
        ])
        .unwrap();
        let Command::Listen(a) = cli.command else {
            panic!("listen")
        };
        let t = tuning_for(a.stack, &a.tuning).unwrap();
        assert_eq!(
            (t.scheduler, t.congestion),
            (SchedulerKind::Blest, Congestion::Olia)
        );
        let t = tuning_for(Stack::User, &TuningArgs::default()).unwrap();
        assert_eq!(
            (t.scheduler, t.congestion),
            (SchedulerKind::MinRtt, Congestion::Auto)
        );
        let ecf = TuningArgs {
            scheduler: Some(SchedulerKind::Ecf),
            congestion: None,
        };
        let e = tuning_for(Stack::Kernel, &ecf).unwrap_err();
        assert!(e.to_string().contains("--stack user"), "{e}");
        let lia = TuningArgs {
            scheduler: None,
            congestion: Some(Congestion::Lia),
        };
        let e = tuning_for(Stack::Kernel, &lia).unwrap_err();
        assert!(
            e.to_string().contains(
                "--congestion lia (or `congestion` in the config file) needs --stack user"
            ),
            "{e}"
        );
        assert!(
            Cli::try_parse_from(["mpbond", "connect", "h:1", "--scheduler", "fastest"]).is_err()
        );
        let e = Cli::try_parse_from(["mpbond", "connect", "h:1", "--congestion", "vegas"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("one of: cubic, reno, bbr, auto, lia, olia, balia"),
            "{e}"
        );
    }

    /// The gateway and the converter take `--scheduler` and `--congestion` too, and the
    /// config file's `scheduler` and `congestion` keys, flags first; a bad name in the file
    /// is an error that names the key.
    #[test]
    fn gateway_and_converter_take_a_scheduler_from_flags_or_config_file() {
        use mptcp_proto::mptcp::{Congestion, SchedulerKind};
        let cli = Cli::try_parse_from([
            "mpbond",
            "gateway",
            "--converter",
            "192.0.2.1:7000",
            "--key",
            "/k",
            "--socks",
            "127.0.0.1:1080",
            "--stack",
            "user",
            "--scheduler",
            "ecf",
        ])
        .unwrap();
        let Command::Gateway(a) = cli.command else {
            panic!("gateway")
        };
        let c = gateway_config(a).unwrap();
        assert_eq!(c.stack, Stack::User);
        assert_eq!(
            (c.tuning.scheduler, c.tuning.congestion),
            (SchedulerKind::Ecf, Congestion::Auto)
        );
        let t = TuningArgs {
            scheduler: Some(SchedulerKind::Blest),
            congestion: None,
        }
        .over_file(Some("redundant"), Some("balia"))
        .unwrap();
        assert_eq!(
            (t.scheduler, t.congestion),
            (Some(SchedulerKind::Blest), Some(Congestion::Balia))
        );
        let e = TuningArgs::default()
            .over_file(Some("fastest"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`scheduler`"), "{e}");
        let cli = Cli::try_parse_from([
            "mpbond",
            "converter",
            "--listen",
            "0.0.0.0:7000",
            "--keys",
            "/k",
            "--congestion",
            "lia",
        ])
        .unwrap();
        let Command::Converter(a) = cli.command else {
            panic!("converter")
        };
        let e = converter_config(a).unwrap_err().to_string();
        assert!(e.contains("needs --stack user"), "{e}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
