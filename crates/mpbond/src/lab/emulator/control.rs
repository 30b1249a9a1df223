//! The emulator's control protocol: one JSON request per connection on a Unix socket, one JSON
//! response back. `mpbond lab line` and `mpbond lab stats` are its clients.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::stats::{LabStats, LineState};
use crate::lab::spec::DirectionSpec;
use crate::units::{Rate, parse_ms_duration as parse_duration, parse_percent};

/// A request to the emulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Is it running? Answers with its pid.
    Ping,
    /// Counters and settings of every line.
    Stats,
    /// Take a line down, bring it up, or blackhole it.
    State {
        /// Line name.
        line: String,
        /// New state.
        state: LineState,
    },
    /// Change settings of a line: `rate=.. delay=.. loss=.. jitter=.. queue=.. reorder=..
    /// dir=upstream|downstream|both`.
    Set {
        /// Line name.
        line: String,
        /// `KEY=VALUE` words.
        settings: Vec<String>,
    },
    /// Stop the emulator.
    Shutdown,
}

/// The emulator's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `ping`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// For `stats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<LabStats>,
}

impl Response {
    /// A success with nothing to report.
    #[must_use]
    pub fn ok() -> Self {
        Response {
            ok: true,
            ..Response::default()
        }
    }

    /// A refusal.
    #[must_use]
    pub fn error(message: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(message.into()),
            ..Response::default()
        }
    }
}

/// Which directions a `set` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directions {
    /// Gateway → vps only.
    Upstream,
    /// Vps → gateway only.
    Downstream,
    /// Both.
    Both,
}

impl Directions {
    /// Whether direction `k` (0 upstream, 1 downstream) is included.
    #[must_use]
    pub fn includes(self, k: usize) -> bool {
        matches!(
            (self, k),
            (Directions::Both, _) | (Directions::Upstream, 0) | (Directions::Downstream, 1)
        )
    }
}

/// Parsed `KEY=VALUE` settings of a `set`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineChanges {
    /// New rate.
    pub rate: Option<Rate>,
    /// New delay.
    pub delay: Option<Duration>,
    /// New jitter.
    pub jitter: Option<Duration>,
    /// New loss, percent.
    pub loss: Option<f64>,
    /// New queue size.
    pub queue: Option<Duration>,
    /// New reorder flag.
    pub reorder: Option<bool>,
}

impl LineChanges {
    /// Parses `rate=5mbit delay=20ms loss=1 jitter=2ms queue=100ms reorder=true dir=upstream`.
    pub fn parse(words: &[String]) -> Result<(Directions, LineChanges), String> {
        let mut c = LineChanges::default();
        let mut dirs = Directions::Both;
        if words.is_empty() {
            return Err("`set` needs at least one KEY=VALUE (rate, delay, loss, jitter, queue, reorder, dir)".into());
        }
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                return Err(format!("`{w}`: expected KEY=VALUE"));
            };
            let e = |e: crate::units::UnitError| e.to_string();
            match k {
                "rate" => c.rate = Some(v.parse().map_err(e)?),
                "delay" => c.delay = Some(parse_duration(v).map_err(e)?),
                "jitter" => c.jitter = Some(parse_duration(v).map_err(e)?),
                "queue" => c.queue = Some(parse_duration(v).map_err(e)?),
                "loss" => c.loss = Some(parse_percent(v).map_err(e)?),
                "reorder" => {
                    c.reorder = Some(match v {
                        "true" | "yes" | "1" => true,
                        "false" | "no" | "0" => false,
                        _ => return Err(format!("`{w}`: reorder is true or false")),
                    });
                }
                "dir" => {
                    dirs = match v {
                        "upstream" | "up" => Directions::Upstream,
                        "downstream" | "down" => Directions::Downstream,
                        "both" => Directions::Both,
                        _ => return Err(format!("`{w}`: dir is upstream, downstream or both")),
                    };
                }
                _ => {
                    return Err(format!(
                        "unknown setting `{k}` (known: rate, delay, loss, jitter, queue, reorder, dir)"
                    ));
                }
            }
        }
        Ok((dirs, c))
    }

    /// Applies the changes to `d`.
    pub fn apply(&self, d: &mut DirectionSpec) {
        if let Some(v) = self.rate {
            d.rate = v;
        }
        if let Some(v) = self.delay {
            d.delay = v;
        }
        if let Some(v) = self.jitter {
            d.jitter = v;
        }
        if let Some(v) = self.loss {
            d.loss = v;
        }
        if let Some(v) = self.queue {
            d.queue = v;
        }
        if let Some(v) = self.reorder {
            d.reorder = v;
        }
    }
}

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No emulator answers on the socket.
    #[error("the lab's emulator is not running ({path}: {source})")]
    NotRunning {
        /// The control socket.
        path: String,
        /// Why the connection failed.
        source: std::io::Error,
    },
    /// The conversation broke.
    #[error("talking to the lab's emulator: {0}")]
    Io(#[from] std::io::Error),
    /// The emulator answered something unreadable.
    #[error("the lab's emulator answered nonsense: {0}")]
    Protocol(#[from] serde_json::Error),
    /// The emulator refused the request.
    #[error("{0}")]
    Refused(String),
}

/// Sends `req` to the emulator listening on `path` and returns its successful answer.
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ControlError> {
    let mut stream = UnixStream::connect(path).map_err(|source| ControlError::NotRunning {
        path: path.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    let resp: Response = serde_json::from_str(&answer)?;
    if resp.ok {
        Ok(resp)
    } else {
        Err(ControlError::Refused(
            resp.error.unwrap_or_else(|| "refused".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_words_parse_and_apply() {
        let words: Vec<String> = ["rate=5mbit", "delay=20ms", "loss=1.5", "dir=upstream"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let (dirs, c) = LineChanges::parse(&words).unwrap();
        assert_eq!(dirs, Directions::Upstream);
        assert!(dirs.includes(0) && !dirs.includes(1));
        let mut d =
            crate::lab::spec::LineSpec::new("x", Rate::from_bps(1), Duration::ZERO).upstream;
        c.apply(&mut d);
        assert_eq!(d.rate.bps(), 5_000_000);
        assert_eq!(d.delay, Duration::from_millis(20));
        assert!((d.loss - 1.5).abs() < 1e-12);
    }

    #[test]
    fn bad_set_words_are_refused() {
        for bad in [
            &[][..],
            &["rate"],
            &["rate=fast"],
            &["colour=red"],
            &["dir=sideways"],
            &["loss=101"],
        ] {
            let words: Vec<String> = bad.iter().map(|s| (*s).to_owned()).collect();
            let e = LineChanges::parse(&words).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn requests_have_a_stable_json_form() {
        let r = Request::State {
            line: "dsl".into(),
            state: LineState::Blackhole,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"cmd":"state","line":"dsl","state":"blackhole"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Ping).unwrap(),
            r#"{"cmd":"ping"}"#
        );
    }
}
