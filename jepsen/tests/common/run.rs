//! What the tests that run `cairn-jepsen` against a real cluster share.

use std::time::{SystemTime, UNIX_EPOCH};

/// The run's seed: `CAIRN_JEPSEN_SEED` to replay one, otherwise drawn from
/// the clock. Each test prints it.
pub fn seed() -> u64 {
    match std::env::var("CAIRN_JEPSEN_SEED") {
        Ok(s) => s.parse().expect("CAIRN_JEPSEN_SEED must be an integer"),
        Err(_) => {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000_007
        }
    }
}

/// The `key=value` fields of the summary line.
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
}
