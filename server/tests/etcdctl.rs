//! End-to-end compatibility: the real `cairn` binary driven by the real
//! `etcdctl` (3.4, `ETCDCTL_API=3`), asserting on what etcdctl prints.
//!
//! The expected outputs were taken from etcdctl 3.4.23 against etcd 3.4.23
//! running the same command sequences; where Cairn deliberately differs from
//! that etcd (it reports version 3.6.0, a Raft term of its own), the test
//! checks the field's shape instead of etcd's value.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::etcdctl::{Ctl, Running};
use common::{http_get, Cairn, Cluster};
use serde_json::Value;

/// Member and cluster IDs etcd derives for its default peer URL and cluster
/// token, which is what the harness runs Cairn with.
const MEMBER_ID: u64 = 0x8e9e05c52164694d;
const MEMBER_ID_HEX: &str = "8e9e05c52164694d";
const CLUSTER_ID: u64 = 0xcdf818194e3a8c32;

const COMPACTED: &str = "Error: etcdserver: mvcc: required revision has been compacted";
const FUTURE_REV: &str = "Error: etcdserver: mvcc: required revision is a future revision";

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Key/value pairs as etcdctl's simple output prints them.
fn kv_lines(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}\n{v}\n")).collect()
}

/// Keys as `--keys-only` prints them (each followed by an empty value line).
fn key_lines(keys: &[&str]) -> String {
    keys.iter().map(|k| format!("{k}\n\n")).collect()
}

fn start(etcdctl: &Path) -> (Cairn, Ctl) {
    let cairn = Cairn::start();
    let ctl = Ctl::new(etcdctl, &cairn);
    (cairn, ctl)
}

#[test]
fn b64_helper() {
    assert_eq!(b64("a"), "YQ==");
    assert_eq!(b64("ab"), "YWI=");
    assert_eq!(b64("abc"), "YWJj");
    assert_eq!(b64("11"), "MTE=");
}

#[test]
fn put_and_get_plain() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let (_cairn, ctl) = start(&etcdctl);

    assert_eq!(ctl.ok(&["put", "greeting", "hello world"]), "OK\n");
    assert_eq!(ctl.ok(&["get", "greeting"]), "greeting\nhello world\n");
    assert_eq!(ctl.ok(&["get", "missing"]), "");

    // Overwrite; --prev-kv prints the previous pair after OK.
    assert_eq!(ctl.ok(&["put", "greeting", "bye", "--prev-kv"]), "OK\ngreeting\nhello world\n");
    assert_eq!(ctl.ok(&["get", "greeting"]), "greeting\nbye\n");

    // --ignore-value keeps the value; on a missing key it is etcd's error.
    assert_eq!(ctl.ok(&["put", "greeting", "--ignore-value"]), "OK\n");
    assert_eq!(ctl.ok(&["get", "greeting", "--print-value-only"]), "bye\n");
    assert_eq!(ctl.err(&["put", "nokey", "--ignore-value"]), "Error: etcdserver: key not found\n");

    // Explicit [key, range_end) and a serializable read.
    ctl.put("a", "1");
    ctl.put("b", "2");
    ctl.put("c", "3");
    assert_eq!(ctl.ok(&["get", "a", "c"]), kv_lines(&[("a", "1"), ("b", "2")]));
    assert_eq!(ctl.ok(&["get", "b", "--consistency=s"]), "b\n2\n");
    assert_eq!(ctl.ok(&["get", "b", "--hex"]), "\\x62\n\\x32\n");
}

/// Keys a, ab, abc, b, c with values naming them.
fn put_abc(ctl: &Ctl) {
    for k in ["b", "a", "c", "abc", "ab"] {
        ctl.put(k, &format!("v-{k}"));
    }
}

#[test]
fn get_prefix_from_key_limit() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let (_cairn, ctl) = start(&etcdctl);
    put_abc(&ctl);
    let all = kv_lines(&[("a", "v-a"), ("ab", "v-ab"), ("abc", "v-abc"), ("b", "v-b"), ("c", "v-c")]);

    assert_eq!(ctl.ok(&["get", "a", "--prefix"]), kv_lines(&[("a", "v-a"), ("ab", "v-ab"), ("abc", "v-abc")]));
    assert_eq!(ctl.ok(&["get", "ab", "--prefix"]), kv_lines(&[("ab", "v-ab"), ("abc", "v-abc")]));
    assert_eq!(ctl.ok(&["get", "z", "--prefix"]), "");
    assert_eq!(ctl.ok(&["get", "abc", "--from-key"]), kv_lines(&[("abc", "v-abc"), ("b", "v-b"), ("c", "v-c")]));
    assert_eq!(ctl.ok(&["get", "bb", "--from-key"]), kv_lines(&[("c", "v-c")]));
    assert_eq!(ctl.ok(&["get", "", "--prefix"]), all);
    assert_eq!(ctl.ok(&["get", "", "--from-key"]), all);

    assert_eq!(ctl.ok(&["get", "", "--prefix", "--limit=2"]), kv_lines(&[("a", "v-a"), ("ab", "v-ab")]));
    assert_eq!(ctl.ok(&["get", "b", "--from-key", "--limit=1"]), kv_lines(&[("b", "v-b")]));
    assert_eq!(ctl.ok(&["get", "", "--prefix", "--limit=10"]), all);

    assert_eq!(ctl.ok(&["get", "", "--prefix", "--keys-only"]), key_lines(&["a", "ab", "abc", "b", "c"]));
    assert_eq!(ctl.ok(&["get", "a", "--prefix", "--print-value-only"]), "v-a\nv-ab\nv-abc\n");
    assert_eq!(ctl.ok(&["get", "a", "--prefix", "--keys-only", "--limit=2"]), key_lines(&["a", "ab"]));
}

#[test]
fn get_historical_revisions() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let (_cairn, ctl) = start(&etcdctl);

    // A new store is at revision 1; the first write makes revision 2.
    assert_eq!(ctl.revision(), 1);
    ctl.put("k", "one"); // rev 2
    ctl.put("other", "x"); // rev 3
    ctl.put("k", "two"); // rev 4
    assert_eq!(ctl.ok(&["del", "k"]), "1\n"); // rev 5
    ctl.put("k", "three"); // rev 6
    assert_eq!(ctl.revision(), 6);

    assert_eq!(ctl.ok(&["get", "k", "--rev=1"]), "");
    assert_eq!(ctl.ok(&["get", "k", "--rev=2"]), "k\none\n");
    assert_eq!(ctl.ok(&["get", "k", "--rev=3"]), "k\none\n");
    assert_eq!(ctl.ok(&["get", "k", "--rev=4"]), "k\ntwo\n");
    assert_eq!(ctl.ok(&["get", "k", "--rev=5"]), "");
    assert_eq!(ctl.ok(&["get", "k", "--rev=6"]), "k\nthree\n");
    assert_eq!(ctl.ok(&["get", "k", "--rev=0"]), "k\nthree\n");
    assert_eq!(ctl.ok(&["get", "", "--prefix", "--rev=3"]), kv_lines(&[("k", "one"), ("other", "x")]));

    // The JSON of a historical read: header at the current revision, the kv as it was.
    let j = ctl.json(&["get", "k", "--rev=4"]);
    assert_eq!(j["header"]["revision"], 6);
    assert_eq!(j["kvs"][0]["create_revision"], 2);
    assert_eq!(j["kvs"][0]["mod_revision"], 4);
    assert_eq!(j["kvs"][0]["version"], 2);
    assert_eq!(j["kvs"][0]["value"], b64("two"));
    // Re-created after the delete: create_revision and version start over.
    let j = ctl.json(&["get", "k"]);
    assert_eq!(j["kvs"][0]["create_revision"], 6);
    assert_eq!(j["kvs"][0]["version"], 1);

    assert_eq!(ctl.err(&["get", "k", "--rev=7"]), format!("{FUTURE_REV}\n"));
}

#[test]
fn get_sorted() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let (_cairn, ctl) = start(&etcdctl);
    // Chosen so that every sort target orders the keys differently:
    //   a: create 5, mod 5, version 1, value "y"
    //   b: create 2, mod 7, version 3, value "x"
    //   c: create 3, mod 4, version 2, value "z"
    ctl.put("b", "x0"); // 2
    ctl.put("c", "z0"); // 3
    ctl.put("c", "z"); // 4
    ctl.put("a", "y"); // 5
    ctl.put("b", "x1"); // 6
    ctl.put("b", "x"); // 7

    let cases = [
        ("KEY", ["a", "b", "c"]),
        ("CREATE", ["b", "c", "a"]),
        ("MODIFY", ["c", "a", "b"]),
        ("VERSION", ["a", "c", "b"]),
        ("VALUE", ["b", "a", "c"]),
    ];
    for (target, asc) in cases {
        let sort = format!("--sort-by={target}");
        let got = ctl.ok(&["get", "", "--prefix", "--keys-only", &sort, "--order=ASCEND"]);
        assert_eq!(got, key_lines(&asc), "{target} ASCEND");
        // ASCEND is the default order.
        let got = ctl.ok(&["get", "", "--prefix", "--keys-only", &sort]);
        assert_eq!(got, key_lines(&asc), "{target} default order");
        let mut desc = asc;
        desc.reverse();
        let got = ctl.ok(&["get", "", "--prefix", "--keys-only", &sort, "--order=DESCEND"]);
        assert_eq!(got, key_lines(&desc), "{target} DESCEND");
    }

    // DESCEND alone sorts by key; sorting applies before the limit.
    assert_eq!(ctl.ok(&["get", "", "--prefix", "--keys-only", "--order=DESCEND"]), key_lines(&["c", "b", "a"]));
    assert_eq!(
        ctl.ok(&["get", "", "--prefix", "--sort-by=MODIFY", "--order=DESCEND", "--limit=2"]),
        kv_lines(&[("b", "x"), ("a", "y")])
    );
    assert_eq!(
        ctl.ok(&["get", "", "--prefix", "--sort-by=VALUE", "--limit=1"]),
        kv_lines(&[("b", "x")])
    );
    // Sorted results still carry the full count and `more`.
    let j = ctl.json(&["get", "", "--prefix", "--sort-by=VERSION", "--order=DESCEND", "--limit=1"]);
    assert_eq!(j["kvs"].as_array().unwrap().len(), 1);
    assert_eq!(j["kvs"][0]["key"], b64("b"));
    assert_eq!(j["count"], 3);
    assert_eq!(j["more"], true);
}

#[test]
fn get_json() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let (_cairn, ctl) = start(&etcdctl);
    ctl.put("a", "1"); // 2
    ctl.put("b", "2"); // 3
    ctl.put("c", "3"); // 4
    ctl.put("a", "11"); // 5
    ctl.put("ab", "x"); // 6

    let j = ctl.json(&["get", "a"]);
    let h = &j["header"];
    assert_eq!(h["revision"], 6);
    assert_eq!(h["cluster_id"].as_u64(), Some(CLUSTER_ID), "{j}");
    assert_eq!(h["member_id"].as_u64(), Some(MEMBER_ID), "{j}");
    assert!(h["raft_term"].as_u64().unwrap_or(0) >= 1, "{j}");
    assert_eq!(
        j["kvs"],
        serde_json::json!([
            {"key": b64("a"), "create_revision": 2, "mod_revision": 5, "version": 2, "value": b64("11")},
        ])
    );
    assert_eq!(j["count"], 1);
    assert!(j.get("more").is_none(), "{j}");

    let j = ctl.json(&["get", "", "--prefix", "--limit=2"]);
    assert_eq!(
        j["kvs"],
        serde_json::json!([
            {"key": b64("a"), "create_revision": 2, "mod_revision": 5, "version": 2, "value": b64("11")},
            {"key": b64("ab"), "create_revision": 6, "mod_revision": 6, "version": 1, "value": b64("x")},
        ])
    );
    assert_eq!(j["more"], true);
    assert_eq!(j["count"], 4);

    // --keys-only drops values; a miss has neither kvs nor count.
    let j = ctl.json(&["get", "b", "--keys-only"]);
    assert_eq!(j["kvs"][0]["key"], b64("b"));
    assert!(j["kvs"][0].get("value").is_none(), "{j}");
    assert_eq!(j["kvs"][0]["mod_revision"], 3);
    let j = ctl.json(&["get", "nothere"]);
    assert_eq!(j["header"]["revision"], 6);
    assert!(j.get("kvs").is_none() && j.get("count").is_none(), "{j}");

    // put -w json carries the header; --prev-kv adds the old pair.
    let j = ctl.json(&["put", "a", "111", "--prev-kv"]);
    assert_eq!(j["header"]["revision"], 7);
    assert_eq!(
        j["prev_kv"],
        serde_json::json!({"key": b64("a"), "create_revision": 2, "mod_revision": 5, "version": 2, "value": b64("11")})
    );

    // etcdctl 3.4 has no --count-only, but -w fields shows Count and More.
    let f = ctl.ok(&["get", "", "--prefix", "--limit=1", "-w", "fields"]);
    assert!(f.contains("\"Count\" : 4\n"), "{f}");
    assert!(f.contains("\"More\" : true\n"), "{f}");
    assert!(f.contains(&format!("\"MemberID\" : {MEMBER_ID}\n")), "{f}");
    assert!(f.contains("\"Revision\" : 7\n"), "{f}");
}

#[test]
fn delete() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let (_cairn, ctl) = start(&etcdctl);
    for (k, v) in [("p/1", "v1"), ("p/2", "v2"), ("p/3", "v3"), ("q", "9"), ("r", "10"), ("s", "11"), ("t", "12")] {
        ctl.put(k, v);
    }

    assert_eq!(ctl.ok(&["del", "q"]), "1\n");
    assert_eq!(ctl.ok(&["del", "q"]), "0\n");
    assert_eq!(ctl.ok(&["get", "q"]), "");

    assert_eq!(ctl.ok(&["del", "p/", "--prefix"]), "3\n");
    assert_eq!(ctl.ok(&["get", "p/", "--prefix"]), "");
    assert_eq!(ctl.ok(&["del", "p/", "--prefix"]), "0\n");

    assert_eq!(ctl.ok(&["del", "r", "--prev-kv"]), "1\nr\n10\n");
    assert_eq!(ctl.ok(&["del", "r", "--prev-kv"]), "0\n");

    ctl.put("r2", "x");
    assert_eq!(ctl.ok(&["del", "s", "--from-key", "--prev-kv"]), "2\ns\n11\nt\n12\n");
    assert_eq!(ctl.ok(&["get", "", "--prefix"]), "r2\nx\n");

    // A range [a, z) and JSON output with prev_kvs.
    ctl.put("m", "mm");
    let rev = ctl.revision();
    let j = ctl.json(&["del", "a", "z", "--prev-kv"]);
    assert_eq!(j["header"]["revision"], rev + 1);
    assert_eq!(j["deleted"], 2);
    let keys: Vec<&str> = j["prev_kvs"].as_array().unwrap().iter().map(|kv| kv["key"].as_str().unwrap()).collect();
    assert_eq!(keys, [b64("m"), b64("r2")]);
    assert_eq!(j["prev_kvs"][0]["value"], b64("mm"));
    assert_eq!(j["prev_kvs"][0]["mod_revision"], rev);
    // Deleting nothing does not create a revision.
    let j = ctl.json(&["del", "nothing"]);
    assert_eq!(j["header"]["revision"], rev + 1);
    assert!(j.get("deleted").is_none(), "{j}");

    // Everything, via the empty key.
    ctl.put("x", "1");
    ctl.put("y", "2");
    assert_eq!(ctl.ok(&["del", "", "--from-key"]), "2\n");
    assert_eq!(ctl.ok(&["get", "", "--prefix"]), "");
}

/// etcdctl's txn input: compares, a blank line, success ops, a blank line,
/// failure ops, a blank line.
fn script(compares: &[&str], success: &[&str], failure: &[&str]) -> String {
    let mut s = String::new();
    for section in [compares, success, failure] {
        for line in section {
            s.push_str(line);
            s.push('\n');
        }
        s.push('\n');
    }
    s
}

#[test]
fn txn_success_and_failure() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let (_cairn, ctl) = start(&etcdctl);
    ctl.put("k", "v"); // 2
    ctl.put("n", "1"); // 3

    // Interactive mode prompts on stdout even without a TTY.
    let out = ctl.txn(&["-i"], &script(&[r#"value("k") = "v""#], &["put k v2", "get k"], &["put k fail"]));
    assert_eq!(
        out,
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\nSUCCESS\n\nOK\n\nk\nv2\n"
    );
    assert_eq!(ctl.ok(&["get", "k"]), "k\nv2\n");

    // Non-interactive: the same three sections, no prompts. The compare fails now.
    let out = ctl.txn(&[], &script(&[r#"value("k") = "v""#], &["put k v3"], &["put k fail", "del n --prev-kv"]));
    assert_eq!(out, "FAILURE\n\nOK\n\n1\nn\n1\n");
    assert_eq!(ctl.ok(&["get", "k"]), "k\nfail\n");
    assert_eq!(ctl.ok(&["get", "n"]), "");
    let out = ctl.txn(&["--interactive=false"], &script(&[r#"value("k") != "v""#], &["put k ok"], &[]));
    assert_eq!(out, "SUCCESS\n\nOK\n");
    // One revision per txn. k: created at 2, modified at 4 (v2), 5 (fail, with
    // n's delete), 6 (ok); version 4.

    // mod(): greater / less / equal against the key's mod revision.
    let out = ctl.txn(&[], &script(&[r#"mod("k") > "5""#], &["put x y"], &["put x z"]));
    assert_eq!(out, "SUCCESS\n\nOK\n");
    assert_eq!(ctl.ok(&["get", "x"]), "x\ny\n");
    let out = ctl.txn(&[], &script(&[r#"mod("k") < "6""#], &["put x y2"], &["put x z"]));
    assert_eq!(out, "FAILURE\n\nOK\n");
    assert_eq!(ctl.ok(&["get", "x"]), "x\nz\n");
    assert_eq!(ctl.txn(&[], &script(&[r#"mod("k") = "6""#], &[], &[])), "SUCCESS\n");
    assert_eq!(ctl.txn(&[], &script(&[r#"mod("nope") = "0""#], &[], &[])), "SUCCESS\n");

    // create(): 0 for a missing key (the put-if-absent idiom).
    let out = ctl.txn(&[], &script(&[r#"create("new") = "0""#], &["put new first"], &["get new"]));
    assert_eq!(out, "SUCCESS\n\nOK\n");
    let out = ctl.txn(&[], &script(&[r#"create("new") = "0""#], &["put new second"], &["get new"]));
    assert_eq!(out, "FAILURE\n\nnew\nfirst\n");
    // (etcdctl ignores --print-value-only inside a txn.)
    let out = ctl.txn(&[], &script(&[r#"create("k") = "2""#], &["get k --print-value-only"], &[]));
    assert_eq!(out, "SUCCESS\n\nk\nok\n");

    // version(): several compares must all hold.
    let out = ctl.txn(&[], &script(&[r#"version("k") = "4""#, r#"version("nope") = "0""#], &["del k"], &[]));
    assert_eq!(out, "SUCCESS\n\n1\n");
    let out = ctl.txn(&[], &script(&[r#"version("new") = "1""#, r#"version("x") > "5""#], &[], &["put failed yes"]));
    assert_eq!(out, "FAILURE\n\nOK\n");
    assert_eq!(ctl.ok(&["get", "", "--prefix", "--keys-only"]), key_lines(&["failed", "new", "x"]));

    // A failing compare with no failure ops changes nothing.
    let rev = ctl.revision();
    assert_eq!(ctl.txn(&[], &script(&[r#"value("zz") = "v""#], &["put zz v"], &[])), "FAILURE\n");
    assert_eq!(ctl.revision(), rev);

    // No compares: success. Ranges inside a txn take their options.
    let out = ctl.txn(&[], &script(&[], &[r#"get "" --prefix --keys-only --limit=2"#, "del x --prev-kv"], &[]));
    assert_eq!(out, "SUCCESS\n\nfailed\n\nnew\n\n\n1\nx\nz\n");
    assert_eq!(ctl.revision(), rev + 1);
}

#[test]
fn txn_json() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let (_cairn, ctl) = start(&etcdctl);
    ctl.put("k", "v"); // 2
    ctl.put("x", "1"); // 3

    let j = ctl.json_txn(&script(&[r#"value("k") = "v""#], &["get k", "del x", "put y 2"], &[]));
    assert_eq!(j["header"]["revision"], 4, "{j}");
    assert_eq!(j["header"]["member_id"].as_u64(), Some(MEMBER_ID), "{j}");
    assert_eq!(j["succeeded"], true, "{j}");
    let r = &j["responses"];
    assert_eq!(r.as_array().unwrap().len(), 3, "{j}");
    let range = &r[0]["Response"]["ResponseRange"];
    assert_eq!(
        range["kvs"],
        serde_json::json!([{"key": b64("k"), "create_revision": 2, "mod_revision": 2, "version": 1, "value": b64("v")}])
    );
    assert_eq!(range["count"], 1);
    assert_eq!(r[1]["Response"]["ResponseDeleteRange"]["deleted"], 1, "{j}");
    assert!(r[2]["Response"].get("ResponsePut").is_some(), "{j}");
    assert_eq!(ctl.ok(&["get", "y"]), "y\n2\n");

    // A failed compare: `succeeded` is false (omitted), failure ops run.
    let j = ctl.json_txn(&script(&[r#"value("k") = "nope""#], &["put k a"], &["put k b"]));
    assert!(j.get("succeeded").is_none(), "{j}");
    assert_eq!(j["header"]["revision"], 5, "{j}");
    assert!(j["responses"][0]["Response"].get("ResponsePut").is_some(), "{j}");
    assert_eq!(ctl.ok(&["get", "k"]), "k\nb\n");
}

/// etcd fills a header with the revision into each response inside a txn:
/// etcd 3.4.23 printed, for `get k`, `del x` in one txn that started at 26,
/// `{"ResponseRange":{"header":{"revision":26},...}}` and
/// `{"ResponseDeleteRange":{"header":{"revision":27},...}}`, and for a lone put
/// `{"ResponsePut":{"header":{"revision":28}}}`.
#[test]
fn txn_json_inner_headers() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let (_cairn, ctl) = start(&etcdctl);
    ctl.put("k", "v"); // 2
    ctl.put("x", "1"); // 3

    let j = ctl.json_txn(&script(&[], &["get k", "del x", "get k"], &[]));
    let r = &j["responses"];
    assert_eq!(r[0]["Response"]["ResponseRange"]["header"], serde_json::json!({"revision": 3}), "{j}");
    assert_eq!(r[1]["Response"]["ResponseDeleteRange"]["header"], serde_json::json!({"revision": 4}), "{j}");
    assert_eq!(r[2]["Response"]["ResponseRange"]["header"], serde_json::json!({"revision": 4}), "{j}");
    let j = ctl.json_txn(&script(&[], &["put z 1"], &[]));
    assert_eq!(j["responses"][0]["Response"]["ResponsePut"]["header"], serde_json::json!({"revision": 5}), "{j}");
}

impl Ctl {
    fn json_txn(&self, script: &str) -> Value {
        let out = self.txn(&["-w", "json"], script);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("txn -w json: not JSON ({e}): {out:?}"))
    }
}

#[test]
fn txn_errors() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let cairn = Cairn::start_with(&["--max-txn-ops=2"]);
    let ctl = Ctl::new(&etcdctl, &cairn);

    let out = ctl.run_with_input(&["txn"], Some(&script(&[], &["put d a", "put d b"], &[])));
    assert!(!out.success(), "{out:?}");
    assert_eq!(out.errors(), "Error: etcdserver: duplicate key given in txn request\n");

    let out = ctl.run_with_input(&["txn"], Some(&script(&[], &["put a 1", "put b 2", "put c 3"], &[])));
    assert!(!out.success(), "{out:?}");
    assert_eq!(out.errors(), "Error: etcdserver: too many operations in txn request\n");
    assert_eq!(ctl.ok(&["get", "", "--prefix"]), "");

    assert_eq!(ctl.txn(&[], &script(&[], &["put a 1", "put b 2"], &[])), "SUCCESS\n\nOK\n\nOK\n");
    assert_eq!(ctl.ok(&["get", "", "--prefix"]), kv_lines(&[("a", "1"), ("b", "2")]));
}

#[test]
fn compaction() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let (_cairn, ctl) = start(&etcdctl);
    for i in 0..10 {
        ctl.put("k", &format!("v{i}")); // revisions 2..=11: k = v{rev-2}
    }
    ctl.put("other", "o"); // 12

    assert_eq!(ctl.ok(&["compaction", "5"]), "compacted revision 5\n");
    assert_eq!(ctl.err(&["get", "k", "--rev=4"]), format!("{COMPACTED}\n"));
    assert_eq!(ctl.err(&["get", "k", "--rev=2"]), format!("{COMPACTED}\n"));
    assert_eq!(ctl.ok(&["get", "k", "--rev=5"]), "k\nv3\n");
    assert_eq!(ctl.ok(&["get", "k", "--rev=8"]), "k\nv6\n");
    assert_eq!(ctl.ok(&["get", "k"]), "k\nv9\n");

    // Compacting at or below the compacted revision, or past the current one.
    assert_eq!(ctl.err(&["compaction", "5"]), format!("{COMPACTED}\n"));
    assert_eq!(ctl.err(&["compaction", "3"]), format!("{COMPACTED}\n"));
    assert_eq!(ctl.err(&["compaction", "13"]), format!("{FUTURE_REV}\n"));
    assert_eq!(ctl.err(&["compaction", "1000"]), format!("{FUTURE_REV}\n"));
    assert_eq!(ctl.err(&["get", "k", "--rev=1000"]), format!("{FUTURE_REV}\n"));

    assert_eq!(ctl.ok(&["compaction", "--physical", "10"]), "compacted revision 10\n");
    assert_eq!(ctl.err(&["get", "k", "--rev=9"]), format!("{COMPACTED}\n"));
    assert_eq!(ctl.ok(&["get", "k", "--rev=10"]), "k\nv8\n");
    // The history that survives is intact: the key keeps its create revision and version.
    let j = ctl.json(&["get", "k"]);
    assert_eq!(j["kvs"][0]["create_revision"], 2);
    assert_eq!(j["kvs"][0]["version"], 10);
    assert_eq!(j["kvs"][0]["mod_revision"], 11);

    // Compacting at the current revision is allowed; the compaction itself does not add one.
    assert_eq!(ctl.ok(&["compaction", "12"]), "compacted revision 12\n");
    assert_eq!(ctl.revision(), 12);
    assert_eq!(ctl.ok(&["get", "", "--prefix", "--rev=12"]), kv_lines(&[("k", "v9"), ("other", "o")]));
    assert_eq!(ctl.err(&["get", "k", "--rev=11"]), format!("{COMPACTED}\n"));
    ctl.put("k", "after");
    assert_eq!(ctl.ok(&["get", "k"]), "k\nafter\n");
}

/// The fields of `endpoint status`'s simple output.
fn status_fields(line: &str) -> Vec<String> {
    line.trim_end_matches('\n').split(", ").map(|s| s.trim().to_string()).collect()
}

#[test]
fn endpoint_status() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let cairn = Cairn::start();
    // Without the http:// scheme: etcdctl 3.4 dials each endpoint of `endpoint
    // status` on its own and sends the endpoint string verbatim as :authority
    // (see `endpoint_status_with_scheme`); "127.0.0.1:port" is a valid one.
    let ctl = Ctl { bin: etcdctl.clone(), endpoint: format!("127.0.0.1:{}", cairn.port) };
    ctl.put("a", "1");

    // Simple: endpoint, ID, version, db size, is leader, is learner, raft term,
    // raft index, raft applied index, errors.
    let out = ctl.ok(&["endpoint", "status"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let f = status_fields(&out);
    assert_eq!(f.len(), 10, "{out:?}");
    assert_eq!(f[0], ctl.endpoint);
    assert_eq!(f[1], MEMBER_ID_HEX);
    assert_eq!(f[2], "3.6.0");
    assert!(f[3].ends_with('B') && !f[3].starts_with("0 "), "db size {:?}", f[3]);
    assert_eq!(f[4], "true");
    assert_eq!(f[5], "false");
    let term: u64 = f[6].parse().unwrap();
    assert!(term >= 1, "{out}");
    let index: u64 = f[7].parse().unwrap();
    assert!(index >= 1, "{out}");
    assert_eq!(f[8], f[7], "applied index == raft index on a single member: {out}");
    assert_eq!(f[9], "");

    // JSON.
    let j = ctl.json(&["endpoint", "status"]);
    let arr = j.as_array().unwrap();
    assert_eq!(arr.len(), 1, "{j}");
    assert_eq!(arr[0]["Endpoint"], ctl.endpoint);
    let s = &arr[0]["Status"];
    assert_eq!(s["version"], "3.6.0");
    assert_eq!(s["leader"].as_u64(), Some(MEMBER_ID), "{j}");
    assert_eq!(s["header"]["member_id"].as_u64(), Some(MEMBER_ID), "{j}");
    assert_eq!(s["header"]["cluster_id"].as_u64(), Some(CLUSTER_ID), "{j}");
    assert_eq!(s["header"]["revision"], 2, "{j}");
    assert!(s["dbSize"].as_i64().unwrap() > 0, "{j}");
    assert!(s["dbSizeInUse"].as_i64().unwrap_or(0) <= s["dbSize"].as_i64().unwrap(), "{j}");
    assert_eq!(s["raftTerm"].as_u64(), Some(term), "{j}");
    let json_index = s["raftIndex"].as_u64().unwrap();
    assert!(json_index >= index, "{j}");
    assert_eq!(s["raftAppliedIndex"].as_u64(), Some(json_index), "{j}");

    // Every write moves the Raft index on.
    ctl.put("b", "2");
    ctl.put("c", "3");
    let j = ctl.json(&["endpoint", "status"]);
    let later = j[0]["Status"]["raftIndex"].as_u64().unwrap();
    assert!(later >= json_index + 2, "raft index {json_index} -> {later}");
    assert_eq!(j[0]["Status"]["header"]["revision"], 4);

    // Table.
    let out = ctl.ok(&["endpoint", "status", "-w", "table"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    let cells = |l: &str| -> Vec<String> {
        l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect()
    };
    assert_eq!(
        cells(lines[1]),
        [
            "ENDPOINT",
            "ID",
            "VERSION",
            "DB SIZE",
            "IS LEADER",
            "IS LEARNER",
            "RAFT TERM",
            "RAFT INDEX",
            "RAFT APPLIED INDEX",
            "ERRORS"
        ]
    );
    assert!(lines[0].starts_with("+---") && lines[2].starts_with("+---") && lines[4].starts_with("+---"), "{out}");
    let row = cells(lines[3]);
    assert_eq!(row[0], ctl.endpoint);
    assert_eq!(row[1], MEMBER_ID_HEX);
    assert_eq!(row[2], "3.6.0");
    assert_eq!(row[4], "true");
    assert_eq!(row[5], "false");
    assert_eq!(row[7], later.to_string());
    assert_eq!(row[8], later.to_string());
}

/// `--endpoints=http://...` is how most people call etcdctl. etcdctl 3.4 dials
/// `passthrough:///http://127.0.0.1:port` for the per-endpoint Maintenance calls
/// (status, hashkv, defrag, snapshot, move-leader), so grpc-go sends
/// `:authority: http://127.0.0.1:port`. etcd (grpc-go) accepts that and prints
/// `http://127.0.0.1:23790, 8e9e05c52164694d, 3.4.23, 25 kB, true, false, 2, 40, 40, `.
#[test]
fn endpoint_status_with_scheme() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let (cairn, ctl) = start(&etcdctl);
    let out = ctl.run(&["endpoint", "status"]);
    assert!(out.success(), "{out:?}");
    let f = status_fields(&out.stdout);
    assert_eq!(f.len(), 10, "{out:?}");
    assert_eq!(f[0], cairn.endpoint());
    assert_eq!(f[1], MEMBER_ID_HEX);
    assert_eq!(f[2], "3.6.0");
    assert_eq!(f[4], "true");
}

#[test]
fn endpoint_health_and_alarms() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let (cairn, ctl) = start(&etcdctl);

    // etcdctl 3.4 prints the healthy line on stderr.
    let out = ctl.run(&["endpoint", "health"]);
    assert!(out.success(), "{out:?}");
    let prefix = format!("{} is healthy: successfully committed proposal: took = ", cairn.endpoint());
    let all = format!("{}{}", out.stdout, out.stderr);
    let line = all.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no health line: {out:?}"));
    let took = &line[prefix.len()..];
    assert!(took.ends_with('s') && took.len() > 1, "duration {took:?}");

    let j = ctl.json(&["endpoint", "health"]);
    assert_eq!(j[0]["endpoint"], cairn.endpoint());
    assert_eq!(j[0]["health"], true, "{j}");
    assert!(j[0].get("error").is_none(), "{j}");

    let out = ctl.ok(&["endpoint", "health", "-w", "table"]);
    let row = out.lines().nth(3).unwrap_or_default();
    let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
    assert_eq!(cells[0], cairn.endpoint(), "{out}");
    assert_eq!(cells[1], "true", "{out}");
    assert_eq!(cells[3], "", "{out}");

    assert_eq!(ctl.ok(&["alarm", "list"]), "");
}

#[test]
fn empty_key_errors() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let (_cairn, ctl) = start(&etcdctl);
    // etcdctl sends these; the server rejects them.
    let want = "Error: etcdserver: key is not provided\n";
    assert_eq!(ctl.err(&["put", "", "v"]), want);
    assert_eq!(ctl.err(&["get", ""]), want);
    assert_eq!(ctl.err(&["del", ""]), want);
    let out = ctl.run_with_input(&["txn"], Some(&script(&[], &[r#"put "" v"#], &[])));
    assert!(!out.success(), "{out:?}");
    assert_eq!(out.errors(), want);
    assert_eq!(ctl.revision(), 1);
}

#[test]
fn request_too_large() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let cairn = Cairn::start_with(&["--max-request-bytes=1024"]);
    let ctl = Ctl::new(&etcdctl, &cairn);

    let big = "x".repeat(2000);
    assert_eq!(ctl.err(&["put", "big", &big]), "Error: etcdserver: request is too large\n");
    let out = ctl.run_with_input(&["txn"], Some(&script(&[], &[&format!("put big {big}")], &[])));
    assert!(!out.success(), "{out:?}");
    assert_eq!(out.errors(), "Error: etcdserver: request is too large\n");
    assert_eq!(ctl.ok(&["get", "big"]), "");

    let fits = "y".repeat(900);
    ctl.put("fits", &fits);
    assert_eq!(ctl.ok(&["get", "fits", "--print-value-only"]), format!("{fits}\n"));
    // Reads are not limited by the request size cap.
    assert_eq!(ctl.revision(), 2);
}

#[test]
fn data_survives_restart() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let (mut cairn, ctl) = start(&etcdctl);
    ctl.put("a", "1");
    ctl.put("a", "2");
    ctl.put("b", "3");
    assert_eq!(ctl.ok(&["compaction", "3"]), "compacted revision 3\n");

    assert!(cairn.terminate().success());
    cairn.restart();
    assert_eq!(ctl.ok(&["get", "", "--prefix"]), kv_lines(&[("a", "2"), ("b", "3")]));
    assert_eq!(ctl.revision(), 4);
    assert_eq!(ctl.err(&["get", "a", "--rev=2"]), format!("{COMPACTED}\n"));

    ctl.put("c", "4");
    cairn.kill9();
    cairn.restart();
    assert_eq!(ctl.ok(&["get", "c"]), "c\n4\n");
    assert_eq!(ctl.ok(&["get", "a", "--rev=3"]), "a\n2\n");
    assert_eq!(ctl.revision(), 5);
}

#[test]
fn http_health_and_version() {
    // No etcdctl needed, but keep the suite's shape: plain HTTP on the client port.
    let cairn = Cairn::start();

    let (status, body) = http_get(cairn.port, "/health").unwrap();
    assert_eq!(status, 200, "{body}");
    let j: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("/health not JSON ({e}): {body:?}"));
    assert_eq!(j["health"], "true", "{body}");

    let (status, body) = http_get(cairn.port, "/version").unwrap();
    assert_eq!(status, 200, "{body}");
    let j: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("/version not JSON ({e}): {body:?}"));
    assert_eq!(j["etcdserver"], "3.6.0", "{body}");
    assert_eq!(j["etcdcluster"], "3.6.0", "{body}");
}

/// etcd answers an unknown plain-HTTP path with `404 page not found`.
#[test]
fn http_unknown_path_is_404() {
    let cairn = Cairn::start();
    let (status, body) = http_get(cairn.port, "/no-such-path").unwrap();
    assert_eq!(status, 404, "{body:?}");
}

#[test]
fn endpoint_hashkv_and_defrag() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let (cairn, ctl) = start(&etcdctl);
    ctl.put("a", "1");
    ctl.put("b", "2");
    // "<endpoint>, <hash>"
    let hash = |ctl: &Ctl| -> u32 {
        let out = ctl.ok(&["endpoint", "hashkv"]);
        let (ep, h) = out.trim().split_once(", ").unwrap_or_else(|| panic!("{out:?}"));
        assert_eq!(ep, cairn.endpoint());
        h.parse().unwrap_or_else(|_| panic!("{out:?}"))
    };
    let first = hash(&ctl);
    assert_eq!(hash(&ctl), first);
    ctl.put("a", "3");
    let second = hash(&ctl);
    assert_ne!(second, first);
    let j = ctl.json(&["endpoint", "hashkv"]);
    assert_eq!(j[0]["HashKV"]["hash"].as_u64(), Some(second as u64), "{j}");

    let out = ctl.ok(&["defrag"]);
    assert_eq!(out.trim(), format!("Finished defragmenting etcd member[{}]", cairn.endpoint()));
    assert_eq!(hash(&ctl), second, "defragmenting changes no data");
    assert_eq!(ctl.ok(&["get", "a", "--print-value-only"]).trim(), "3");
}

/// `member list` lines (`id, status, name, peer, client, learner`) sorted.
fn member_lines(ctl: &Ctl) -> Vec<String> {
    let mut lines: Vec<String> = ctl.ok(&["member", "list"]).lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The expected `member list` line of a cluster member.
fn member_line(ctl: &Ctl, m: &Cairn, learner: bool) -> String {
    let id = Ctl { bin: ctl.bin.clone(), endpoint: m.endpoint() }.json(&["endpoint", "status"])[0]["Status"]["header"]
        ["member_id"]
        .as_u64()
        .unwrap();
    format!("{id:x}, started, {}, {}, {}, {learner}", m.name, m.peer_url(), m.endpoint())
}

/// etcdctl's cluster commands against a 3-member cluster: member list (simple
/// and table), endpoint status --cluster, move-leader, and member add
/// --learner / promote / remove with a member that joins as etcdctl's
/// printed environment says.
#[test]
fn cluster_membership_commands() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let mut cluster = Cluster::start(3, &["--snapshot-count=50", "--snapshot-catchup-entries=5"]);
    let ctl = Ctl::cluster(&etcdctl, &cluster.endpoints());

    // Members publish their names and client URLs shortly after start.
    let mut want: Vec<String> = cluster.members.iter().map(|m| member_line(&ctl, m, false)).collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(10);
    while member_lines(&ctl) != want {
        assert!(Instant::now() < deadline, "member list {:?}, want {want:?}", member_lines(&ctl));
        std::thread::sleep(Duration::from_millis(100));
    }
    let table = ctl.ok(&["member", "list", "-w", "table"]);
    assert!(table.contains("|        ID        | STATUS  | NAME |       PEER ADDRS       |      CLIENT ADDRS      | IS LEARNER |"), "{table}");
    assert_eq!(table.lines().filter(|l| l.contains("| started |")).count(), 3, "{table}");

    // endpoint status --cluster finds every member through member list.
    let one = Ctl { bin: etcdctl.clone(), endpoint: cluster.members[0].endpoint() };
    let status = one.ok(&["endpoint", "status", "--cluster"]);
    let rows: Vec<Vec<String>> = status.lines().map(status_fields).collect();
    assert_eq!(rows.len(), 3, "{status}");
    assert_eq!(rows.iter().filter(|r| r[4] == "true").count(), 1, "one leader: {status}");
    assert!(rows.iter().all(|r| r[2] == "3.6.0" && r[5] == "false" && r[6] == rows[0][6]), "{status}");
    for m in &cluster.members {
        assert!(rows.iter().any(|r| r[0] == m.endpoint()), "{} missing from {status}", m.endpoint());
    }

    // move-leader: to a follower; a bad target is etcd's error.
    let leader_id = rows.iter().find(|r| r[4] == "true").unwrap()[1].clone();
    let target_id = rows.iter().find(|r| r[4] == "false").unwrap()[1].clone();
    assert_eq!(
        ctl.ok(&["move-leader", &target_id]),
        format!("Leadership transferred from {leader_id} to {target_id}\n")
    );
    assert_eq!(ctl.err(&["move-leader", "1234"]), "Error: etcdserver: bad leader transferee\n");
    for i in 0..120 {
        ctl.put(&format!("before-join/{i}"), "v");
    }

    // member add --learner prints the environment to start the member with.
    let mut joiner = cluster.new_joiner("m3", &["--snapshot-count=50", "--snapshot-catchup-entries=5"]);
    let out = ctl.ok(&["member", "add", "m3", &format!("--peer-urls={}", joiner.peer_url()), "--learner"]);
    let first = out.lines().next().unwrap();
    let words: Vec<&str> = first.split_whitespace().collect();
    assert_eq!((words[0], words[2], words[3], words[4]), ("Member", "added", "to", "cluster"), "{out}");
    // etcdctl prints ids with Go's %16x: padded with spaces, not zeros.
    let new_id = words[1].to_string();
    let cluster_id = words[5].to_string();
    assert!(out.contains("\nETCD_NAME=\"m3\"\n"), "{out}");
    assert!(out.contains(&format!("m3={}", joiner.peer_url())), "{out}");
    assert!(out.contains(&format!("ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{}\"", joiner.peer_url())), "{out}");
    assert!(out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""), "{out}");
    let unstarted = format!("{new_id}, unstarted, , {}, , true", joiner.peer_url());
    assert!(member_lines(&ctl).contains(&unstarted), "{:?}", member_lines(&ctl));

    joiner.spawn_only();
    joiner.wait_health("/health?serializable=true");
    let learner_ctl = Ctl { bin: etcdctl.clone(), endpoint: joiner.endpoint() };
    let started = format!("{new_id}, started, m3, {}, {}, true", joiner.peer_url(), joiner.endpoint());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let caught_up = learner_ctl.run(&["get", "before-join/", "--prefix", "--keys-only", "--consistency=s", "-w", "json"]);
        let count = serde_json::from_str::<Value>(&caught_up.stdout).ok().and_then(|j| j["count"].as_u64());
        if member_lines(&ctl).contains(&started) && count == Some(120) {
            break;
        }
        assert!(Instant::now() < deadline, "learner did not join and catch up: {:?} {caught_up:?}", member_lines(&ctl));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(joiner.log_contains_within("installed snapshot", Duration::from_secs(5)), "learner did not catch up by snapshot");
    assert_eq!(learner_ctl.err(&["put", "x", "y"]), "Error: etcdserver: rpc not supported for learner\n");

    // The leader promotes only once the learner's log is 90% of its own (as
    // etcd): retry while it says so, as kubeadm does.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ctl.run(&["member", "promote", &new_id]);
        if out.success() {
            assert_eq!(out.stdout, format!("Member {new_id:>16} promoted in cluster {cluster_id:>16}\n"));
            break;
        }
        assert_eq!(out.errors(), "Error: etcdserver: can only promote a learner member which is in sync with leader\n");
        assert!(Instant::now() < deadline, "learner never in sync");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(ctl.err(&["member", "promote", &new_id]), "Error: etcdserver: can only promote a learner member\n");
    assert!(member_lines(&ctl).contains(&started.replace(", true", ", false")));
    assert_eq!(ctl.ok(&["member", "remove", &new_id]), format!("Member {new_id:>16} removed from cluster {cluster_id:>16}\n"));
    assert_eq!(ctl.err(&["member", "remove", &new_id]), "Error: etcdserver: member not found\n");
    assert_eq!(member_lines(&ctl), want);
    ctl.put("after-remove", "v");
    drop(joiner);
    cluster.members.truncate(3);
}

#[test]
fn watch_prefix_rev_prev_kv_and_interactive_progress() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let (_c, ctl) = start(&etcdctl);
    ctl.put("w/a", "1"); // rev 2
    ctl.put("w/b", "1"); // rev 3

    // --rev replays history; --prefix selects the keys.
    let hist = Running::start(&ctl, &["watch", "w/", "--prefix", "--rev=2"]);
    assert_eq!(hist.take(6), ["PUT", "w/a", "1", "PUT", "w/b", "1"]);

    // Live events with --prev-kv: the previous pair comes before the new one;
    // a delete prints the key with an empty value.
    let live = Running::start(&ctl, &["watch", "w/a", "--prev-kv"]);
    std::thread::sleep(Duration::from_millis(500));
    ctl.put("w/a", "2");
    assert_eq!(ctl.ok(&["del", "w/a"]), "1\n");
    assert_eq!(live.take(10), ["PUT", "w/a", "1", "w/a", "2", "DELETE", "w/a", "2", "w/a", ""]);
    assert_eq!(hist.take(6), ["PUT", "w/a", "2", "DELETE", "w/a", ""]);

    // Interactive: a watch command, then a progress request.
    let mut inter = Running::start(&ctl, &["watch", "-i"]);
    inter.send("watch w/c");
    std::thread::sleep(Duration::from_millis(500));
    ctl.put("w/c", "x");
    assert_eq!(inter.take(3), ["PUT", "w/c", "x"]);
    let rev = ctl.revision();
    inter.send("progress");
    assert_eq!(inter.take(1), [format!("progress notify: {rev}")]);
}
