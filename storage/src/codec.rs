//! Byte encoding of [`WriteRequest`] and [`WriteResponse`], for the Raft log
//! and for forwarding a request to the leader: one tag byte naming the kind
//! (1 Put, 2 DeleteRange, 3 Txn, 4 Compact, 5 LeaseGrant, 6 LeaseRevoke,
//! 7 LeaseCheckpoint) followed by the prost encoding of
//! the etcd message. prost writes fields in field-number order and these
//! messages have no maps, so equal values always encode to equal bytes, which
//! lets members compare or hash encoded entries.

use cairn_api::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, TxnRequest, TxnResponse,
};
use prost::Message;

use crate::error::StorageError;
use crate::store::{WriteRequest, WriteResponse};

const TAG_PUT: u8 = 1;
const TAG_DELETE_RANGE: u8 = 2;
const TAG_TXN: u8 = 3;
const TAG_COMPACT: u8 = 4;
const TAG_LEASE_GRANT: u8 = 5;
const TAG_LEASE_REVOKE: u8 = 6;
const TAG_LEASE_CHECKPOINT: u8 = 7;

fn tagged(tag: u8, msg: &impl Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + msg.encoded_len());
    out.push(tag);
    msg.encode(&mut out).expect("Vec grows as needed");
    out
}

fn body<M: Message + Default>(what: &str, bytes: &[u8]) -> Result<M, StorageError> {
    M::decode(bytes).map_err(|e| StorageError::Corruption(format!("undecodable {what}: {e}")))
}

fn split_tag<'a>(what: &str, bytes: &'a [u8]) -> Result<(u8, &'a [u8]), StorageError> {
    bytes
        .split_first()
        .map(|(t, rest)| (*t, rest))
        .ok_or_else(|| StorageError::Corruption(format!("empty encoded {what}")))
}

fn unknown_tag(what: &str, tag: u8) -> StorageError {
    StorageError::Corruption(format!("unknown {what} kind {tag}"))
}

impl WriteRequest {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            WriteRequest::Put(r) => tagged(TAG_PUT, r),
            WriteRequest::DeleteRange(r) => tagged(TAG_DELETE_RANGE, r),
            WriteRequest::Txn(r) => tagged(TAG_TXN, r),
            WriteRequest::Compact(r) => tagged(TAG_COMPACT, r),
            WriteRequest::LeaseGrant(r) => tagged(TAG_LEASE_GRANT, r),
            WriteRequest::LeaseRevoke(r) => tagged(TAG_LEASE_REVOKE, r),
            WriteRequest::LeaseCheckpoint(r) => tagged(TAG_LEASE_CHECKPOINT, r),
        }
    }

    /// Inverse of [`WriteRequest::encode`]; anything else is `Corruption`.
    pub fn decode(bytes: &[u8]) -> Result<WriteRequest, StorageError> {
        const WHAT: &str = "write request";
        let (tag, rest) = split_tag(WHAT, bytes)?;
        Ok(match tag {
            TAG_PUT => WriteRequest::Put(body::<PutRequest>(WHAT, rest)?),
            TAG_DELETE_RANGE => WriteRequest::DeleteRange(body::<DeleteRangeRequest>(WHAT, rest)?),
            TAG_TXN => WriteRequest::Txn(body::<TxnRequest>(WHAT, rest)?),
            TAG_COMPACT => WriteRequest::Compact(body::<CompactionRequest>(WHAT, rest)?),
            TAG_LEASE_GRANT => WriteRequest::LeaseGrant(body::<LeaseGrantRequest>(WHAT, rest)?),
            TAG_LEASE_REVOKE => WriteRequest::LeaseRevoke(body::<LeaseRevokeRequest>(WHAT, rest)?),
            TAG_LEASE_CHECKPOINT => WriteRequest::LeaseCheckpoint(body::<LeaseCheckpointRequest>(WHAT, rest)?),
            t => return Err(unknown_tag(WHAT, t)),
        })
    }
}

impl WriteResponse {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            WriteResponse::Put(r) => tagged(TAG_PUT, r),
            WriteResponse::DeleteRange(r) => tagged(TAG_DELETE_RANGE, r),
            WriteResponse::Txn(r) => tagged(TAG_TXN, r),
            WriteResponse::Compact(r) => tagged(TAG_COMPACT, r),
            WriteResponse::LeaseGrant(r) => tagged(TAG_LEASE_GRANT, r),
            WriteResponse::LeaseRevoke(r) => tagged(TAG_LEASE_REVOKE, r),
            WriteResponse::LeaseCheckpoint(r) => tagged(TAG_LEASE_CHECKPOINT, r),
        }
    }

    /// Inverse of [`WriteResponse::encode`]; anything else is `Corruption`.
    pub fn decode(bytes: &[u8]) -> Result<WriteResponse, StorageError> {
        const WHAT: &str = "write response";
        let (tag, rest) = split_tag(WHAT, bytes)?;
        Ok(match tag {
            TAG_PUT => WriteResponse::Put(body::<PutResponse>(WHAT, rest)?),
            TAG_DELETE_RANGE => WriteResponse::DeleteRange(body::<DeleteRangeResponse>(WHAT, rest)?),
            TAG_TXN => WriteResponse::Txn(body::<TxnResponse>(WHAT, rest)?),
            TAG_COMPACT => WriteResponse::Compact(body::<CompactionResponse>(WHAT, rest)?),
            TAG_LEASE_GRANT => WriteResponse::LeaseGrant(body::<LeaseGrantResponse>(WHAT, rest)?),
            TAG_LEASE_REVOKE => WriteResponse::LeaseRevoke(body::<LeaseRevokeResponse>(WHAT, rest)?),
            TAG_LEASE_CHECKPOINT => WriteResponse::LeaseCheckpoint(body::<LeaseCheckpointResponse>(WHAT, rest)?),
            t => return Err(unknown_tag(WHAT, t)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_api::etcdserverpb::{
        compare, request_op, response_op, Compare, LeaseCheckpoint, RangeRequest, RangeResponse, RequestOp, ResponseHeader,
        ResponseOp,
    };
    use cairn_api::mvccpb::KeyValue;

    fn requests() -> Vec<WriteRequest> {
        let put = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), prev_kv: true, ..Default::default() };
        let del = DeleteRangeRequest { key: b"a".to_vec(), range_end: vec![0], prev_kv: true };
        let nested = TxnRequest {
            compare: vec![],
            success: vec![RequestOp { request: Some(request_op::Request::RequestPut(put.clone())) }],
            failure: vec![],
        };
        let txn = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Greater as i32,
                target: compare::CompareTarget::Mod as i32,
                key: b"k".to_vec(),
                range_end: vec![],
                target_union: Some(compare::TargetUnion::ModRevision(3)),
            }],
            success: vec![
                RequestOp {
                    request: Some(request_op::Request::RequestRange(RangeRequest {
                        key: b"k".to_vec(),
                        ..Default::default()
                    })),
                },
                RequestOp { request: Some(request_op::Request::RequestDeleteRange(del.clone())) },
                RequestOp { request: Some(request_op::Request::RequestTxn(nested)) },
            ],
            failure: vec![RequestOp { request: Some(request_op::Request::RequestPut(put.clone())) }],
        };
        vec![
            WriteRequest::Put(put),
            WriteRequest::Put(PutRequest::default()),
            WriteRequest::DeleteRange(del),
            WriteRequest::Txn(txn),
            WriteRequest::Txn(TxnRequest::default()),
            WriteRequest::Compact(CompactionRequest { revision: 42, physical: true }),
            WriteRequest::Compact(CompactionRequest::default()),
            WriteRequest::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 7 }),
            WriteRequest::LeaseRevoke(LeaseRevokeRequest { id: -3 }),
            WriteRequest::LeaseCheckpoint(LeaseCheckpointRequest {
                checkpoints: vec![
                    LeaseCheckpoint { id: 7, remaining_ttl: 12 },
                    LeaseCheckpoint { id: 8, remaining_ttl: 0 },
                ],
            }),
            WriteRequest::LeaseCheckpoint(LeaseCheckpointRequest::default()),
        ]
    }

    fn responses() -> Vec<WriteResponse> {
        let header = Some(ResponseHeader { revision: 9, ..Default::default() });
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 2,
            mod_revision: 9,
            version: 3,
            value: b"v".to_vec(),
            lease: 0,
        };
        vec![
            WriteResponse::Put(PutResponse { header, prev_kv: Some(kv.clone()) }),
            WriteResponse::Put(PutResponse::default()),
            WriteResponse::DeleteRange(DeleteRangeResponse { header, deleted: 2, prev_kvs: vec![kv.clone(), kv.clone()] }),
            WriteResponse::Txn(TxnResponse {
                header,
                succeeded: true,
                responses: vec![ResponseOp {
                    response: Some(response_op::Response::ResponseRange(RangeResponse {
                        header,
                        kvs: vec![kv],
                        more: false,
                        count: 1,
                    })),
                }],
            }),
            WriteResponse::Txn(TxnResponse::default()),
            WriteResponse::Compact(CompactionResponse { header }),
            WriteResponse::LeaseGrant(LeaseGrantResponse { header, id: 7, ttl: 30, error: String::new() }),
            WriteResponse::LeaseRevoke(LeaseRevokeResponse { header }),
            WriteResponse::LeaseCheckpoint(LeaseCheckpointResponse { header }),
        ]
    }

    #[test]
    fn requests_roundtrip_with_their_tag() {
        for (req, tag) in requests().into_iter().zip([1, 1, 2, 3, 3, 4, 4, 5, 6, 7, 7]) {
            let bytes = req.encode();
            assert_eq!(bytes[0], tag, "{req:?}");
            assert_eq!(bytes, req.clone().encode(), "deterministic");
            assert_eq!(WriteRequest::decode(&bytes).unwrap(), req);
        }
    }

    #[test]
    fn responses_roundtrip_with_their_tag() {
        for (resp, tag) in responses().into_iter().zip([1, 1, 2, 3, 3, 4, 5, 6, 7]) {
            let bytes = resp.encode();
            assert_eq!(bytes[0], tag, "{resp:?}");
            assert_eq!(WriteResponse::decode(&bytes).unwrap(), resp);
        }
    }

    #[test]
    fn garbage_is_corruption() {
        let bad_body = [&[TAG_PUT][..], &[0xff; 11]].concat();
        let truncated = {
            let mut b = requests()[0].encode();
            b.pop();
            b
        };
        for bytes in [&[][..], &[0][..], &[8, 1, 2][..], &[0xff][..], &bad_body[..], &truncated[..]] {
            assert!(matches!(WriteRequest::decode(bytes), Err(StorageError::Corruption(_))), "{bytes:?}");
            assert!(matches!(WriteResponse::decode(bytes), Err(StorageError::Corruption(_))), "{bytes:?}");
        }
    }
}
