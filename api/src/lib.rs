//! etcd v3 wire protocol for Cairn.
//!
//! Cairn must be a drop-in replacement for etcd 3.6 as far as clients such as
//! `etcdctl`, the Go `clientv3` library and Kubernetes can tell, so this crate
//! holds our own copy of etcd's `.proto` definitions (under `proto/`) and the
//! Rust code prost/tonic generate from them. The proto package, message, field,
//! enum, service and RPC names and every field number match etcd exactly; they
//! are the wire format, so they must never change (add fields only with new,
//! unused numbers, mirroring upstream etcd).
//!
//! The five modules mirror etcd's proto packages and must stay siblings at the
//! crate root because generated code refers across them as `super::mvccpb::…`.
//! With the default `grpc` feature each service also gets tonic stubs, e.g.
//! `etcdserverpb::kv_server::KvServer` and `etcdserverpb::kv_client::KvClient`;
//! without it only the prost messages are built (no tonic dependency).

/// `mvccpb`: `KeyValue` and watch `Event`.
#[allow(clippy::all, clippy::pedantic, rustdoc::all)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

/// `authpb`: users, roles and permissions as stored by the auth store.
#[allow(clippy::all, clippy::pedantic, rustdoc::all)]
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}

/// `etcdserverpb`: the KV, Watch, Lease, Cluster, Maintenance and Auth services.
#[allow(clippy::all, clippy::pedantic, rustdoc::all)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

/// `v3lockpb`: the Lock service.
#[allow(clippy::all, clippy::pedantic, rustdoc::all)]
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
}

/// `v3electionpb`: the Election service.
#[allow(clippy::all, clippy::pedantic, rustdoc::all)]
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
}

/// Serialized `FileDescriptorSet` of all five proto files (e.g. for gRPC reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cairn_api_descriptor.bin"));
