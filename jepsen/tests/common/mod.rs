//! Independent checks of the checker's answers, shared by the integration tests.

use cairn_jepsen::history::{Completion, Operation};
use serde_json::Value;

/// Verifies a linearizability witness without the checker's code: every
/// checked operation of every key appears exactly once, the order respects
/// real time, and replaying it on a register gives every observed result.
pub fn validate_witness(ops: &[Operation], witness: &[Vec<usize>]) -> Result<(), String> {
    let checked: Vec<usize> = (0..ops.len())
        .filter(|&i| !(ops[i].f == "read" && ops[i].completion == Completion::Info))
        .collect();
    let mut seen = vec![false; ops.len()];
    for order in witness {
        let key = order.first().map(|&i| ops[i].key.clone());
        let mut register: Option<Value> = None;
        let mut latest_call = 0;
        for &i in order {
            let op = &ops[i];
            if Some(op.key.clone()) != key {
                return Err(format!("op {i} is on key {:?}, not {key:?}", op.key));
            }
            if std::mem::replace(&mut seen[i], true) {
                return Err(format!("op {i} appears twice"));
            }
            if let Some(ret) = op.return_ns() {
                if ret < latest_call {
                    return Err(format!(
                        "op {i} returned at {ret}, before an earlier op's call at {latest_call}"
                    ));
                }
            }
            latest_call = latest_call.max(op.call_ns);
            let unknown = op.completion == Completion::Info;
            match op.f.as_str() {
                "read" => {
                    let Completion::Ok { output, .. } = &op.completion else {
                        return Err(format!(
                            "op {i}: a read with unknown outcome is in the witness"
                        ));
                    };
                    let seen_value = (!output.is_null()).then(|| output.clone());
                    if seen_value != register {
                        return Err(format!(
                            "op {i} read {output} but the register holds {register:?}"
                        ));
                    }
                }
                "write" => register = Some(op.input.clone()),
                "cas" => {
                    let (from, to) = (&op.input[0], &op.input[1]);
                    if register.as_ref() == Some(from) {
                        register = Some(to.clone());
                    } else if !unknown {
                        return Err(format!("op {i}: cas from {from} on {register:?}"));
                    }
                }
                f => return Err(format!("op {i}: unexpected function {f}")),
            }
        }
    }
    match checked.iter().find(|&&i| !seen[i]) {
        Some(i) => Err(format!("op {i} is missing from the witness")),
        None => Ok(()),
    }
}
