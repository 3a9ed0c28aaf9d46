//! Cairn's openraft type configuration and the data it replicates.
//!
//! Everything openraft is generic over is fixed here, once, so the rest of
//! Cairn names `cairn_raft::TypeConfig` (and the aliases below) and never
//! spells an openraft generic itself.
//!
//! Snapshot data is *not* part of the type configuration in openraft 0.10: it
//! is `RaftStateMachine::SnapshotData` (and `RaftNetworkV2::SnapshotData`,
//! which `Raft::new` requires to be the same type). The log store does not
//! need it, so it is chosen with the state machine.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Cairn member as Raft membership records it (`C::Node`). Membership log
/// entries carry these, so peers learn each other's URLs from the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `--name`.
    pub name: String,
    /// `--initial-advertise-peer-urls`: where other members reach this one.
    pub peer_urls: Vec<String>,
    /// `--advertise-client-urls`.
    pub client_urls: Vec<String>,
}

/// The application payload of a normal log entry (`C::D`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftRequest {
    /// Proposer-chosen id, so the proposer can match the applied entry to
    /// its waiting client.
    pub id: u64,
    /// A protobuf-encoded Cairn write request; opaque to this crate.
    /// Serialized as one byte string (bincode: length, then the bytes),
    /// which is also how serde's default writes a `Vec<u8>`, one element
    /// at a time; the encoding is the same, the per-byte calls are gone.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl fmt::Display for RaftRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RaftRequest{{id: {}, payload: {} bytes}}",
            self.id,
            self.payload.len()
        )
    }
}

/// What applying an entry returns to its proposer (`C::R`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftResponse {
    /// The request was applied: its encoded `cairn_storage::WriteResponse`.
    Written(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The request was applied as a no-op with a request-level error (e.g. a
    /// compacted revision): the encoded `cairn_storage::StorageError`.
    Rejected(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A retry of a request first applied at `first_index`, whose response
    /// this member no longer has. Nothing was applied.
    Duplicate { first_index: u64 },
    /// A blank or membership entry.
    Empty,
}

openraft::declare_raft_types!(
    /// Cairn's openraft type configuration. Terms and node ids are `u64`;
    /// every other type is openraft's default (advanced leader id, `Vote`,
    /// `Entry`, Tokio runtime).
    pub TypeConfig:
        D = RaftRequest,
        R = RaftResponse,
        NodeId = u64,
        Node = Member,
);

/// A Raft node id (etcd's member id).
pub type NodeId = u64;
/// A log entry as stored and replicated.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// An entry's payload: blank, normal ([`RaftRequest`]) or membership.
pub type EntryPayload = openraft::alias::EntryPayloadOf<TypeConfig>;
/// `(committed leader id, index)`: identifies an entry.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// The persisted vote (term, voted-for, committed flag).
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// What [`crate::RocksLogStore`] reports about its log.
pub type LogState = openraft::storage::LogState<TypeConfig>;
/// Cluster membership (voters, learners, their [`Member`]s).
pub type Membership = openraft::Membership<NodeId, Member>;
/// A membership together with the log id that introduced it.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// The storage completion callback `append` receives.
pub type IoFlushed = openraft::storage::IOFlushed<TypeConfig>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-string encoding must match what serde's default wrote for a
    /// `Vec<u8>`, so logs and snapshots written before it still decode.
    #[test]
    fn byte_string_fields_keep_the_encoding_of_a_plain_vec() {
        #[derive(Serialize)]
        struct PlainRequest {
            id: u64,
            payload: Vec<u8>,
        }
        #[derive(Serialize)]
        enum PlainResponse {
            Written(Vec<u8>),
            Rejected(Vec<u8>),
        }
        let payload: Vec<u8> = (0..=255).chain(0..17).collect();
        let request = RaftRequest { id: 42, payload: payload.clone() };
        let plain = PlainRequest { id: 42, payload: payload.clone() };
        assert_eq!(bincode::serialize(&request).unwrap(), bincode::serialize(&plain).unwrap());
        let decoded: RaftRequest = bincode::deserialize(&bincode::serialize(&plain).unwrap()).unwrap();
        assert_eq!(decoded, request);
        for (ours, plain) in [
            (RaftResponse::Written(payload.clone()), PlainResponse::Written(payload.clone())),
            (RaftResponse::Rejected(payload.clone()), PlainResponse::Rejected(payload.clone())),
        ] {
            assert_eq!(bincode::serialize(&ours).unwrap(), bincode::serialize(&plain).unwrap());
        }
    }
}
