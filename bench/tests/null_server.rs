//! `cairn-bench null-server`, driven by the built binary: it answers every
//! Put, finds nothing on a Range and refuses a Txn, so the bench's own
//! reports count all three; `etcdctl check perf` runs against it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, run_bench};
use serde_json::Value;

/// The running null server; killed when dropped.
struct NullServer {
    child: Child,
    endpoint: String,
}

impl NullServer {
    fn start() -> NullServer {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
            .args(["null-server", "--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn cairn-bench null-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "null-server not listening on {port} within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        NullServer { child, endpoint: format!("127.0.0.1:{port}") }
    }

    fn bench(&self, args: &[&str]) -> Value {
        let mut all = vec!["--endpoints", &self.endpoint, "--json"];
        all.extend_from_slice(args);
        let out = run_bench(&all);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for NullServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn null_server_answers_puts_and_ranges_and_refuses_txns() {
    let s = NullServer::start();
    let r = s.bench(&["put", "--total", "500", "--clients", "8", "--conns", "2"]);
    assert_eq!((r["ok"].as_u64(), r["errors"].as_u64()), (Some(500), Some(0)), "{r}");

    let r = s.bench(&["range", "k", "--total", "20", "--consistency", "s"]);
    assert_eq!((r["ok"].as_u64(), r["errors"].as_u64()), (Some(20), Some(0)), "{r}");

    let r = s.bench(&["txn-put", "--total", "20"]);
    assert_eq!((r["ok"].as_u64(), r["errors"].as_u64()), (Some(0), Some(20)), "{r}");
    assert_eq!(r["error_counts"][0]["code"], "Unimplemented", "{r}");
}

/// Besides its puts, `etcdctl check perf` reads its key prefix first and
/// deletes it last; both must succeed for it to give a verdict. Its
/// shortest load still takes 60 s, so this checks those two calls with
/// `etcdctl get` and `del` instead.
#[test]
fn etcdctl_reads_and_deletes_through_null_server() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let s = NullServer::start();
    for args in [&["get", "--prefix", "/etcdctl-check-perf/"][..], &["del", "--prefix", "/etcdctl-check-perf/"][..]] {
        let out = Command::new(&etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", s.endpoint))
            .args(args)
            .output()
            .expect("run etcdctl");
        assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        println!("etcdctl {args:?}: {:?}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn null_server_listens_on_loopback_only() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args(["null-server", "--listen", "0.0.0.0:0"])
        .output()
        .expect("run cairn-bench null-server");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback only"), "{}", String::from_utf8_lossy(&out.stderr));
}
