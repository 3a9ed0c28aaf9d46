//! `cairn-bench compare --quick` end to end: a real 3-member etcd cluster
//! and a real 3-member Cairn cluster, every workload against both, and the
//! markdown, JSON and SVG it writes; and a run stopped by SIGTERM, which
//! must leave no process or directory behind.
//!
//! Each run gets its own `TMPDIR`, where its clusters' directories go, so
//! tests running side by side never see each other's clusters.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{cairn_binary, require_tool, run_bench_env};
use serde_json::Value;

/// The summary rows the report must have, one per workload of the issue.
const WORKLOADS: [&str; 8] = [
    "put, 1 client",
    "put, 100 clients / 10 conns",
    "put, 1,000 clients / 100 conns",
    "range linearizable, 1 client",
    "range linearizable, 1,000 clients / 100 conns",
    "range serializable, 1,000 clients / 100 conns",
    "watch, 100 watchers × 2,000 puts (delivery)",
    "lease keep-alive, 100 clients / 10 conns",
];

/// `12,345` or `0.812` as a number.
fn num(cell: &str) -> f64 {
    cell.trim().replace(',', "").parse().unwrap_or_else(|_| panic!("not a number: {cell:?}"))
}

/// The cells of the markdown table row that starts with `| first |`.
fn row<'a>(md: &'a str, first: &str) -> Vec<&'a str> {
    let line = md
        .lines()
        .find(|l| l.starts_with(&format!("| {first} |")))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{md}"));
    line.trim_matches('|').split(" | ").map(str::trim).collect()
}

/// Whether `svg` is one well-formed element tree rooted at `<svg>`.
fn check_well_formed(svg: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg.trim();
    let mut roots = 0;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').ok_or("unterminated tag")? + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with("!--") || tag.starts_with('?') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or(format!("</{name}> without an open tag"))?;
            if open != name.trim() {
                return Err(format!("</{name}> closes <{open}>"));
            }
            continue;
        }
        if !tag.matches('"').count().is_multiple_of(2) {
            return Err(format!("unbalanced quotes in <{tag}>"));
        }
        let name = tag.split_whitespace().next().ok_or("empty tag")?.trim_end_matches('/').to_string();
        if stack.is_empty() {
            roots += 1;
            if name != "svg" {
                return Err(format!("root element <{name}>"));
            }
        }
        if !tag.ends_with('/') {
            stack.push(name);
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed {stack:?}"));
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(())
}

/// The live servers a compare run with `TMPDIR=tmp` started, found by
/// their data dirs (a dead process that is not reaped yet has no command
/// line).
fn compare_servers(tmp: &Path) -> Vec<String> {
    let data_dirs = format!("--data-dir={}/cairn-compare-", tmp.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&data_dirs) {
                found.push(cmdline);
            }
        }
    }
    found
}

/// The clusters' directories (`cairn-compare-*`) in `tmp`.
fn compare_dirs(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("cairn-compare-"))
        .collect()
}

#[test]
fn quick_compare_reports_both_servers() {
    let Some(etcd) = require_tool("etcd") else {
        return;
    };
    let cairn = cairn_binary();
    let out_dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = run_bench_env(
        &[
            "compare",
            "--quick",
            "--skip-check-perf",
            "--keys",
            "2000",
            "--cairn",
            cairn.to_str().unwrap(),
            "--etcd",
            etcd.to_str().unwrap(),
            "--out",
            out_dir.path().to_str().unwrap(),
        ],
        &[("TMPDIR", tmp.path().as_os_str())],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "compare failed ({}):\n{stderr}", out.status);
    assert!(compare_servers(tmp.path()).is_empty(), "servers left running: {:?}", compare_servers(tmp.path()));
    assert!(compare_dirs(tmp.path()).is_empty(), "directories left: {:?}", compare_dirs(tmp.path()));

    let md = std::fs::read_to_string(out_dir.path().join("compare.md")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), md, "stdout is the report");
    for w in WORKLOADS {
        // | workload | unit | etcd | Cairn | Cairn/etcd | etcd p99 | Cairn p99 | Cairn/etcd p99 |
        let cells = row(&md, w);
        assert_eq!(cells.len(), 8, "{cells:?}");
        for i in [2, 3, 5, 6] {
            assert!(num(cells[i]) > 0.0, "{w}: {cells:?}\n{stderr}");
        }
        assert!(cells[4].ends_with('×') && cells[7].ends_with('×'), "{w}: {cells:?}");
    }
    let keys = row(&md, "keys loaded");
    assert_eq!(&keys[1..], ["2,000", "2,000", "1.00×"], "{md}");
    for r in ["RSS, leader", "data dir, leader (du)"] {
        let cells = row(&md, r);
        assert!(cells[1].ends_with("MiB") && cells[2].ends_with("MiB"), "{cells:?}");
    }
    assert!(md.contains("## Targets"), "{md}");
    assert!(row(&md, "put throughput, 100 clients")[4] == "≥ 2.0×", "{md}");

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.path().join("compare.json")).unwrap()).unwrap();
    let workloads = json["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), WORKLOADS.len());
    for w in workloads {
        for server in ["etcd", "cairn"] {
            let report = &w[server]["report"];
            assert!(report["ok"].as_u64().unwrap() > 0, "{server} {}: {report}", w["id"]);
            assert_eq!(report["endpoints"].as_array().unwrap().len(), 3, "every run uses all three members");
        }
    }
    for load in json["load"].as_array().unwrap() {
        let members = load["members"].as_array().unwrap();
        assert_eq!(members.len(), 3, "{load}");
        assert_eq!(members.iter().filter(|m| m["leader"] == true).count(), 1, "{load}");
    }

    let svg = std::fs::read_to_string(out_dir.path().join("compare.svg")).unwrap();
    check_well_formed(&svg).unwrap_or_else(|e| panic!("compare.svg: {e}"));
    let texts: Vec<&str> =
        svg.split("<text").skip(1).filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim())).collect();
    for legend in ["etcd", "Cairn", "etcd p50", "etcd p99", "Cairn p50", "Cairn p99"] {
        assert!(texts.contains(&legend), "legend {legend:?} missing in {texts:?}");
    }
    // Every run is drawn: one throughput bar and two latency bars each.
    assert!(svg.matches("<rect").count() > 3 * 2 * WORKLOADS.len(), "too few bars");
}

/// Seed of the workloads in `sigterm_stops_compare_and_removes_everything`.
const SIGTERM_SEED: u64 = 143;
/// How long the clusters may take to start before the test gives up.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `compare` may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a killed process may take to disappear.
const GONE_TIMEOUT: Duration = Duration::from_secs(5);

/// A child process killed (SIGKILL) and reaped when the test ends, however
/// it ends; its members then die with it (`PR_SET_PDEATHSIG`).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The live children of `pid` as (pid, command name), from /proc.
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let mut rest = stat[close + 1..].split_whitespace();
        let (state, ppid) = (rest.next(), rest.next().and_then(|p| p.parse::<u32>().ok()));
        if ppid == Some(pid) && state != Some("Z") {
            found.push((stat[..open].trim().parse().unwrap(), stat[open + 1..close].to_string()));
        }
    }
    found
}

/// Whether process `pid` has ended (gone, or dead and not reaped yet).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rfind(')').is_some_and(|close| stat[close + 1..].split_whitespace().next() == Some("Z")),
        Err(_) => true,
    }
}

/// SIGTERM while both clusters run and a benchmark run is in flight:
/// `compare` exits with 143 within [`STOP_TIMEOUT`], and no member, run or
/// directory of it is left.
#[test]
fn sigterm_stops_compare_and_removes_everything() {
    let Some(etcd) = require_tool("etcd") else {
        return;
    };
    let cairn = cairn_binary();
    let out_dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let log_path = out_dir.path().join("compare.log");
    let log = std::fs::File::create(&log_path).unwrap();
    println!("seed {SIGTERM_SEED}, TMPDIR {}", tmp.path().display());
    let child = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args(["--seed", &SIGTERM_SEED.to_string(), "compare", "--quick", "--skip-check-perf", "--keys", "2000"])
        .arg("--cairn")
        .arg(&cairn)
        .arg("--etcd")
        .arg(&etcd)
        .arg("--out")
        .arg(out_dir.path())
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn cairn-bench compare");
    let mut bench = Reaped(child);
    let pid = bench.0.id();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Both clusters up (six members) and a benchmark run in flight: then
    // every kind of process compare starts is there to be cleaned up.
    let deadline = Instant::now() + RUNNING_TIMEOUT;
    let started = loop {
        if let Some(status) = bench.0.try_wait().unwrap() {
            panic!("compare ended ({status}) before it was stopped:\n{}", log());
        }
        let kids = children(pid);
        let members = kids.iter().filter(|(_, name)| name == "etcd" || name == "cairn").count();
        let runs = kids.iter().filter(|(_, name)| name == "cairn-bench").count();
        if compare_dirs(tmp.path()).len() == 2 && members == 6 && runs == 1 {
            break kids;
        }
        assert!(Instant::now() < deadline, "no benchmark run on both clusters within {RUNNING_TIMEOUT:?}:\n{}", log());
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(compare_servers(tmp.path()).len(), 6, "{started:?}");
    println!("sending SIGTERM to {pid}, whose children are {started:?}");

    // SAFETY: kill(2) on the child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = bench.0.try_wait().unwrap() {
            break status;
        }
        assert!(sent.elapsed() < STOP_TIMEOUT, "compare still running {STOP_TIMEOUT:?} after SIGTERM:\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("compare stopped {:?} after SIGTERM", sent.elapsed());
    assert_eq!(
        (status.code(), status.signal()),
        (Some(128 + libc::SIGTERM), None),
        "compare should exit 143 after cleaning up:\n{}",
        log()
    );
    assert!(log().contains("SIGTERM: stopped"), "{}", log());
    assert!(compare_dirs(tmp.path()).is_empty(), "directories left: {:?}", compare_dirs(tmp.path()));
    let gone_by = Instant::now() + GONE_TIMEOUT;
    while started.iter().any(|&(p, _)| !ended(p)) && Instant::now() < gone_by {
        std::thread::sleep(Duration::from_millis(20));
    }
    let alive: Vec<_> = started.iter().filter(|&&(p, _)| !ended(p)).collect();
    assert!(alive.is_empty(), "still running {GONE_TIMEOUT:?} after compare ended: {alive:?}");
    assert!(compare_servers(tmp.path()).is_empty(), "servers left running: {:?}", compare_servers(tmp.path()));
}
