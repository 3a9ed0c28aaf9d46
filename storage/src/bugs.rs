//! Test-only bug switches (feature `bug-switches`; absent from normal builds).
//!
//! Each switch plants one known bug in the server so that the Jepsen harness
//! can show it catches it (`jepsen/README.md`, "Bug switches"). The state
//! lives here, in the lowest crate every crate with a switch depends on, so
//! there is one place to set it: the server calls [`switch_on`] once at
//! start-up with what `CAIRN_BUGS` names, before anything reads it, and the
//! code of each bug asks [`is_on`].

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use thiserror::Error;

/// One plantable bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bug {
    /// Linearizable reads are served from the member's local state, with no
    /// read index.
    LinReadLocal,
    /// Put, DeleteRange and Txn with writes are answered from the member's
    /// local state before they are committed (they are proposed in the
    /// background).
    AckBeforeCommit,
    /// The Raft log acknowledges appends without making them durable: they
    /// stay in a user-space buffer that `kill -9` loses.
    SkipLogFsync,
    /// The watch hub drops one event on its way to a watcher.
    WatchDropEvent,
    /// Revoking a lease (by a client or on expiry) deletes its keys in two
    /// revisions instead of one.
    LeaseTwoRevisions,
}

impl Bug {
    pub const ALL: [Bug; 5] = [
        Bug::LinReadLocal,
        Bug::AckBeforeCommit,
        Bug::SkipLogFsync,
        Bug::WatchDropEvent,
        Bug::LeaseTwoRevisions,
    ];

    /// The name `CAIRN_BUGS` uses.
    pub fn name(self) -> &'static str {
        match self {
            Bug::LinReadLocal => "lin-read-local",
            Bug::AckBeforeCommit => "ack-before-commit",
            Bug::SkipLogFsync => "skip-log-fsync",
            Bug::WatchDropEvent => "watch-drop-event",
            Bug::LeaseTwoRevisions => "lease-two-revisions",
        }
    }

    /// What the bug breaks, for the start-up warning.
    pub fn description(self) -> &'static str {
        match self {
            Bug::LinReadLocal => "linearizable reads are served locally without a read index",
            Bug::AckBeforeCommit => "writes are acknowledged before they are committed",
            Bug::SkipLogFsync => "the raft log acknowledges appends that kill -9 loses",
            Bug::WatchDropEvent => "the watch hub drops the 100th event it delivers",
            Bug::LeaseTwoRevisions => "lease revocation deletes the lease's keys in two revisions",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum BugSwitchError {
    #[error("unknown bug switch {0:?} (known: lin-read-local, ack-before-commit, skip-log-fsync, watch-drop-event, lease-two-revisions)")]
    Unknown(String),
    #[error("the bug switches were already set")]
    AlreadySet,
}

impl FromStr for Bug {
    type Err = BugSwitchError;

    fn from_str(s: &str) -> Result<Bug, BugSwitchError> {
        Bug::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| BugSwitchError::Unknown(s.to_string()))
    }
}

/// Parses a comma-separated list of switch names (spaces around names and
/// empty items are ignored; repeats count once).
pub fn parse(list: &str) -> Result<Vec<Bug>, BugSwitchError> {
    let mut bugs = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let bug: Bug = name.parse()?;
        if !bugs.contains(&bug) {
            bugs.push(bug);
        }
    }
    Ok(bugs)
}

/// The switches on, as a bit set; unset means none.
static SWITCHES: OnceLock<u8> = OnceLock::new();

/// Turns `bugs` on for the rest of the process. Only the first call counts:
/// a later one fails, so the set cannot change under running code.
pub fn switch_on(bugs: &[Bug]) -> Result<(), BugSwitchError> {
    let bits = bugs.iter().fold(0, |acc, b| acc | b.bit());
    SWITCHES.set(bits).map_err(|_| BugSwitchError::AlreadySet)
}

pub fn is_on(bug: Bug) -> bool {
    SWITCHES.get().is_some_and(|bits| bits & bug.bit() != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_fit_the_bit_set() {
        for bug in Bug::ALL {
            assert_eq!(bug.name().parse::<Bug>(), Ok(bug));
            assert!(BugSwitchError::Unknown(String::new()).to_string().contains(bug.name()));
        }
        assert!(Bug::ALL.len() <= u8::BITS as usize);
    }

    #[test]
    fn parse_lists() {
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(
            parse(" lin-read-local,,skip-log-fsync ,lin-read-local"),
            Ok(vec![Bug::LinReadLocal, Bug::SkipLogFsync])
        );
        assert_eq!(parse("lin-read-local,nope"), Err(BugSwitchError::Unknown("nope".into())));
    }

    #[test]
    fn switches_are_set_once() {
        assert!(!is_on(Bug::WatchDropEvent));
        switch_on(&[Bug::WatchDropEvent]).unwrap();
        assert!(is_on(Bug::WatchDropEvent));
        assert!(!is_on(Bug::LinReadLocal));
        assert_eq!(switch_on(&[Bug::LinReadLocal]), Err(BugSwitchError::AlreadySet));
        assert!(!is_on(Bug::LinReadLocal));
    }
}
