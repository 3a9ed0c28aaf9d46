//! Hand-made histories of the kv workload's requests, which the kv and
//! watch checkers both read.

use cairn_jepsen::history::{Event, EventType};
use cairn_jepsen::ops::{
    DeleteRequest, DeleteResponse, Kv, PutRequest, PutResponse, RangeRequest, Request, Response,
};
use serde_json::Value;

use super::history::{event, Recorder};

/// How an operation ended.
pub enum Done {
    /// The response and its header revision.
    Ok(Response, i64),
    Fail,
    Info,
}

/// A history of kv requests under construction.
#[derive(Clone, Default)]
pub struct History {
    pub recorder: Recorder,
}

impl History {
    /// Records `request` by `process`, invoked at `call` and done at `ret`
    /// (in ns).
    pub fn op(
        &mut self,
        process: u64,
        call: u64,
        ret: u64,
        request: Request,
        done: Done,
    ) -> &mut Self {
        let at = |kind, value, t_ns| event(kind, process, request.function(), value, t_ns);
        let invoke = at(
            EventType::Invoke,
            serde_json::to_value(&request).unwrap(),
            call,
        );
        let completion = match done {
            Done::Ok(response, rev) => Event {
                rev: Some(rev),
                ..at(EventType::Ok, serde_json::to_value(&response).unwrap(), ret)
            },
            Done::Fail => at(EventType::Fail, Value::Null, ret),
            Done::Info => at(EventType::Info, Value::Null, ret),
        };
        self.recorder.record(invoke, Some(completion));
        self
    }

    pub fn events(&self) -> Vec<Event> {
        self.recorder.events()
    }
}

pub fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> Kv {
    Kv {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modified,
        version,
        lease: 0,
    }
}

pub fn put(key: &str, value: &str) -> Request {
    Request::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        lease: 0,
    })
}

/// A put acknowledged at `rev`, returning the key's previous value.
pub fn put_ok(prev: Option<Kv>, rev: i64) -> Done {
    Done::Ok(Response::Put(PutResponse { prev_kv: prev }), rev)
}

/// A linearizable read of `key` at the latest revision.
pub fn range(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        prefix: false,
        limit: 0,
        revision: 0,
        serializable: false,
    }
}

pub fn delete(key: &str) -> Request {
    Request::Delete(DeleteRequest { key: key.into() })
}

/// A delete acknowledged at `rev`, returning what it deleted.
pub fn deleted(prev: Vec<Kv>, rev: i64) -> Done {
    Done::Ok(
        Response::Delete(DeleteResponse {
            deleted: prev.len() as i64,
            prev_kvs: prev,
        }),
        rev,
    )
}
