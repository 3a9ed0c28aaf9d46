//! Runs the built `cairn-bench` against a real single-member `cairn`, one
//! server per test, and checks both the reports and that the load really
//! reached the store.

mod common;

use std::time::Duration;

use cairn_api::etcdserverpb::RangeRequest;
use common::{check_latency, check_report, run_bench, Server};

#[test]
fn put_writes_every_key_of_a_sequential_key_space() {
    let s = Server::cairn();
    let r = s.bench(&[
        "put",
        "--total",
        "200",
        "--sequential-keys",
        "--key-space-size",
        "200",
        "--prefix",
        "bp/",
        "--val-size",
        "40",
        "--clients",
        "8",
        "--conns",
        "3",
        "--seed",
        "7",
    ]);
    check_report(&r, "put", 200);
    assert_eq!((r["clients"].as_u64(), r["conns"].as_u64(), r["seed"].as_u64()), (Some(8), Some(3), Some(7)), "{r}");
    assert_eq!(r["endpoints"], serde_json::json!([s.endpoint()]), "{r}");
    assert_eq!(s.count_prefix("bp/"), 200);
    let kv = s.range(RangeRequest { key: b"bp/00000123".to_vec(), ..Default::default() });
    assert_eq!(kv.kvs.len(), 1, "key 123 of the space is bp/ + 8 digits");
    assert_eq!(kv.kvs[0].value.len(), 40);
}

/// One value shared by the run unless `--random-values`, which gives every
/// put its own (the compare's load relies on it for incompressible data).
#[test]
fn random_values_differ_per_put_and_shared_values_do_not() {
    let s = Server::cairn();
    let put = |prefix: &str, extra: &[&str]| {
        let args = [&["put", "--total", "50", "--sequential-keys", "--key-space-size", "50", "--val-size", "32"][..], &[
            "--prefix", prefix, "--clients", "5", "--seed", "11",
        ], extra]
        .concat();
        check_report(&s.bench(&args), "put", 50);
    };
    put("sv/", &[]);
    put("rv/", &["--random-values"]);
    let (shared, random) = (s.values_with_prefix("sv/"), s.values_with_prefix("rv/"));
    assert_eq!((shared.len(), random.len()), (50, 50));
    assert!(shared.iter().all(|v| v.len() == 32 && *v == shared[0]), "one value for the whole run");
    let distinct: std::collections::HashSet<_> = random.iter().collect();
    assert_eq!(distinct.len(), 50, "every put its own value");
    assert!(random.iter().all(|v| v.len() == 32));
}

#[test]
fn random_put_keys_stay_in_the_key_space() {
    let s = Server::cairn();
    let rev0 = s.revision();
    let r = s.bench(&[
        "put",
        "--total",
        "300",
        "--key-space-size",
        "10",
        "--key-size",
        "2",
        "--prefix",
        "rk/",
        "--clients",
        "4",
    ]);
    check_report(&r, "put", 300);
    let keys = s.count_prefix("rk/");
    // 300 uniform picks from 10 keys: all 10 with overwhelming probability,
    // never more, and each put is one revision.
    assert_eq!(keys, 10);
    assert_eq!(s.revision() - rev0, 300);
}

#[test]
fn range_runs_linearizable_and_serializable_reads() {
    let s = Server::cairn();
    s.bench(&["put", "--total", "50", "--sequential-keys", "--key-space-size", "50", "--prefix", "rg/"]);
    let r = s.bench(&["range", "rg/", "--prefix", "--count-only", "--total", "300", "--clients", "6", "--conns", "2"]);
    check_report(&r, "range", 300);
    assert_eq!(r["params"]["consistency"], "l", "{r}");
    assert_eq!(r["params"]["range_end"], "rg0", "{r}");
    let r = s.bench(&["range", "rg/00000000", "rg/00000010", "--consistency", "s", "--total", "200", "--limit", "3"]);
    check_report(&r, "range", 200);
    assert_eq!(r["params"]["consistency"], "s", "{r}");
    assert_eq!(r["params"]["limit"], 3, "{r}");
}

#[test]
fn txn_put_commits_one_revision_per_transaction() {
    let s = Server::cairn();
    let rev0 = s.revision();
    let r = s.bench(&["txn-put", "--txn-ops", "5", "--key-space-size", "50", "--total", "40", "--clients", "4"]);
    check_report(&r, "txn-put", 40);
    assert_eq!(s.revision() - rev0, 40, "each transaction is one revision");
    // 40 transactions of 5 sequential keys walk the 50-key space four times.
    let all = s.range(RangeRequest {
        key: b"\0".to_vec(),
        range_end: b"\0".to_vec(),
        count_only: true,
        ..Default::default()
    });
    assert_eq!(all.count, 50);
}

#[test]
fn watch_delivers_every_event_to_every_watcher() {
    let s = Server::cairn();
    let r = s.bench(&[
        "watch",
        "--key",
        "wk",
        "--watchers",
        "7",
        "--streams",
        "3",
        "--put-total",
        "60",
        "--put-rate",
        "0",
        "--clients",
        "3",
        "--conns",
        "2",
    ]);
    check_report(&r, "watch", 60);
    let d = &r["delivery"];
    assert_eq!(d["watchers"], 7, "{r}");
    assert_eq!(d["streams"], 3, "{r}");
    assert_eq!(d["expected_per_watcher"], 60, "{r}");
    assert_eq!(d["events"], 7 * 60, "{r}");
    assert_eq!(d["missing"], 0, "{r}");
    assert!(d["events_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    check_latency(&d["latency_ms"]);
    let kv = s.range(RangeRequest { key: b"wk".to_vec(), ..Default::default() });
    assert_eq!(kv.kvs[0].version, 60, "every put landed on the watched key");
}

#[test]
fn watch_on_a_prefix_with_warmup_counts_only_measured_events() {
    let s = Server::cairn();
    let rev0 = s.revision();
    let r = s.bench(&[
        "watch-latency",
        "--key",
        "wp/",
        "--prefix",
        "--key-space-size",
        "5",
        "--watchers",
        "4",
        "--streams",
        "2",
        "--total",
        "30",
        "--rate",
        "500",
        "--warmup",
        "10",
        "--prev-kv",
    ]);
    check_report(&r, "watch", 30);
    assert_eq!(r["warmup_ops"], 10, "{r}");
    assert_eq!(r["delivery"]["events"], 4 * 30, "{r}");
    assert_eq!(r["delivery"]["missing"], 0, "{r}");
    assert_eq!(s.count_prefix("wp/"), 5);
    assert_eq!(s.revision() - rev0, 40, "warmup puts ran too");
}

#[test]
fn lease_keepalive_renews_then_revokes_every_lease() {
    let s = Server::cairn();
    let r = s.bench(&["lease-keepalive", "--clients", "4", "--conns", "2", "--leases", "6", "--total", "200"]);
    check_report(&r, "lease-keepalive", 200);
    assert_eq!(r["params"]["leases"], 6, "{r}");
    assert_eq!(s.leases(), Vec::<i64>::new(), "every lease is revoked at the end");
}

#[test]
fn duration_and_rate_bound_the_run() {
    let s = Server::cairn();
    let rev0 = s.revision();
    let r = s.bench(&["put", "--duration", "1s", "--rate", "50", "--clients", "4"]);
    let total = r["total"].as_u64().unwrap();
    // 50/s for one second: 50 slots, never more (give or take the edge);
    // fewer only if the server is slow, but not by half.
    assert!((25..=52).contains(&total), "{r}");
    check_report(&r, "put", total);
    let secs = r["seconds"].as_f64().unwrap();
    assert!((0.9..3.0).contains(&secs), "{r}");
    assert_eq!(s.revision() - rev0, total as i64);
}

#[test]
fn warmup_ops_run_but_are_not_reported() {
    let s = Server::cairn();
    let rev0 = s.revision();
    let r = s.bench(&["put", "--total", "100", "--warmup", "50", "--clients", "5"]);
    check_report(&r, "put", 100);
    assert_eq!(r["warmup_ops"], 50, "{r}");
    assert_eq!(s.revision() - rev0, 150);
}

#[test]
fn failed_requests_are_counted_by_code_and_message() {
    let s = Server::cairn();
    // More puts per transaction than the server's --max-txn-ops (128).
    let r = s.bench(&["txn-put", "--txn-ops", "200", "--key-space-size", "200", "--total", "20", "--clients", "2"]);
    assert_eq!((r["total"].as_u64(), r["ok"].as_u64(), r["errors"].as_u64()), (Some(20), Some(0), Some(20)), "{r}");
    let e = &r["error_counts"][0];
    assert_eq!(e["code"], "InvalidArgument", "{r}");
    assert_eq!(e["message"], "etcdserver: too many operations in txn request", "{r}");
    assert_eq!(e["count"], 20, "{r}");
}

#[test]
fn oversized_requests_are_refused_before_sending() {
    let s = Server::cairn();
    let rev0 = s.revision();
    let out = s.bench_raw(&["put", "--val-size", "2000000", "--total", "5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("request limit"), "{err}");
    assert_eq!(s.revision(), rev0);
}

#[test]
fn human_output_is_a_summary_table() {
    let s = Server::cairn();
    let out = s.bench_raw(&["put", "--total", "30", "--clients", "2"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("Summary (put):"), "{text}");
    assert!(text.contains("30 ops (30 ok, 0 errors)"), "{text}");
    let header = text.lines().find(|l| l.contains("latency (ms)")).expect("latency table");
    for col in ["min", "mean", "p50", "p90", "p99", "p99.9", "max"] {
        assert!(header.contains(col), "{header}");
    }
    // stderr is a pipe here: no progress bar.
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn unreachable_endpoint_fails_within_the_dial_timeout() {
    let port = common::free_port();
    let t0 = std::time::Instant::now();
    let ep = format!("127.0.0.1:{port}");
    let out = run_bench(&["--endpoints", &ep, "--dial-timeout", "1s", "put", "--total", "1"]);
    assert!(!out.status.success());
    assert!(t0.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect") && err.contains(&ep), "{err}");
}
