//! A parser for the operation lines of Jepsen's (Clojure) test logs, as in
//! the published etcd register histories:
//!
//! ```text
//! INFO  jepsen.util - 3<TAB>:invoke<TAB>:cas<TAB>[3 0]
//! INFO  jepsen.util - 3<TAB>:ok<TAB>:read<TAB>nil
//! INFO  jepsen.util - 8<TAB>:info<TAB>:write<TAB>:timed-out
//! ```
//!
//! Fields after `jepsen.util - ` are tab-separated: process, `:type`, `:f`
//! and an EDN value (`nil`, an integer, a vector such as `[3 0]`, or a
//! keyword such as `:timed-out`, which becomes the event's `error`).
//!
//! These logs carry no timestamps: the order of the lines is the real-time
//! order. The parser therefore uses the 1-based line number as both the
//! event index and `t_ns`, which keeps that order and lets reports point at
//! lines. Lines from other loggers and nemesis lines (process `:nemesis`)
//! are not client operations and are skipped.

use serde_json::Value;

use crate::history::{Event, EventType};

const MARKER: &str = "jepsen.util - ";

#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}: {text:?}")]
pub struct JepsenLogError {
    pub line: usize,
    pub message: String,
    pub text: String,
}

/// Parses the client operation lines of a Jepsen log into history events.
pub fn parse(text: &str) -> Result<Vec<Event>, JepsenLogError> {
    let mut events = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let Some(start) = raw.find(MARKER) else {
            continue;
        };
        let fail = |message: &str| JepsenLogError {
            line,
            message: message.to_string(),
            text: raw.to_string(),
        };
        let fields: Vec<&str> = raw[start + MARKER.len()..].splitn(4, '\t').collect();
        let [process, kind, f, value] = fields[..] else {
            // jepsen.util also logs free text; only tab-separated
            // four-field lines are operations.
            continue;
        };
        let process = process.trim();
        if process.starts_with(':') {
            continue;
        }
        let process: u64 = process.parse().map_err(|_| fail("bad process id"))?;
        let kind = match kind.trim() {
            ":invoke" => EventType::Invoke,
            ":ok" => EventType::Ok,
            ":fail" => EventType::Fail,
            ":info" => EventType::Info,
            _ => return Err(fail("unknown operation type")),
        };
        let f = f
            .trim()
            .strip_prefix(':')
            .filter(|f| !f.is_empty())
            .ok_or_else(|| fail("function is not a keyword"))?;
        let value = value.trim();
        let (value, error) = match value.strip_prefix(':') {
            Some(keyword) => (Value::Null, Some(keyword.to_string())),
            None => (
                parse_edn(value).ok_or_else(|| fail("unsupported value"))?,
                None,
            ),
        };
        let index = line as u64;
        events.push(Event {
            index,
            kind,
            process,
            f: f.to_string(),
            key: None,
            value,
            t_ns: index,
            node: None,
            error,
            rev: None,
        });
    }
    Ok(events)
}

/// The subset of EDN these logs use: `nil`, integers and flat vectors of them.
fn parse_edn(text: &str) -> Option<Value> {
    if let Some(inner) = text.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        return inner
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|item| !item.is_empty())
            .map(parse_edn)
            .collect::<Option<Vec<_>>>()
            .map(Value::Array);
    }
    if text == "nil" {
        return Some(Value::Null);
    }
    text.parse::<i64>().ok().map(Value::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_operation_lines_and_skips_the_rest() {
        let log = "INFO  jepsen.core - Worker 0 starting\n\
                   INFO  jepsen.util - 0\t:invoke\t:read\tnil\n\
                   INFO  jepsen.util - 2\t:invoke\t:cas\t[3 0]\n\
                   INFO  jepsen.util - :nemesis\t:info\t:start\tnil\n\
                   INFO  jepsen.util - 0\t:ok\t:read\t4\n\
                   INFO  jepsen.util - 2\t:info\t:cas\t:timed-out\n";
        let events = parse(log).unwrap();
        let summary: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.index,
                    e.t_ns,
                    e.process,
                    e.kind,
                    e.f.as_str(),
                    e.value.clone(),
                    e.error.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (2, 2, 0, EventType::Invoke, "read", Value::Null, None),
                (3, 3, 2, EventType::Invoke, "cas", json!([3, 0]), None),
                (5, 5, 0, EventType::Ok, "read", json!(4), None),
                (
                    6,
                    6,
                    2,
                    EventType::Info,
                    "cas",
                    Value::Null,
                    Some("timed-out".to_string())
                ),
            ]
        );
    }

    #[test]
    fn rejects_malformed_operation_lines() {
        for (line, expected) in [
            ("INFO  jepsen.util - x\t:ok\t:read\t1", "bad process id"),
            (
                "INFO  jepsen.util - 1\t:done\t:read\t1",
                "unknown operation type",
            ),
            (
                "INFO  jepsen.util - 1\t:ok\tread\t1",
                "function is not a keyword",
            ),
            (
                "INFO  jepsen.util - 1\t:ok\t:read\t\"s\"",
                "unsupported value",
            ),
            (
                "INFO  jepsen.util - 1\t:ok\t:cas\t[1 2",
                "unsupported value",
            ),
        ] {
            let err = parse(&format!("\n{line}\n")).unwrap_err();
            assert_eq!((err.line, err.message.as_str()), (2, expected), "{line}");
        }
    }
}
