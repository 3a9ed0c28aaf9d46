//! The harness must catch every test-only bug switch of the server
//! (`jepsen/README.md`, "Bug switches"): each test runs `cairn-jepsen run`
//! for a short while on a cluster of `cairn-bugs` (cairn built with
//! `--features bug-switches`) with one switch on, and requires the run to
//! be invalid for the reason the bug causes, named in `report.txt`. One run
//! without a switch shows the same binary and settings pass, and two
//! start-up checks show that a switch can neither be set on a normal build
//! nor be misspelled.
//!
//! `cairn-bugs` must sit next to `cairn` in the target directory:
//!
//! ```sh
//! cargo build --release -p cairn-server --features bug-switches
//! cp --remove-destination target/release/cairn target/release/cairn-bugs
//! cargo build --release -p cairn-server
//! ```
//!
//! Without it the tests print a loud SKIP and pass, unless `CI=true`. Seeds
//! are printed (`CAIRN_JEPSEN_SEED` reruns one); the report directory of a
//! run that did not go as required is kept and printed.

/// The seed and summary-line helpers this test shares with the other cluster-run test.
mod common {
    pub mod run;
}

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::run::{field, seed};

/// Longest a run may take before the test kills it (its cairn processes die
/// with it: they have a parent-death signal).
const RUN_DEADLINE: Duration = Duration::from_secs(150);
/// Longest a server refusing to start may take to exit.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(20);

/// Where the cairn binaries are built: two levels above this test's
/// executable (`target/release/deps/bug_catches-…`), else
/// `$CARGO_TARGET_DIR/release`.
fn binary(name: &str) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent().and_then(Path::parent) {
            candidates.push(dir.join(name));
        }
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("release").join(name));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// The normal `cairn`; every cluster test needs it, so it is required.
fn cairn() -> PathBuf {
    binary("cairn").unwrap_or_else(|| {
        panic!("the cairn binary is not built next to this test; build it in the same target dir: cargo build --release -p cairn-server")
    })
}

/// `cairn-bugs`, or `None` (after a loud SKIP) when it was not built. On CI
/// (`CI=true`) it must be there.
fn cairn_bugs(test: &str) -> Option<PathBuf> {
    if let Some(path) = binary("cairn-bugs") {
        return Some(path);
    }
    let how = "cargo build --release -p cairn-server --features bug-switches && \
               cp --remove-destination target/release/cairn target/release/cairn-bugs";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: CI=true but there is no cairn-bugs binary next to cairn; build it first: {how}");
    }
    let banner = "*".repeat(78);
    let message = format!(
        "{banner}\nSKIP {test}: no cairn-bugs binary next to cairn, so this test did NOT run.\n\
         Build it first: {how}\n{banner}"
    );
    println!("{message}");
    eprintln!("{message}");
    None
}


/// Waits for `child` until `deadline` has passed since `started`; kills it
/// then and returns `None`.
fn wait_bounded(child: &mut Child, started: Instant, deadline: Duration) -> Option<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What one `cairn-jepsen run` left behind.
struct Run {
    seed: u64,
    status: ExitStatus,
    /// The summary line (the last line of stdout).
    line: String,
    report_text: String,
    elapsed: Duration,
    /// Holds the report directory; dropped (removed) unless kept.
    tmp: tempfile::TempDir,
}

impl Run {
    /// Keeps the report directory and returns its path.
    fn keep(self) -> PathBuf {
        self.tmp.keep().join("report")
    }
}

/// Runs `cairn-jepsen run ARGS --cairn BINARY [--bugs BUGS]` with a fresh
/// seed and report directory.
fn run(test: &str, binary: &Path, bugs: Option<&str>, args: &[&str]) -> Run {
    let seed = seed();
    println!("{test}: seed {seed} (rerun with CAIRN_JEPSEN_SEED={seed}), bugs {bugs:?}, args {args:?}");
    let tmp = tempfile::Builder::new()
        .prefix("cairn-bug-catch-")
        .tempdir()
        .unwrap();
    let report = tmp.path().join("report");
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn-jepsen"));
    command
        .arg("run")
        .args(args)
        .args(["--seed", &seed.to_string()])
        .arg("--cairn")
        .arg(binary)
        .arg("--report-dir")
        .arg(&report)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(bugs) = bugs {
        command.args(["--bugs", bugs]);
    }
    let mut child = command.spawn().expect("start cairn-jepsen");
    let started = Instant::now();
    let Some(status) = wait_bounded(&mut child, started, RUN_DEADLINE) else {
        let kept = tmp.keep();
        panic!(
            "{test} (seed {seed}): the run took longer than {RUN_DEADLINE:?}; report kept in {}",
            kept.display()
        );
    };
    let elapsed = started.elapsed();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let report_text = std::fs::read_to_string(report.join("report.txt")).unwrap_or_default();
    println!(
        "{test}: {status} in {:.1} s\n{stdout}\n{report_text}",
        elapsed.as_secs_f64()
    );
    Run {
        seed,
        status,
        line: stdout.lines().last().unwrap_or_default().to_string(),
        report_text,
        elapsed,
        tmp,
    }
}

/// Runs with `bug` on and requires an invalid verdict whose report names
/// one of `expect` (a checker's verdict or anomaly kind).
fn assert_caught(test: &str, bug: &str, args: &[&str], expect: &[&str]) {
    let Some(bugs_binary) = cairn_bugs(test) else { return };
    let run = run(test, &bugs_binary, Some(bug), args);
    let found: Vec<&str> = expect
        .iter()
        .copied()
        .filter(|e| run.report_text.contains(e))
        .collect();
    let problems: Vec<String> = [
        run.status
            .success()
            .then(|| "cairn-jepsen exited 0: the run was valid".to_string()),
        (!field(&run.line, "verdict").is_some_and(|v| v.eq_ignore_ascii_case("invalid")))
            .then(|| format!("summary line {:?} is not an invalid verdict", run.line)),
        (!run.report_text.contains("verdict: INVALID"))
            .then(|| "report.txt does not say INVALID".to_string()),
        found
            .is_empty()
            .then(|| format!("report.txt names none of {expect:?}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let (seed, elapsed) = (run.seed, run.elapsed);
    if !problems.is_empty() {
        let kept = run.keep();
        panic!(
            "{test} (seed {seed}): bug {bug} was not caught: {}; report kept in {}",
            problems.join("; "),
            kept.display()
        );
    }
    println!(
        "{test}: bug {bug} caught (report names {found:?}) in a run of {:.1} s, seed {seed}",
        elapsed.as_secs_f64()
    );
}

/// Register clients spread over all members while followers are cut off
/// and paused: a member that answers reads locally serves stale values
/// (followers apply a little behind the leader even without faults, so
/// this usually catches `lin-read-local` in the first second).
const REGISTER_UNDER_PARTITIONS: &[&str] = &[
    "--workload",
    "register",
    "--nodes",
    "3",
    "--nemesis",
    "partition,pause",
    "--nemesis-interval",
    "2s",
    "--time-limit",
    "15s",
    "--concurrency",
    "10",
];

#[test]
fn lin_read_local_is_caught() {
    assert_caught(
        "lin_read_local",
        "lin-read-local",
        REGISTER_UNDER_PARTITIONS,
        &["register checker: not linearizable"],
    );
}

/// No faults needed: a write answered before it commits is missed by reads
/// that start after the answer (and its header revision is a guess).
#[test]
fn ack_before_commit_is_caught() {
    assert_caught(
        "ack_before_commit",
        "ack-before-commit",
        &[
            "--workload",
            "register",
            "--nodes",
            "3",
            "--nemesis",
            "none",
            "--time-limit",
            "10s",
            "--concurrency",
            "10",
        ],
        &["register checker: not linearizable"],
    );
}

/// Acknowledged log entries are lost only when every member loses them at
/// once: `kill-all`. The first one (3–9 s into the run) usually catches it;
/// 20 s leaves room for two or three.
#[test]
fn skip_log_fsync_is_caught() {
    assert_caught(
        "skip_log_fsync",
        "skip-log-fsync",
        &[
            "--workload",
            "register",
            "--nodes",
            "3",
            "--nemesis",
            "kill-all",
            "--nemesis-interval",
            "3s",
            "--time-limit",
            "20s",
            "--concurrency",
            "10",
        ],
        &["register checker: not linearizable"],
    );
}

/// Each member drops the 100th event it delivers, well within the first
/// second of the `watch` workload; the watcher that lost it has a gap.
#[test]
fn watch_drop_event_is_caught() {
    assert_caught(
        "watch_drop_event",
        "watch-drop-event",
        &[
            "--workload",
            "watch",
            "--nodes",
            "3",
            "--nemesis",
            "none",
            "--time-limit",
            "10s",
            "--concurrency",
            "5",
        ],
        &["watch gap"],
    );
}

/// The `lease` workload revokes and lets expire leases with several keys
/// within seconds; the observer sees their keys go at two revisions.
#[test]
fn lease_two_revisions_is_caught() {
    assert_caught(
        "lease_two_revisions",
        "lease-two-revisions",
        &[
            "--workload",
            "lease",
            "--nodes",
            "3",
            "--nemesis",
            "none",
            "--time-limit",
            "10s",
            "--concurrency",
            "10",
        ],
        &["split-deletion"],
    );
}

/// The bug build with no switch on, under the settings that catch
/// `lin-read-local`, is valid: the catches come from the switches.
#[test]
fn bug_build_without_switches_is_valid() {
    let test = "bug_build_without_switches";
    let Some(bugs_binary) = cairn_bugs(test) else { return };
    let run = run(test, &bugs_binary, None, REGISTER_UNDER_PARTITIONS);
    let ops: u64 = field(&run.line, "ops").and_then(|v| v.parse().ok()).unwrap_or(0);
    if !run.status.success() || field(&run.line, "verdict") != Some("valid") || ops < 500 {
        let (seed, line) = (run.seed, run.line.clone());
        let kept = run.keep();
        panic!(
            "{test} (seed {seed}): expected a valid run of at least 500 operations, got {line:?}; report kept in {}",
            kept.display()
        );
    }
}

/// Starts `binary` with `CAIRN_BUGS=bugs` and requires it to exit
/// unsuccessfully, saying something that contains `expect`.
fn assert_refuses(test: &str, binary: &Path, bugs: &str, expect: &str) {
    let data = tempfile::Builder::new()
        .prefix("cairn-bug-refusal-")
        .tempdir()
        .unwrap();
    let mut child = Command::new(binary)
        .arg("--name=m0")
        .arg(format!("--data-dir={}", data.path().join("m0").display()))
        .arg("--listen-client-urls=http://127.0.0.1:0")
        .arg("--listen-peer-urls=http://127.0.0.1:0")
        .env("CAIRN_BUGS", bugs)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cairn");
    let status = wait_bounded(&mut child, Instant::now(), REFUSAL_DEADLINE);
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut output).unwrap();
    }
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut output).unwrap();
    }
    println!("{test}: {status:?}\n{output}");
    let status = status.unwrap_or_else(|| {
        panic!("{test}: {} with CAIRN_BUGS={bugs} was still running after {REFUSAL_DEADLINE:?}", binary.display())
    });
    assert!(!status.success(), "{test}: {} with CAIRN_BUGS={bugs} exited successfully", binary.display());
    assert!(
        output.contains(expect),
        "{test}: the output does not contain {expect:?}"
    );
}

#[test]
fn normal_build_refuses_bug_switches() {
    assert_refuses(
        "normal_build_refuses_bug_switches",
        &cairn(),
        "lin-read-local",
        "built without the bug-switches feature",
    );
}

#[test]
fn bug_build_refuses_unknown_switches() {
    let test = "bug_build_refuses_unknown_switches";
    let Some(bugs_binary) = cairn_bugs(test) else { return };
    assert_refuses(test, &bugs_binary, "lin-read-local,no-such-bug", "unknown bug switch \"no-such-bug\"");
}
