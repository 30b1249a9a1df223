//! What a lab is made of, as the user writes it: the lab's name and its lines, from
//! `--line NAME:RATE:DELAY[:KEY=VALUE]...` flags and/or a TOML file.
//!
//! Each line is emulated independently in both directions: *upstream* (gateway → vps) and
//! *downstream* (vps → gateway). A line's settings apply to both unless a direction overrides
//! them (asymmetric DSL: `dsl:16mbit:10ms:up=1mbit`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::{
    Rate, UnitError, duration_str, format_duration, parse_ms_duration as parse_duration,
    parse_percent,
};

/// At most this many lines per lab (addresses are planned per line index).
pub const MAX_LINES: usize = 16;

/// Longest line name: it becomes an interface name, and the emulator's `v-NAME` must fit the
/// kernel's 15-byte limit.
pub const MAX_LINE_NAME: usize = 12;

/// Longest lab name (namespaces are `NAME-lan`, ...).
pub const MAX_LAB_NAME: usize = 24;

/// Interface names used by the lab itself, which line names must not shadow.
const RESERVED_NAMES: &[&str] = &["lo", "eth0", "lan0", "web0"];

/// Something wrong in a lab description. Each message fits on one line.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A `--line` string that does not follow `NAME:RATE:DELAY[:KEY=VALUE]...`.
    #[error("invalid --line `{spec}`: {reason}")]
    LineSyntax {
        /// The whole flag value.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A rate, duration or percentage inside a line.
    #[error("line `{line}`: {source}")]
    Unit {
        /// Name of the line.
        line: String,
        /// The unit error.
        source: UnitError,
    },
    /// A line name that cannot be used.
    #[error(
        "invalid line name `{0}`: use 1-{MAX_LINE_NAME} letters, digits, `_` or `-`, starting \
         with a letter (not lo, eth0, lan0, web0)"
    )]
    LineName(String),
    /// A lab name that cannot be used.
    #[error(
        "invalid lab name `{0}`: use 1-{MAX_LAB_NAME} lowercase letters, digits or `-`, \
         starting with a letter or digit"
    )]
    LabName(String),
    /// Two lines with the same name.
    #[error("line `{0}` is defined twice")]
    DuplicateLine(String),
    /// More lines than the address plan has room for.
    #[error("a lab has at most {MAX_LINES} lines, {0} were given")]
    TooManyLines(usize),
    /// A setting out of its range.
    #[error("line `{line}`: {reason}")]
    Invalid {
        /// Name of the line.
        line: String,
        /// What is wrong.
        reason: String,
    },
    /// The TOML file could not be read.
    #[error("cannot read lab config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML file is not a valid lab config.
    #[error("lab config {path}: {message}")]
    Toml {
        /// The file.
        path: String,
        /// The parser's message, flattened to one line.
        message: String,
    },
}

/// How one direction of a line behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectionSpec {
    /// Serialisation rate; `unlimited` means no shaping (and then no queue).
    pub rate: Rate,
    /// One-way propagation delay added after serialisation.
    #[serde(with = "duration_str")]
    pub delay: Duration,
    /// Each packet's delay is drawn uniformly within ±`jitter` (≤ `delay`). Without `reorder`,
    /// a packet is also held behind any earlier one, so closely spaced traffic sees delays
    /// skewed towards `delay + jitter` (netem behaves the same way).
    #[serde(with = "duration_str")]
    pub jitter: Duration,
    /// Random loss, percent, on the wire (a lost packet still used the line's capacity).
    pub loss: f64,
    /// Tail-drop queue size, as the time the queue takes to drain at `rate`.
    #[serde(with = "duration_str")]
    pub queue: Duration,
    /// Let jitter reorder packets (by default, a packet never overtakes an earlier one).
    pub reorder: bool,
}

impl DirectionSpec {
    /// Default queue: enough for one bandwidth-delay product at any rate, and never under
    /// 50 ms so slow lines still hold a few full-size frames.
    #[must_use]
    pub fn default_queue(delay: Duration) -> Duration {
        (2 * delay).max(Duration::from_millis(50))
    }

    /// Queue size in bytes at this direction's rate (`None` when unlimited).
    #[must_use]
    pub fn queue_bytes(&self) -> Option<u64> {
        self.rate.bytes_in(self.queue)
    }

    fn validate(&self, line: &str) -> Result<(), SpecError> {
        let invalid = |reason: String| SpecError::Invalid {
            line: line.to_owned(),
            reason,
        };
        if self.jitter > self.delay {
            return Err(invalid(format!(
                "jitter {} is larger than the delay {} (a packet cannot arrive before it left)",
                format_duration(self.jitter),
                format_duration(self.delay)
            )));
        }
        if !(0.0..=100.0).contains(&self.loss) || !self.loss.is_finite() {
            return Err(invalid(format!(
                "loss {} is not between 0 and 100 %",
                self.loss
            )));
        }
        if self.delay > Duration::from_secs(10) {
            return Err(invalid("delay over 10s is not a line".to_owned()));
        }
        if self.queue > Duration::from_secs(10) {
            return Err(invalid("queue over 10s of data is not a line".to_owned()));
        }
        Ok(())
    }
}

/// One emulated line between the gateway and the vps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineSpec {
    /// Name, also the name of the line's interface on the gateway and on the vps.
    pub name: String,
    /// Gateway → vps.
    pub upstream: DirectionSpec,
    /// Vps → gateway.
    pub downstream: DirectionSpec,
    /// Another line whose serialiser and queue this one shares, in each direction
    /// (`share=NAME`): the two lines' frames queue for one link of that rate, as two paths
    /// meeting at one bottleneck. Each keeps its own delay, jitter and loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
}

impl LineSpec {
    /// A symmetric line.
    #[must_use]
    pub fn new(name: &str, rate: Rate, delay: Duration) -> Self {
        let dir = DirectionSpec {
            rate,
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
            queue: DirectionSpec::default_queue(delay),
            reorder: false,
        };
        LineSpec {
            name: name.to_owned(),
            upstream: dir.clone(),
            downstream: dir,
            share: None,
        }
    }

    /// Parses `NAME:RATE:DELAY[:loss=PCT][:queue=TIME][:jitter=TIME][:reorder][:up=RATE][:down=RATE][:share=LINE]`.
    pub fn parse(spec: &str) -> Result<Self, SpecError> {
        let syntax = |reason: &str| SpecError::LineSyntax {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = spec.split(':');
        let name = parts.next().unwrap_or_default();
        let (Some(rate), Some(delay)) = (parts.next(), parts.next()) else {
            return Err(syntax("expected NAME:RATE:DELAY, like dsl:20mbit:10ms"));
        };
        validate_line_name(name)?;
        let unit = |source| SpecError::Unit {
            line: name.to_owned(),
            source,
        };
        let rate: Rate = rate.parse().map_err(unit)?;
        let delay = parse_duration(delay).map_err(unit)?;
        let mut line = LineSpec::new(name, rate, delay);
        let mut queue_set = false;
        for kv in parts {
            let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
            let both = |line: &mut LineSpec, f: &dyn Fn(&mut DirectionSpec)| {
                f(&mut line.upstream);
                f(&mut line.downstream);
            };
            match key {
                "loss" => {
                    let v = parse_percent(value).map_err(unit)?;
                    both(&mut line, &|d| d.loss = v);
                }
                "queue" => {
                    let v = parse_duration(value).map_err(unit)?;
                    both(&mut line, &|d| d.queue = v);
                    queue_set = true;
                }
                "jitter" => {
                    let v = parse_duration(value).map_err(unit)?;
                    both(&mut line, &|d| d.jitter = v);
                }
                "reorder" if value.is_empty() => both(&mut line, &|d| d.reorder = true),
                "up" => line.upstream.rate = value.parse().map_err(unit)?,
                "down" => line.downstream.rate = value.parse().map_err(unit)?,
                "share" => {
                    validate_line_name(value)?;
                    line.share = Some(value.to_owned());
                }
                _ => {
                    return Err(syntax(&format!(
                        "unknown option `{kv}` (known: loss=PCT, queue=TIME, jitter=TIME, \
                         reorder, up=RATE, down=RATE, share=LINE)"
                    )));
                }
            }
        }
        if !queue_set {
            // The default queue follows the delay; nothing else changes it.
            line.upstream.queue = DirectionSpec::default_queue(delay);
            line.downstream.queue = DirectionSpec::default_queue(delay);
        }
        line.validate()?;
        Ok(line)
    }

    /// Checks the settings of both directions.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_line_name(&self.name)?;
        self.upstream.validate(&self.name)?;
        self.downstream.validate(&self.name)
    }
}

fn validate_line_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_LINE_NAME
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !RESERVED_NAMES.contains(&name);
    if ok {
        Ok(())
    } else {
        Err(SpecError::LineName(name.to_owned()))
    }
}

/// Checks a lab name.
pub fn validate_lab_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_LAB_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(SpecError::LabName(name.to_owned()))
    }
}

/// A whole lab as requested.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabSpec {
    /// Lab name; namespaces are `NAME-lan`, `NAME-gw`, `NAME-emu`, `NAME-vps`, `NAME-web`.
    pub name: String,
    /// Seed of the emulator's random loss and jitter: the same seed gives the same decisions
    /// for the same packet sequence.
    pub seed: u64,
    /// The lines, in order; the first is the gateway's default route.
    pub lines: Vec<LineSpec>,
    /// Who made the lab when it is not a user: `test:<pid>`, `demo`, `bench`. Tests and the
    /// demo only ever remove labs they own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl LabSpec {
    /// The lines a lab gets when none are given: a DSL-like and an LTE-like line.
    #[must_use]
    pub fn default_lines() -> Vec<LineSpec> {
        vec![
            LineSpec::new("dsl", Rate::from_bps(20_000_000), Duration::from_millis(10)),
            LineSpec::new("lte", Rate::from_bps(10_000_000), Duration::from_millis(40)),
        ]
    }

    /// Builds a spec from a TOML config (optional), `--line` flags and `--seed`. Flags win: a
    /// `--line` replaces the config's line of the same name, or adds one.
    pub fn from_parts(
        name: &str,
        config: Option<&Path>,
        line_flags: &[String],
        seed: Option<u64>,
    ) -> Result<Self, SpecError> {
        validate_lab_name(name)?;
        let file = match config {
            Some(path) => LabFile::load(path)?,
            None => LabFile::default(),
        };
        let mut lines = file.lines()?;
        for flag in line_flags {
            let line = LineSpec::parse(flag)?;
            match lines.iter_mut().find(|l| l.name == line.name) {
                Some(existing) if config.is_some() => *existing = line,
                Some(_) => return Err(SpecError::DuplicateLine(line.name)),
                None => lines.push(line),
            }
        }
        if lines.is_empty() {
            lines = Self::default_lines();
        }
        let spec = LabSpec {
            name: name.to_owned(),
            seed: seed.or(file.seed).unwrap_or(1),
            lines,
            owner: None,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks names, counts and every line.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_lab_name(&self.name)?;
        if self.lines.len() > MAX_LINES {
            return Err(SpecError::TooManyLines(self.lines.len()));
        }
        let mut seen = BTreeSet::new();
        for line in &self.lines {
            line.validate()?;
            if !seen.insert(line.name.as_str()) {
                return Err(SpecError::DuplicateLine(line.name.clone()));
            }
        }
        for line in &self.lines {
            if let Some(other) = &line.share {
                self.check_share(line, other)?;
            }
        }
        Ok(())
    }

    /// A line may share the serialiser of another line that shares none itself (one level, so
    /// every bottleneck has one owner), with the same rate and queue in each direction: the
    /// shared link has one rate, and both lines' settings say which.
    fn check_share(&self, line: &LineSpec, other: &str) -> Result<(), SpecError> {
        let invalid = |reason: String| SpecError::Invalid {
            line: line.name.clone(),
            reason,
        };
        let Some(owner) = self.lines.iter().find(|l| l.name == other) else {
            return Err(invalid(format!("share={other}: no line `{other}`")));
        };
        if owner.name == line.name || owner.share.is_some() {
            return Err(invalid(format!(
                "share={other}: a line shares the serialiser of a line that shares none"
            )));
        }
        for (mine, theirs) in [
            (&line.upstream, &owner.upstream),
            (&line.downstream, &owner.downstream),
        ] {
            if mine.rate != theirs.rate || mine.queue != theirs.queue {
                return Err(invalid(format!(
                    "share={other}: needs {other}'s rate and queue ({}, queue {}), not {}, queue {}",
                    theirs.rate,
                    format_duration(theirs.queue),
                    mine.rate,
                    format_duration(mine.queue)
                )));
            }
        }
        Ok(())
    }

    /// Lines whose rate is a link of its own: every line but those sharing another's
    /// serialiser. Their rates add up to what the lab can carry at most.
    pub fn own_links(&self) -> impl Iterator<Item = &LineSpec> {
        self.lines.iter().filter(|l| l.share.is_none())
    }
}

/// The TOML form of a lab config.
///
/// ```toml
/// seed = 7
/// [[line]]
/// name = "dsl"
/// rate = "16mbit"
/// delay = "10ms"
/// [line.upstream]      # optional: gateway → vps only
/// rate = "1mbit"
/// [[line]]
/// name = "lte"
/// rate = "40mbit"
/// delay = "30ms"
/// loss = 0.5           # percent
/// jitter = "5ms"
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabFile {
    seed: Option<u64>,
    #[serde(default)]
    line: Vec<LineFile>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectionFile {
    rate: Option<String>,
    delay: Option<String>,
    jitter: Option<String>,
    loss: Option<f64>,
    queue: Option<String>,
    reorder: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineFile {
    name: String,
    rate: Option<String>,
    delay: Option<String>,
    jitter: Option<String>,
    loss: Option<f64>,
    queue: Option<String>,
    reorder: Option<bool>,
    share: Option<String>,
    #[serde(default)]
    upstream: DirectionFile,
    #[serde(default)]
    downstream: DirectionFile,
}

impl LabFile {
    fn load(path: &Path) -> Result<Self, SpecError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: display.clone(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| SpecError::Toml {
            path: display,
            message: e.message().replace('\n', " "),
        })
    }

    fn lines(&self) -> Result<Vec<LineSpec>, SpecError> {
        self.line.iter().map(LineFile::to_spec).collect()
    }
}

impl LineFile {
    fn to_spec(&self) -> Result<LineSpec, SpecError> {
        validate_line_name(&self.name)?;
        let unit = |source| SpecError::Unit {
            line: self.name.clone(),
            source,
        };
        let common = DirectionFile {
            rate: None,
            delay: None,
            jitter: self.jitter.clone(),
            loss: self.loss,
            queue: self.queue.clone(),
            reorder: self.reorder,
        };
        let Some(rate) = &self.rate else {
            return Err(SpecError::Invalid {
                line: self.name.clone(),
                reason: "missing `rate` (like rate = \"20mbit\")".to_owned(),
            });
        };
        let rate: Rate = rate.parse().map_err(unit)?;
        let delay = match &self.delay {
            Some(d) => parse_duration(d).map_err(unit)?,
            None => Duration::ZERO,
        };
        let base = LineSpec::new(&self.name, rate, delay).upstream;
        let base = apply(base, &common, &unit)?;
        if let Some(other) = &self.share {
            validate_line_name(other)?;
        }
        Ok(LineSpec {
            name: self.name.clone(),
            upstream: apply(base.clone(), &self.upstream, &unit)?,
            downstream: apply(base, &self.downstream, &unit)?,
            share: self.share.clone(),
        })
    }
}

/// Applies the settings present in `f` on top of `d`. A changed delay moves the default queue
/// with it unless a queue is given explicitly.
fn apply(
    mut d: DirectionSpec,
    f: &DirectionFile,
    unit: &dyn Fn(UnitError) -> SpecError,
) -> Result<DirectionSpec, SpecError> {
    let default_queue = d.queue == DirectionSpec::default_queue(d.delay);
    if let Some(r) = &f.rate {
        d.rate = r.parse().map_err(unit)?;
    }
    if let Some(v) = &f.delay {
        d.delay = parse_duration(v).map_err(unit)?;
    }
    if let Some(v) = &f.jitter {
        d.jitter = parse_duration(v).map_err(unit)?;
    }
    if let Some(v) = f.loss {
        d.loss = v;
    }
    if let Some(v) = &f.queue {
        d.queue = parse_duration(v).map_err(unit)?;
    } else if default_queue {
        d.queue = DirectionSpec::default_queue(d.delay);
    }
    if let Some(v) = f.reorder {
        d.reorder = v;
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_flag_with_every_option() {
        let l =
            LineSpec::parse("lte:40mbit:30ms:loss=0.5:queue=80ms:jitter=5ms:up=10mbit").unwrap();
        assert_eq!(l.name, "lte");
        assert_eq!(l.downstream.rate.bps(), 40_000_000);
        assert_eq!(l.upstream.rate.bps(), 10_000_000);
        for d in [&l.upstream, &l.downstream] {
            assert_eq!(d.delay, Duration::from_millis(30));
            assert_eq!(d.queue, Duration::from_millis(80));
            assert_eq!(d.jitter, Duration::from_millis(5));
            assert!((d.loss - 0.5).abs() < 1e-12);
            assert!(!d.reorder);
        }
    }

    #[test]
    fn bare_numbers_are_milliseconds() {
        let l = LineSpec::parse("lte:10mbit:40:queue=80:jitter=2").unwrap();
        assert_eq!(l.upstream.delay, Duration::from_millis(40));
        assert_eq!(l.upstream.queue, Duration::from_millis(80));
        assert_eq!(l.upstream.jitter, Duration::from_millis(2));
    }

    #[test]
    fn default_queue_holds_a_bdp() {
        let l = LineSpec::parse("sat:5mbit:300ms").unwrap();
        assert_eq!(l.upstream.queue, Duration::from_millis(600));
        let l = LineSpec::parse("lan:1gbit:1ms").unwrap();
        assert_eq!(l.upstream.queue, Duration::from_millis(50));
    }

    #[test]
    fn malformed_line_flags_are_refused_in_one_line() {
        for bad in [
            "dsl",
            "dsl:20mbit",
            "dsl:20mb:10ms",
            "dsl:20mbit:10x",
            "dsl:20mbit:10ms:loss=200",
            "dsl:20mbit:10ms:jitter=20ms",
            "dsl:20mbit:10ms:colour=red",
            "1dsl:20mbit:10ms",
            "lan0:20mbit:10ms",
            "averyverylongname:20mbit:10ms",
            "d s l:20mbit:10ms",
        ] {
            let e = LineSpec::parse(bad).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn duplicate_lines_and_bad_lab_names_are_refused() {
        let flags = ["a:1mbit:1ms".to_owned(), "a:2mbit:1ms".to_owned()];
        assert!(matches!(
            LabSpec::from_parts("x", None, &flags, None),
            Err(SpecError::DuplicateLine(_))
        ));
        for bad in ["", "Lab", "a_b", "-a", "a".repeat(25).as_str()] {
            assert!(LabSpec::from_parts(bad, None, &[], None).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_line_shares_the_serialiser_of_one_with_the_same_rate_and_queue() {
        let flags = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let s = LabSpec::from_parts(
            "x",
            None,
            &flags(&["a:20mbit:10ms", "b:20mbit:30ms:queue=50ms:share=a"]),
            None,
        )
        .unwrap();
        assert_eq!(s.lines[1].share.as_deref(), Some("a"));
        let own: Vec<&str> = s.own_links().map(|l| l.name.as_str()).collect();
        assert_eq!(own, ["a"]);
        for bad in [
            &["a:20mbit:10ms", "b:10mbit:10ms:share=a"][..],
            &["a:20mbit:10ms", "b:20mbit:10ms:queue=80ms:share=a"],
            &["a:20mbit:10ms", "b:20mbit:10ms:share=c"],
            &["a:20mbit:10ms:share=a"],
            &[
                "a:20mbit:10ms",
                "b:20mbit:10ms:share=a",
                "c:20mbit:10ms:share=b",
            ],
        ] {
            let e = LabSpec::from_parts("x", None, &flags(bad), None).unwrap_err();
            assert!(e.to_string().contains("share="), "{bad:?}: {e}");
        }
    }

    #[test]
    fn no_lines_gives_the_default_pair() {
        let s = LabSpec::from_parts("x", None, &[], None).unwrap();
        assert_eq!(s.lines, LabSpec::default_lines());
        assert_eq!(s.seed, 1);
    }

    #[test]
    fn toml_config_with_direction_overrides_and_flag_override() {
        let dir = std::env::temp_dir().join(format!("mpbond-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lab.toml");
        std::fs::write(
            &path,
            r#"
seed = 9
[[line]]
name = "dsl"
rate = "16mbit"
delay = "10ms"
[line.upstream]
rate = "1mbit"
[[line]]
name = "lte"
rate = "40mbit"
delay = "30ms"
loss = 0.5
"#,
        )
        .unwrap();
        let s =
            LabSpec::from_parts("x", Some(&path), &["lte:5mbit:100ms".to_owned()], None).unwrap();
        assert_eq!(s.seed, 9);
        assert_eq!(s.lines[0].upstream.rate.bps(), 1_000_000);
        assert_eq!(s.lines[0].downstream.rate.bps(), 16_000_000);
        assert_eq!(s.lines[0].upstream.queue, Duration::from_millis(50));
        assert_eq!(s.lines[1].downstream.rate.bps(), 5_000_000);
        assert_eq!(s.lines[1].downstream.queue, Duration::from_millis(200));

        std::fs::write(
            &path,
            "[[line]]\nname = \"dsl\"\nrate = \"16mbit\"\ncolour = 1\n",
        )
        .unwrap();
        let e = LabSpec::from_parts("x", Some(&path), &[], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour") && !e.contains('\n'), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
