//! Runs the real `etcdctl` (3.4, `ETCDCTL_API=3`) against members: one-shot
//! commands with a hard deadline, and long-running ones (`watch`,
//! `lease keep-alive`) whose output lines are collected as they come.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Cairn;

/// Upper bound for one etcdctl invocation (its own `--command-timeout` is 10 s).
const ETCDCTL_DEADLINE: Duration = Duration::from_secs(25);

#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stderr without etcdctl's client-side JSON retry logs.
    pub fn errors(&self) -> String {
        self.stderr.lines().filter(|l| !l.starts_with('{')).map(|l| format!("{l}\n")).collect()
    }
}

pub struct Ctl {
    pub bin: PathBuf,
    /// The `--endpoints` value.
    pub endpoint: String,
}

impl Ctl {
    pub fn new(bin: &Path, cairn: &Cairn) -> Ctl {
        Ctl { bin: bin.to_path_buf(), endpoint: cairn.endpoint() }
    }

    /// etcdctl talking to several members (`--endpoints=a,b,c`).
    pub fn cluster(bin: &Path, endpoints: &[String]) -> Ctl {
        Ctl { bin: bin.to_path_buf(), endpoint: endpoints.join(",") }
    }

    /// A command with only `ETCDCTL_API=3` from the environment (a developer's
    /// own `ETCDCTL_*` settings must not change what the tests see).
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("ETCDCTL_API", "3").arg(format!("--endpoints={}", self.endpoint));
        cmd
    }

    pub fn run_with_input(&self, args: &[&str], input: Option<&str>) -> Out {
        let mut cmd = self.command();
        cmd.arg("--command-timeout=10s")
            .arg("--dial-timeout=5s")
            .args(args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn etcdctl");
        if let Some(input) = input {
            let mut stdin = child.stdin.take().unwrap();
            let input = input.to_string();
            std::thread::spawn(move || {
                let _ = stdin.write_all(input.as_bytes());
            });
        }
        let mut so = child.stdout.take().unwrap();
        let mut se = child.stderr.take().unwrap();
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = so.read_to_string(&mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + ETCDCTL_DEADLINE;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("etcdctl {args:?} did not finish within {ETCDCTL_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Out { code: status.code(), stdout: t_out.join().unwrap(), stderr: t_err.join().unwrap() }
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_with_input(args, None)
    }

    /// Runs a command that must succeed and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.success(), "etcdctl {args:?} failed: {out:?}");
        out.stdout
    }

    /// Runs a command that must fail and returns its error lines.
    pub fn err(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.success(), "etcdctl {args:?} should have failed: {out:?}");
        out.errors()
    }

    pub fn txn(&self, extra: &[&str], script: &str) -> String {
        let mut args = vec!["txn"];
        args.extend_from_slice(extra);
        let out = self.run_with_input(&args, Some(script));
        assert!(out.success(), "etcdctl txn {script:?} failed: {out:?}");
        out.stdout
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-w", "json"]);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("etcdctl {a:?}: not JSON ({e}): {out:?}"))
    }

    pub fn put(&self, k: &str, v: &str) {
        assert_eq!(self.ok(&["put", k, v]), "OK\n");
    }

    pub fn revision(&self) -> i64 {
        self.json(&["get", "revision-probe"])["header"]["revision"].as_i64().unwrap()
    }
}

/// A long-running etcdctl (`watch …`, `lease keep-alive …`) whose stdout
/// lines are collected as they come; killed on drop.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdin: Option<ChildStdin>,
}

impl Running {
    pub fn start(ctl: &Ctl, args: &[&str]) -> Running {
        let mut cmd = ctl.command();
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn etcdctl");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Running { child, lines, stdin }
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next `n` lines, waiting at most 10 s in all.
    pub fn take(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(_) => panic!("etcdctl printed only {out:?}, want {n} lines"),
            }
        }
        out
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
