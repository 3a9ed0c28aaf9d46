//! `cairn-bench compare --quick` end to end: a real 3-member etcd cluster
//! and a real 3-member Cairn cluster, every workload against both, and the
//! markdown, JSON and SVG it writes.

mod common;

use common::{cairn_binary, require_tool, run_bench};
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

/// The servers a compare run started, found by their data dirs.
fn compare_servers() -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("--data-dir=") && cmdline.contains("cairn-compare-") {
                found.push(cmdline);
            }
        }
    }
    found
}

#[test]
fn quick_compare_reports_both_servers() {
    let Some(etcd) = require_tool("etcd") else {
        return;
    };
    let cairn = cairn_binary();
    let out_dir = tempfile::tempdir().unwrap();
    let out = run_bench(&[
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
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "compare failed ({}):\n{stderr}", out.status);
    assert!(compare_servers().is_empty(), "servers left running: {:?}", compare_servers());

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
