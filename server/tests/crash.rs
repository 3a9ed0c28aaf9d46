//! Crash safety: every acknowledged write survives `kill -9`, and revisions
//! keep increasing across restarts.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Cairn;
use etcd_client::{Client, GetOptions};

const WRITERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_puts_survive_kill_9() {
    let seed = common::seed("acknowledged_puts_survive_kill_9");
    let mut c = Cairn::start();
    // key -> (value, revision) of the last acknowledged put.
    let acked: Arc<Mutex<BTreeMap<String, (String, i64)>>> = Arc::default();
    let mut max_rev = 0;

    for round in 0..3u64 {
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let endpoint = c.endpoint();
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                let Ok(mut cl) = Client::connect([endpoint], None).await else { return };
                for i in 0u64.. {
                    let key = format!("w{w}/k{}", (i + seed) % 50);
                    let value = format!("r{round}-w{w}-i{i}");
                    match tokio::time::timeout(Duration::from_secs(5), cl.put(key.clone(), value.clone(), None)).await {
                        Ok(Ok(resp)) => {
                            let rev = resp.header().unwrap().revision();
                            acked.lock().unwrap().insert(key, (value, rev));
                        }
                        _ => return, // the member is gone: the outcome of this put is unknown
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300 + (seed % 400))).await;
        c.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        c.restart();

        let mut cl = Client::connect([c.endpoint()], None).await.unwrap();
        let snapshot = acked.lock().unwrap().clone();
        assert!(!snapshot.is_empty(), "round {round}: no write was acknowledged");
        let all = cl.get("w", Some(GetOptions::new().with_prefix())).await.unwrap();
        let stored: BTreeMap<String, (String, i64)> = all
            .kvs()
            .iter()
            .map(|kv| (kv.key_str().unwrap().to_string(), (kv.value_str().unwrap().to_string(), kv.mod_revision())))
            .collect();
        for (k, (v, rev)) in &snapshot {
            let (sv, srev) = stored.get(k).unwrap_or_else(|| panic!("round {round}: acknowledged key {k} lost"));
            // A later unacknowledged put may have landed; it must be newer.
            assert!(srev >= rev, "round {round}: {k} went back from revision {rev} to {srev}");
            if srev == rev {
                assert_eq!(sv, v, "round {round}: {k} at revision {rev}");
            }
        }
        let rev = all.header().unwrap().revision();
        let top = snapshot.values().map(|(_, r)| *r).max().unwrap();
        assert!(rev >= top && rev >= max_rev, "round {round}: revision {rev} went backwards (acked {top}, before {max_rev})");
        let p = cl.put("probe", "x", None).await.unwrap();
        assert_eq!(p.header().unwrap().revision(), rev + 1, "revisions continue after restart");
        max_rev = rev + 1;
        eprintln!("round {round}: {} keys acknowledged, revision {rev}", snapshot.len());
    }
}

#[tokio::test]
async fn graceful_shutdown_and_restart() {
    let mut c = Cairn::start();
    let mut cl = Client::connect([c.endpoint()], None).await.unwrap();
    for i in 0..20 {
        cl.put(format!("k{i}"), "v", None).await.unwrap();
    }
    cl.compact(10, None).await.unwrap();
    let status = c.terminate();
    assert!(status.success(), "SIGTERM exit: {status}");
    c.restart();
    let mut cl = Client::connect([c.endpoint()], None).await.unwrap();
    let r = cl.get("k", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(r.count(), 20);
    assert_eq!(r.header().unwrap().revision(), 21);
    let e = cl.get("k1", Some(GetOptions::new().with_revision(9))).await.unwrap_err();
    assert!(e.to_string().contains("required revision has been compacted"), "{e}");
}

#[test]
fn start_up_failures_are_clear() {
    // Port in use.
    let c = Cairn::start();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg(format!("--data-dir={}", dir.path().join("d").display()))
        .arg(format!("--listen-client-urls={}", c.endpoint()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on"), "{err}");

    // Data dir held by the running member.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg(format!("--data-dir={}", c.data_dir().display()))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{}", common::free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open data dir"), "{err}");

    // Data dir is a file.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg(format!("--data-dir={}", file.display()))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{}", common::free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot use data dir"));

    // Bad flags.
    for args in [&["--max-txn-ops=many"][..], &["--bogus"], &["--listen-client-urls=https://127.0.0.1:1"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn")).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} explains itself");
    }
}
