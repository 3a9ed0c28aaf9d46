//! `cairn-jepsen run` end to end on a real 3-member cairn cluster: the
//! register workload under kills and pauses, the kv workload under
//! partitions. Each run is bounded (about 25 s of load plus start-up and
//! checks) and must be valid, with enough operations and faults. The seed
//! is printed (`CAIRN_JEPSEN_SEED` reruns one); a failing run's report
//! directory is kept and printed, a passing one is removed.

/// The seed and summary-line helpers this test shares with the other cluster-run test.
mod common {
    pub mod run;
}

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::run::{field, seed};

/// Longest a run may take before the test kills it (the harness then
/// takes its cairn processes down with it: they die with their parent).
const RUN_DEADLINE: Duration = Duration::from_secs(150);

/// The `cairn` binary: built next to this test's binaries (two levels above
/// the test executable, `target/release/deps/run_cluster-…`), else in
/// `$CARGO_TARGET_DIR/release`.
fn cairn_binary() -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent().and_then(Path::parent) {
            candidates.push(dir.join("cairn"));
        }
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("release").join("cairn"));
    }
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "the cairn binary is not built next to this test ({:?}); build it in the same target dir first: \
             cargo build --release --bin cairn (cargo nextest run --release --workspace does)",
            std::env::current_exe().ok()
        )
    })
}


struct Expect {
    min_ops: u64,
    min_faults: u64,
}

fn run(test: &str, args: &[&str], expect: Expect) {
    let seed = seed();
    println!("{test}: seed {seed} (rerun with CAIRN_JEPSEN_SEED={seed})");
    let tmp = tempfile::Builder::new()
        .prefix("cairn-jepsen-test-")
        .tempdir()
        .unwrap();
    let report = tmp.path().join("report");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn-jepsen"))
        .arg("run")
        .args(args)
        .args(["--seed", &seed.to_string()])
        .arg("--cairn")
        .arg(cairn_binary())
        .arg("--report-dir")
        .arg(&report)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start cairn-jepsen");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            let kept = tmp.keep();
            panic!(
                "{test}: the run took longer than {RUN_DEADLINE:?}; report kept in {}",
                kept.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    println!(
        "{test}: {status} in {:.1} s\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    let text = std::fs::read_to_string(report.join("report.txt")).unwrap_or_default();
    println!("{text}");

    let line = stdout.lines().last().unwrap_or_default().to_string();
    let ops: u64 = field(&line, "ops")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let faults: u64 = field(&line, "faults")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let files = [
        "config.json",
        "history.jsonl",
        "nemesis.log",
        "verdict.json",
        "report.txt",
        "latency.svg",
        "logs/m0.log",
        "logs/m1.log",
        "logs/m2.log",
    ];
    let missing: Vec<&str> = files
        .iter()
        .copied()
        .filter(|f| !report.join(f).is_file())
        .collect();
    let verdict: serde_json::Value = std::fs::read_to_string(report.join("verdict.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let problems: Vec<String> = [
        (!status.success()).then(|| format!("exit status {status}")),
        (field(&line, "verdict") != Some("valid")).then(|| format!("summary line {line:?}")),
        (ops < expect.min_ops)
            .then(|| format!("{ops} operations, expected at least {}", expect.min_ops)),
        (faults < expect.min_faults)
            .then(|| format!("{faults} faults, expected at least {}", expect.min_faults)),
        (!missing.is_empty()).then(|| format!("missing report files {missing:?}")),
        (verdict["valid"] != serde_json::Value::Bool(true))
            .then(|| "verdict.json is not valid".to_string()),
        (verdict["seed"] != serde_json::json!(seed))
            .then(|| "verdict.json has another seed".to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !problems.is_empty() {
        let kept = tmp.keep();
        panic!(
            "{test} (seed {seed}): {}; report kept in {}",
            problems.join("; "),
            kept.join("report").display()
        );
    }
}

#[test]
fn register_under_kill_and_pause_is_linearizable() {
    run(
        "register_under_kill_and_pause",
        &[
            "--workload",
            "register",
            "--nodes",
            "3",
            "--nemesis",
            "kill,pause",
            "--time-limit",
            "25s",
            "--nemesis-interval",
            "1500ms",
            "--concurrency",
            "10",
        ],
        Expect {
            min_ops: 1000,
            min_faults: 3,
        },
    );
}

#[test]
fn kv_under_partitions_keeps_revision_order() {
    run(
        "kv_under_partitions",
        &[
            "--workload",
            "kv",
            "--nodes",
            "3",
            "--nemesis",
            "partition",
            "--time-limit",
            "25s",
            "--nemesis-interval",
            "1500ms",
            "--concurrency",
            "10",
        ],
        Expect {
            min_ops: 1000,
            min_faults: 3,
        },
    );
}
