//! The register checker against Jepsen's published etcd histories, whose
//! verdicts are known (testdata/jepsen-etcd-register/verdicts.txt).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_jepsen::checker::register::{self, Verdict};
use cairn_jepsen::checker::Budget;
use cairn_jepsen::{history, jepsen_log};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/jepsen-etcd-register")
}

#[test]
fn every_etcd_history_gets_its_known_verdict() {
    let dir = data_dir();
    let verdicts = std::fs::read_to_string(dir.join("verdicts.txt")).unwrap();
    // Each file takes milliseconds; the limits are generous for a loaded CI
    // machine and only bound how long a regression can make this test run.
    let per_file = Duration::from_secs(10);
    let total = Duration::from_secs(60);
    let started = Instant::now();
    let mut checked = 0;
    let mut mismatches = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    for line in verdicts.lines().filter(|l| !l.trim().is_empty()) {
        let (number, expected) = line.split_once(' ').unwrap();
        let expected: bool = expected.trim().parse().unwrap();
        let name = format!("etcd_{number}.log");
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        let paired = history::pair(&jepsen_log::parse(&text).unwrap()).unwrap();
        let budget = Budget {
            timeout: Some(per_file.min(total.saturating_sub(started.elapsed()))),
            ..Budget::default()
        };
        let report = register::check(&paired.ops, budget).unwrap();
        let got = match &report.verdict {
            Verdict::Linearizable { witness } => {
                common::validate_witness(&paired.ops, witness)
                    .unwrap_or_else(|e| panic!("{name}: bad witness: {e}"));
                Some(true)
            }
            Verdict::NotLinearizable(_) => Some(false),
            Verdict::Unknown(_) => None,
        };
        println!(
            "{name}: {} (expected {expected}), {} ops ({} failed), {} steps, {:.3} ms",
            report.verdict.name(),
            report.operations,
            paired.failed,
            report.steps,
            report.elapsed.as_secs_f64() * 1e3
        );
        if report.elapsed > slowest.0 {
            slowest = (report.elapsed, name.clone());
        }
        if got != Some(expected) {
            mismatches.push(format!(
                "{name}: expected {expected}, got {}",
                report.verdict.name()
            ));
        }
        checked += 1;
    }
    println!(
        "{checked} histories in {:.3} ms; slowest {} at {:.3} ms",
        started.elapsed().as_secs_f64() * 1e3,
        slowest.1,
        slowest.0.as_secs_f64() * 1e3
    );
    assert_eq!(checked, 60, "verdicts.txt should list 60 histories");
    assert!(
        mismatches.is_empty(),
        "wrong verdicts:\n{}",
        mismatches.join("\n")
    );
}

/// An explanation must describe a real dead end: its prefix replays on the
/// register and respects real time, and neither the blocked operation nor
/// any listed candidate can follow it.
#[test]
fn explanations_of_etcd_histories_are_consistent() {
    let dir = data_dir();
    for number in ["000", "001", "003", "017", "059"] {
        let text = std::fs::read_to_string(dir.join(format!("etcd_{number}.log"))).unwrap();
        let ops = history::pair(&jepsen_log::parse(&text).unwrap())
            .unwrap()
            .ops;
        let budget = Budget {
            timeout: Some(Duration::from_secs(10)),
            ..Budget::default()
        };
        let report = register::check(&ops, budget).unwrap();
        let Verdict::NotLinearizable(e) = &report.verdict else {
            panic!(
                "etcd_{number}: expected not linearizable, got {}",
                report.verdict.name()
            );
        };
        // Validating the prefix as a witness of the ops it contains.
        let prefix_ops: Vec<_> = e.prefix.iter().map(|&i| ops[i].clone()).collect();
        let order: Vec<usize> = (0..prefix_ops.len()).collect();
        common::validate_witness(&prefix_ops, &[order])
            .unwrap_or_else(|err| panic!("etcd_{number}: {err}"));
        for &next in std::iter::once(&e.blocked).chain(&e.candidates) {
            let mut extended = prefix_ops.clone();
            extended.push(ops[next].clone());
            let order: Vec<usize> = (0..extended.len()).collect();
            assert!(
                common::validate_witness(&extended, &[order]).is_err(),
                "etcd_{number}: op {next} could follow the prefix"
            );
        }
        assert!(!e.prefix.contains(&e.blocked));
        assert!(e.prefix.len() < e.key_operations);
    }
}
