//! `cairn-bench null-server`, driven by the built binary: it answers every
//! Put and refuses everything else, so the bench's own reports count both.

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
fn null_server_answers_every_put_and_nothing_else() {
    let s = NullServer::start();
    let r = s.bench(&["put", "--total", "500", "--clients", "8", "--conns", "2"]);
    assert_eq!((r["ok"].as_u64(), r["errors"].as_u64()), (Some(500), Some(0)), "{r}");

    let r = s.bench(&["range", "k", "--total", "20", "--consistency", "s"]);
    assert_eq!((r["ok"].as_u64(), r["errors"].as_u64()), (Some(0), Some(20)), "{r}");
    assert_eq!(r["error_counts"][0]["code"], "Unimplemented", "{r}");
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
