//! The same tool against a real etcd (if `etcd` is on PATH): it must speak
//! the etcd v3 API well enough to benchmark etcd itself, which is what makes
//! Cairn-vs-etcd figures comparable.

mod common;

use cairn_api::etcdserverpb::RangeRequest;
use common::{check_latency, check_report, require_tool, Server};

#[test]
fn every_workload_runs_against_etcd() {
    let Some(etcd) = require_tool("etcd") else { return };
    let s = Server::etcd(etcd);

    let rev0 = s.revision();
    let r = s.bench(&[
        "put",
        "--total",
        "200",
        "--sequential-keys",
        "--key-space-size",
        "200",
        "--prefix",
        "e/",
        "--clients",
        "8",
        "--conns",
        "2",
    ]);
    check_report(&r, "put", 200);
    assert_eq!(s.count_prefix("e/"), 200);
    assert_eq!(s.revision() - rev0, 200);

    for consistency in ["l", "s"] {
        let r = s.bench(&[
            "range",
            "e/",
            "--prefix",
            "--count-only",
            "--consistency",
            consistency,
            "--total",
            "200",
            "--clients",
            "4",
        ]);
        check_report(&r, "range", 200);
    }

    let rev0 = s.revision();
    let r = s.bench(&["txn-put", "--txn-ops", "4", "--key-space-size", "20", "--total", "30", "--clients", "3"]);
    check_report(&r, "txn-put", 30);
    assert_eq!(s.revision() - rev0, 30);

    let r = s.bench(&[
        "watch",
        "--key",
        "ew",
        "--watchers",
        "6",
        "--streams",
        "2",
        "--put-total",
        "40",
        "--put-rate",
        "0",
        "--clients",
        "2",
    ]);
    check_report(&r, "watch", 40);
    assert_eq!(r["delivery"]["events"], 6 * 40, "{r}");
    assert_eq!(r["delivery"]["missing"], 0, "{r}");
    check_latency(&r["delivery"]["latency_ms"]);
    let kv = s.range(RangeRequest { key: b"ew".to_vec(), ..Default::default() });
    assert_eq!(kv.kvs[0].version, 40);

    let r = s.bench(&["lease-keepalive", "--clients", "3", "--leases", "5", "--total", "100"]);
    check_report(&r, "lease-keepalive", 100);
    assert_eq!(s.leases(), Vec::<i64>::new(), "every lease is revoked at the end");
}
