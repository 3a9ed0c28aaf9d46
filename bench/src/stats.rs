//! Per-task measurements (latency histogram, error tally) and their merge.
//!
//! Every client task owns its own [`Stats`] and records without any shared
//! lock; the driver merges them once the phase is over.

use std::collections::HashMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Significant decimal digits kept by the latency histograms: microsecond
/// values with 0.1% relative error.
const SIGFIG: u8 = 3;

/// How many distinct error kinds a report lists; the rest are summed into one
/// "other" entry so a storm of distinct messages cannot bloat the output.
pub const MAX_ERROR_KINDS: usize = 10;

/// A failed operation, keyed for counting by gRPC code and message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{code}: {message}")]
pub struct OpError {
    pub code: String,
    pub message: String,
}

impl OpError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        OpError { code: code.into(), message: message.into() }
    }

    /// The client gave up waiting (`--timeout`).
    pub fn timeout(after: Duration) -> Self {
        OpError::new("DeadlineExceeded", format!("no response within {after:?} (client timeout)"))
    }
}

impl From<tonic::Status> for OpError {
    fn from(s: tonic::Status) -> Self {
        OpError::new(format!("{:?}", s.code()), s.message())
    }
}

/// A latency histogram in microseconds.
pub fn new_histogram() -> Histogram<u64> {
    // Auto-resizing: it starts small and grows to the largest latency seen,
    // so a thousand clients do not each allocate for an hour-long range.
    Histogram::new(SIGFIG).expect("3 significant figures is a valid histogram precision")
}

/// Records `d` in `h` with microsecond resolution (at least 1 µs, so a
/// sub-microsecond answer still counts as an op).
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    // `record` grows an auto-resizing histogram; `saturating_record` would
    // clamp to the current top instead. It fails only if the histogram cannot
    // grow any further, and then clamping is the best left to do.
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

/// Errors counted by (code, message).
#[derive(Debug, Clone, Default)]
pub struct ErrorTally {
    counts: HashMap<OpError, u64>,
}

impl ErrorTally {
    pub fn add(&mut self, e: OpError) {
        self.add_n(e, 1);
    }

    pub fn add_n(&mut self, e: OpError, n: u64) {
        if n > 0 {
            *self.counts.entry(e).or_default() += n;
        }
    }

    pub fn merge(&mut self, other: ErrorTally) {
        for (e, n) in other.counts {
            self.add_n(e, n);
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The most frequent kinds first (ties by code, then message, so the
    /// order is stable), at most [`MAX_ERROR_KINDS`] of them; the remaining
    /// kinds are summed into a final `other` entry.
    pub fn summary(&self) -> Vec<ErrorCount> {
        let mut all: Vec<(&OpError, u64)> = self.counts.iter().map(|(e, n)| (e, *n)).collect();
        all.sort_by(|a, b| {
            b.1.cmp(&a.1).then_with(|| a.0.code.cmp(&b.0.code)).then_with(|| a.0.message.cmp(&b.0.message))
        });
        let mut out: Vec<ErrorCount> = all
            .iter()
            .take(MAX_ERROR_KINDS)
            .map(|(e, n)| ErrorCount { code: e.code.clone(), message: e.message.clone(), count: *n })
            .collect();
        let rest = all.len().saturating_sub(MAX_ERROR_KINDS);
        if rest > 0 {
            let count = all[MAX_ERROR_KINDS..].iter().map(|(_, n)| n).sum();
            out.push(ErrorCount { code: "other".into(), message: format!("{rest} more kinds of error"), count });
        }
        out
    }
}

/// One line of the error summary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorCount {
    pub code: String,
    pub message: String,
    pub count: u64,
}

/// What one client task measured in one phase.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of successful operations, in microseconds.
    pub latency: Histogram<u64>,
    pub errors: ErrorTally,
}

impl Default for Stats {
    fn default() -> Self {
        Stats { latency: new_histogram(), errors: ErrorTally::default() }
    }
}

impl Stats {
    pub fn ok(&self) -> u64 {
        self.latency.len()
    }

    pub fn merge(&mut self, other: Stats) {
        self.latency.add(&other.latency).expect("auto-resizing histograms always merge");
        self.errors.merge(other.errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_by_code_and_message() {
        let mut t = ErrorTally::default();
        t.add(OpError::new("Unavailable", "no leader"));
        t.add(OpError::new("Unavailable", "no leader"));
        t.add(OpError::new("Unavailable", "other"));
        let mut u = ErrorTally::default();
        u.add_n(OpError::new("Unknown", "x"), 5);
        u.add_n(OpError::new("Unknown", "never"), 0);
        t.merge(u);
        assert_eq!(t.total(), 8);
        let s = t.summary();
        assert_eq!(
            s,
            [
                ErrorCount { code: "Unknown".into(), message: "x".into(), count: 5 },
                ErrorCount { code: "Unavailable".into(), message: "no leader".into(), count: 2 },
                ErrorCount { code: "Unavailable".into(), message: "other".into(), count: 1 },
            ]
        );
    }

    #[test]
    fn summary_folds_rare_kinds_into_other() {
        let mut t = ErrorTally::default();
        for i in 0..(MAX_ERROR_KINDS as u64 + 3) {
            t.add_n(OpError::new("Internal", format!("e{i:02}")), 100 - i);
        }
        let s = t.summary();
        assert_eq!(s.len(), MAX_ERROR_KINDS + 1);
        let other = s.last().unwrap();
        assert_eq!(other.code, "other");
        assert_eq!(other.count, (100 - 10) + (100 - 11) + (100 - 12));
        assert_eq!(s.iter().map(|e| e.count).sum::<u64>(), t.total());
    }

    #[test]
    fn status_maps_to_code_name_and_message() {
        let e: OpError = tonic::Status::unavailable("etcdserver: no leader").into();
        assert_eq!(e, OpError::new("Unavailable", "etcdserver: no leader"));
    }

    #[test]
    fn stats_merge_adds_samples() {
        let mut a = Stats::default();
        record(&mut a.latency, Duration::from_micros(100));
        let mut b = Stats::default();
        record(&mut b.latency, Duration::from_millis(2000));
        record(&mut b.latency, Duration::from_nanos(10));
        b.errors.add(OpError::timeout(Duration::from_secs(1)));
        a.merge(b);
        assert_eq!(a.ok(), 3);
        assert_eq!(a.errors.total(), 1);
        assert_eq!(a.latency.min(), 1);
        assert!(a.latency.max() >= 2_000_000);
    }
}
