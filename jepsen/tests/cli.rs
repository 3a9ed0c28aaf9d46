//! The `cairn-jepsen check-register` binary: output format and exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};

fn data(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/jepsen-etcd-register")
        .join(name)
        .display()
        .to_string()
}

fn cairn_jepsen(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_cairn-jepsen"))
        .args(args)
        .output()
        .expect("run cairn-jepsen");
    println!(
        "cairn-jepsen {args:?}: {}\nstdout:\n{}stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn reports_one_verdict_per_file_and_exits_zero_when_all_are_decided() {
    let (good, bad) = (data("etcd_002.log"), data("etcd_000.log"));
    let output = cairn_jepsen(&["check-register", "--timeout", "30s", &good, &bad]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("{good}: linearizable"));
    assert_eq!(lines[1], format!("{bad}: not linearizable"));
    // Then the explanation, indented, and nothing else.
    assert!(lines.len() > 3, "{stdout}");
    assert!(lines[2..].iter().all(|l| l.starts_with("    ")), "{stdout}");
    assert!(stdout.contains("longest linearizable prefix: "), "{stdout}");
    assert!(stdout.contains("cannot take effect next"), "{stdout}");
}

#[test]
fn exits_one_when_the_budget_runs_out() {
    let good = data("etcd_002.log");
    let output = cairn_jepsen(&["check-register", "--max-steps", "1", &good]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout,
        format!("{good}: unknown (step budget of 1 exhausted)\n")
    );
}

#[test]
fn exits_one_on_unreadable_files_but_checks_the_others() {
    let good = data("etcd_002.log");
    let output = cairn_jepsen(&["check-register", "/nonexistent/history.log", &good]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("/nonexistent/history.log: error ("),
        "{stdout}"
    );
    assert_eq!(lines[1], format!("{good}: linearizable"));
}

#[test]
fn reads_jsonl_histories() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("cairn-jepsen-cli-{}.jsonl", std::process::id()));
    // write "a" to k1, then a read on k1 that returns "b", which nobody wrote.
    let lines = [
        r#"{"i":0,"type":"invoke","p":0,"f":"write","key":"k1","v":"a","t_ns":100}"#,
        r#"{"i":1,"type":"ok","p":0,"f":"write","key":"k1","v":"a","t_ns":200}"#,
        r#"{"i":2,"type":"invoke","p":1,"f":"read","key":"k1","v":null,"t_ns":300}"#,
        r#"{"i":3,"type":"ok","p":1,"f":"read","key":"k1","v":"b","t_ns":400}"#,
    ];
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let file = path.display().to_string();
    let output = cairn_jepsen(&["check-register", &file]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout,
        format!(
            "{file}: not linearizable\n\
             \x20   key \"k1\": longest linearizable prefix: 1 of 2 operations, after which the register is \"a\"\n\
             \x20   prefix:\n\
             \x20     process 0 write \"a\" (events 0..1, t_ns 100..200)\n\
             \x20   cannot take effect next, yet everything left was invoked after it returned:\n\
             \x20     process 1 read -> \"b\" (events 2..3, t_ns 300..400)\n\
             \x20   no other operation was pending\n"
        )
    );
    std::fs::remove_file(&path).unwrap();
}
