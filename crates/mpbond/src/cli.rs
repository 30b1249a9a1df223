//! The command line: argument definitions and dispatch to the modules that do the work.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::lab::{self, LabSpec, LineState, Role};

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
    /// Build a lab with two emulated lines, measure them, and remove it again.
    Demo(DemoArgs),
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
    Bench(BenchArgs),
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
pub struct BenchArgs {
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

/// `mpbond demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seconds of traffic per measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Lab(cmd) => run_lab(cmd),
        Command::Demo(args) => crate::demo::run(&args),
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

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
