//! Human units used on the command line and in config files: link rates (`20mbit`), durations
//! (`10ms`) and percentages (`0.5` or `0.5%`).
//!
//! Rates use the decimal bit units of `tc` (`bit`, `kbit`, `mbit`, `gbit`). `tc`'s `kbps`/`mbps`
//! mean *bytes* per second, a classic source of 8× mistakes, so they are refused with a hint
//! rather than guessed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An error in a rate, duration or percentage written by a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text is not a number followed by a known rate unit.
    #[error("invalid rate `{input}`: {reason}")]
    Rate {
        /// What the user wrote.
        input: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The text is not a number followed by a known time unit.
    #[error("invalid duration `{input}`: {reason}")]
    Duration {
        /// What the user wrote.
        input: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The text is not a percentage between 0 and 100.
    #[error("invalid percentage `{input}`: {reason}")]
    Percent {
        /// What the user wrote.
        input: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

/// Splits `"20.5mbit"` into `("20.5", "mbit")`.
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Parses a non-negative decimal number with at most 9 fractional digits into an exact
/// `(integer, nanos)` pair, avoiding float rounding (`1.1mbit` must be exactly 1 100 000 bit/s).
fn parse_decimal(num: &str) -> Option<(u64, u32)> {
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if (int.is_empty() && frac.is_empty()) || frac.len() > 9 || frac.contains('.') {
        return None;
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut nanos: u32 = 0;
    for (i, c) in frac.chars().enumerate() {
        let d = c.to_digit(10)?;
        nanos += d * 10u32.pow(8 - u32::try_from(i).ok()?);
    }
    Some((int, nanos))
}

/// Scales an exact decimal by a unit multiplier (a power of ten ≥ 1), failing on overflow or on
/// a fractional remainder below the unit's resolution.
fn scale(int: u64, nanos: u32, multiplier: u64) -> Option<u64> {
    let whole = int.checked_mul(multiplier)?;
    let frac = u128::from(nanos) * u128::from(multiplier);
    if frac % 1_000_000_000 != 0 {
        return None;
    }
    whole.checked_add(u64::try_from(frac / 1_000_000_000).ok()?)
}

/// A link rate in bits per second. [`Rate::UNLIMITED`] means "do not shape".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rate(u64);

impl Rate {
    /// No rate limit: packets are never delayed for serialisation.
    pub const UNLIMITED: Rate = Rate(0);

    /// A rate of `bps` bits per second (0 means unlimited).
    #[must_use]
    pub const fn from_bps(bps: u64) -> Self {
        Rate(bps)
    }

    /// Bits per second, 0 when unlimited.
    #[must_use]
    pub const fn bps(self) -> u64 {
        self.0
    }

    /// True for [`Rate::UNLIMITED`].
    #[must_use]
    pub const fn is_unlimited(self) -> bool {
        self.0 == 0
    }

    /// Time needed to serialise `bytes` at this rate (zero when unlimited).
    #[must_use]
    pub fn transmit_time(self, bytes: usize) -> Duration {
        if self.0 == 0 {
            return Duration::ZERO;
        }
        let bits = u128::from(bytes as u64) * 8;
        let nanos = bits * 1_000_000_000 / u128::from(self.0);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Bytes that this rate carries in `d` (`None` when unlimited).
    #[must_use]
    pub fn bytes_in(self, d: Duration) -> Option<u64> {
        if self.0 == 0 {
            return None;
        }
        let bytes = u128::from(self.0) * d.as_nanos() / 8 / 1_000_000_000;
        Some(u64::try_from(bytes).unwrap_or(u64::MAX))
    }
}

impl FromStr for Rate {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, UnitError> {
        let err = |reason| UnitError::Rate {
            input: s.to_owned(),
            reason,
        };
        let t = s.trim();
        if t.eq_ignore_ascii_case("unlimited") {
            return Ok(Rate::UNLIMITED);
        }
        let (num, unit) = split_number(t);
        if num.is_empty() {
            return Err(err("expected a number followed by a unit, like 20mbit"));
        }
        let multiplier = match unit.to_ascii_lowercase().as_str() {
            "bit" => 1,
            "kbit" => 1_000,
            "mbit" => 1_000_000,
            "gbit" => 1_000_000_000,
            "" => return Err(err("missing unit (use bit, kbit, mbit or gbit)")),
            "bps" | "kbps" | "mbps" | "gbps" => {
                return Err(err(
                    "`bps` units are ambiguous (tc reads them as bytes/s); write kbit, mbit or gbit",
                ));
            }
            _ => return Err(err("unknown unit (use bit, kbit, mbit or gbit)")),
        };
        let (int, nanos) = parse_decimal(num).ok_or_else(|| err("malformed number"))?;
        let bps = scale(int, nanos, multiplier)
            .ok_or_else(|| err("not a whole number of bits per second, or too large"))?;
        if bps == 0 {
            return Err(err(
                "a rate of zero would carry nothing (use `unlimited` for no limit)",
            ));
        }
        Ok(Rate(bps))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bps = self.0;
        if bps == 0 {
            return f.write_str("unlimited");
        }
        for (div, unit) in [
            (1_000_000_000, "gbit"),
            (1_000_000, "mbit"),
            (1_000, "kbit"),
        ] {
            if bps >= div {
                let int = bps / div;
                let frac = bps % div;
                if frac == 0 {
                    return write!(f, "{int}{unit}");
                }
                // Shortest exact decimal: the divisor is a power of ten.
                let width = div.ilog10() as usize;
                let digits = format!("{frac:0width$}");
                return write!(f, "{int}.{}{unit}", digits.trim_end_matches('0'));
            }
        }
        write!(f, "{bps}bit")
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a duration such as `10ms`, `1.5ms`, `250us`, `2s`, `5min`, `2h` or `0`.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let err = |reason| UnitError::Duration {
        input: s.to_owned(),
        reason,
    };
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let (num, unit) = split_number(t);
    if num.is_empty() {
        return Err(err("expected a number followed by a unit, like 10ms"));
    }
    let nanos_per_unit: u64 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "" => return Err(err("missing unit (use us, ms, s, min or h)")),
        _ => return Err(err("unknown unit (use ns, us, ms, s, min or h)")),
    };
    let (int, nanos) = parse_decimal(num).ok_or_else(|| err("malformed number"))?;
    let total =
        scale(int, nanos, nanos_per_unit).ok_or_else(|| err("finer than 1ns, or too large"))?;
    Ok(Duration::from_nanos(total))
}

/// Parses a line setting's duration, where a bare number means milliseconds (`40` is `40ms`),
/// as in `--line lte:10mbit:40:queue=80`.
pub fn parse_ms_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return parse_duration(&format!("{t}ms"));
    }
    parse_duration(t)
}

/// Formats a duration in the largest unit that keeps it exact: `10ms`, `1.5ms`, `250us`, `0ms`.
#[must_use]
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0ms".to_owned();
    }
    for (div, unit) in [(1_000_000_000u128, "s"), (1_000_000, "ms"), (1_000, "us")] {
        if ns >= div {
            let int = ns / div;
            let frac = ns % div;
            if frac == 0 {
                return format!("{int}{unit}");
            }
            let width = div.ilog10() as usize;
            let digits = format!("{frac:0width$}");
            return format!("{int}.{}{unit}", digits.trim_end_matches('0'));
        }
    }
    format!("{ns}ns")
}

/// Formats a byte count for people, in decimal units as line contracts count them: `950 B`,
/// `6.2 MB`, `124.4 MB`, `1.3 GB`.
#[must_use]
pub fn format_bytes(n: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "one decimal is shown")]
    let f = n as f64;
    for (div, unit) in [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")] {
        if f >= div {
            return format!("{:.1} {unit}", f / div);
        }
    }
    format!("{n} B")
}

/// Serde helpers for a [`Duration`] written as `"10ms"`.
pub mod duration_str {
    use super::{Duration, format_duration, parse_duration};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises as `"10ms"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    /// Deserialises from `"10ms"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses a percentage in `[0, 100]`, written `0.5` or `0.5%`.
pub fn parse_percent(s: &str) -> Result<f64, UnitError> {
    let err = |reason| UnitError::Percent {
        input: s.to_owned(),
        reason,
    };
    let t = s.trim();
    let t = t.strip_suffix('%').unwrap_or(t);
    let v: f64 = t.parse().map_err(|_| err("not a number"))?;
    if !v.is_finite() || !(0.0..=100.0).contains(&v) {
        return Err(err("must be between 0 and 100"));
    }
    Ok(v)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for `secs` seconds after the Unix epoch.
#[must_use]
pub fn utc_timestamp(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_are_shown_in_decimal_units() {
        assert_eq!(format_bytes(950), "950 B");
        assert_eq!(format_bytes(6_220_800), "6.2 MB");
        assert_eq!(format_bytes(124_416_000), "124.4 MB");
        assert_eq!(format_bytes(1_300_000_000), "1.3 GB");
    }

    #[test]
    fn rate_parses_tc_bit_units_exactly() {
        assert_eq!("20mbit".parse::<Rate>().unwrap().bps(), 20_000_000);
        assert_eq!("1.1mbit".parse::<Rate>().unwrap().bps(), 1_100_000);
        assert_eq!("100kbit".parse::<Rate>().unwrap().bps(), 100_000);
        assert_eq!("1gbit".parse::<Rate>().unwrap().bps(), 1_000_000_000);
        assert_eq!("2.5Gbit".parse::<Rate>().unwrap().bps(), 2_500_000_000);
        assert_eq!("64000bit".parse::<Rate>().unwrap().bps(), 64_000);
        assert_eq!("unlimited".parse::<Rate>().unwrap(), Rate::UNLIMITED);
    }

    #[test]
    fn rate_refuses_malformed_and_ambiguous_input() {
        for bad in [
            "", "0", "mbit", "20", "20mb", "20mbps", "1..2mbit", "-1mbit", "0.5bit", "0mbit",
        ] {
            let e = bad.parse::<Rate>().unwrap_err();
            assert!(matches!(e, UnitError::Rate { .. }), "{bad}: {e}");
            assert!(!e.to_string().contains('\n'), "one-line error for {bad}");
        }
        assert!(
            "20mbps"
                .parse::<Rate>()
                .unwrap_err()
                .to_string()
                .contains("bytes/s")
        );
    }

    #[test]
    fn rate_display_round_trips() {
        for s in [
            "20mbit",
            "1.1mbit",
            "100kbit",
            "1gbit",
            "1.5gbit",
            "800bit",
            "unlimited",
        ] {
            let r: Rate = s.parse().unwrap();
            assert_eq!(r.to_string(), s);
            assert_eq!(r.to_string().parse::<Rate>().unwrap(), r);
        }
        assert_eq!(Rate::from_bps(1_234_567).to_string(), "1.234567mbit");
    }

    #[test]
    fn transmit_time_of_a_full_frame() {
        let r: Rate = "20mbit".parse().unwrap();
        assert_eq!(r.transmit_time(1514), Duration::from_nanos(605_600));
        assert_eq!(Rate::UNLIMITED.transmit_time(1514), Duration::ZERO);
        assert_eq!(r.bytes_in(Duration::from_millis(50)), Some(125_000));
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("10ms").unwrap(), Duration::from_millis(10));
        assert_eq!(
            parse_duration("1.5ms").unwrap(),
            Duration::from_micros(1500)
        );
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("5min").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "10", "ms", "10 m", "1.0000000001s", "x"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for s in ["10ms", "1.5ms", "250us", "2s", "0ms", "1.000001s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
        assert_eq!(parse_ms_duration("40").unwrap(), Duration::from_millis(40));
        assert_eq!(
            parse_ms_duration("0.5").unwrap(),
            Duration::from_micros(500)
        );
        assert_eq!(parse_ms_duration("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_ms_duration("x").is_err());
    }

    #[test]
    fn percentages_are_bounded() {
        assert!((parse_percent("0.5").unwrap() - 0.5).abs() < f64::EPSILON);
        assert!((parse_percent("5%").unwrap() - 5.0).abs() < f64::EPSILON);
        for bad in ["-1", "101", "x", "NaN", "inf"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_795_915_845), "2026-11-29T01:30:45Z");
    }
}
