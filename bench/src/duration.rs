//! Go-style duration strings (`10s`, `1m30s`, `250ms`, `1.5h`).
//!
//! etcd's `benchmark` takes its durations through Go's `time.ParseDuration`,
//! so the same spelling is accepted here: scripts written for one tool work
//! with the other.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDurationError {
    #[error("empty duration")]
    Empty,
    #[error("invalid duration {0:?}: expected a number followed by a unit (ns, us, ms, s, m, h), e.g. 10s or 1m30s")]
    Invalid(String),
    #[error("invalid duration {input:?}: unknown unit {unit:?} (use ns, us, ms, s, m or h)")]
    UnknownUnit { input: String, unit: String },
    #[error("invalid duration {0:?}: too large")]
    Overflow(String),
}

/// Parses a Go `time.ParseDuration` string. Negative durations are refused:
/// nothing in the tool means anything by them.
pub fn parse_duration(input: &str) -> Result<Duration, ParseDurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(ParseDurationError::Empty);
    }
    // Go accepts a bare "0" (and only that) without a unit.
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = || ParseDurationError::Invalid(input.to_string());
    let overflow = || ParseDurationError::Overflow(input.to_string());

    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(num_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(invalid());
        }
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => return Err(ParseDurationError::UnknownUnit { input: input.to_string(), unit: unit.to_string() }),
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let whole: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| overflow())? };
        let mut part = whole.checked_mul(unit_ns).ok_or_else(overflow)?;
        if !frac_part.is_empty() {
            // Exact decimal arithmetic on at most 18 fractional digits; more
            // cannot matter below a nanosecond for any unit up to an hour.
            let digits = &frac_part[..frac_part.len().min(18)];
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            let frac: u128 = digits.parse().map_err(|_| invalid())?;
            part += frac * unit_ns / 10u128.pow(digits.len() as u32);
        }
        total_ns = total_ns.checked_add(part).ok_or_else(overflow)?;
        rest = after;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| overflow())?;
    Ok(Duration::new(secs, (total_ns % 1_000_000_000) as u32))
}

/// What `--warmup` asks for: a number of operations or a length of time,
/// run before measuring and left out of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmup {
    Ops(u64),
    For(Duration),
}

impl FromStr for Warmup {
    type Err = ParseDurationError;

    /// A plain integer is an operation count (`--warmup 1000`); anything else
    /// must be a duration (`--warmup 2s`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().parse::<u64>() {
            Ok(n) => Ok(Warmup::Ops(n)),
            Err(_) => parse_duration(s).map(Warmup::For),
        }
    }
}

impl fmt::Display for Warmup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warmup::Ops(n) => write!(f, "{n} ops"),
            Warmup::For(d) => write!(f, "{d:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("0", Duration::ZERO),
            ("10s", Duration::from_secs(10)),
            ("250ms", Duration::from_millis(250)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5h", Duration::from_secs(5400)),
            ("2h45m", Duration::from_secs(2 * 3600 + 45 * 60)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("7ns", Duration::from_nanos(7)),
            (".5s", Duration::from_millis(500)),
            ("1.000000001s", Duration::new(1, 1)),
            ("+3s", Duration::from_secs(3)),
            (" 3s ", Duration::from_secs(3)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn rejects_malformed_durations() {
        assert_eq!(parse_duration(""), Err(ParseDurationError::Empty));
        for bad in ["10", "s", "1.s.", "-1s", "1x", "1..5s", "5 s", "."] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(matches!(parse_duration("3d"), Err(ParseDurationError::UnknownUnit { unit, .. }) if unit == "d"));
        assert!(matches!(parse_duration("99999999999999999999999h"), Err(ParseDurationError::Overflow(_))));
    }

    #[test]
    fn warmup_is_a_count_or_a_duration() {
        assert_eq!("1000".parse::<Warmup>(), Ok(Warmup::Ops(1000)));
        assert_eq!("0".parse::<Warmup>(), Ok(Warmup::Ops(0)));
        assert_eq!("2s".parse::<Warmup>(), Ok(Warmup::For(Duration::from_secs(2))));
        assert!("2x".parse::<Warmup>().is_err());
    }
}
