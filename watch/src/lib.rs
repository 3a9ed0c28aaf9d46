//! Cairn's watcher hub: etcd 3.5's `watchableStore` (plus the per-stream
//! bookkeeping of its v3rpc `watchStream`) on one member.
//!
//! # Where it sits
//!
//! The Raft state machine applies an entry to [`cairn_storage::Store`], and
//! once the store has published the new revision it calls
//! [`WatchHub::notify`] with that revision's events. The gRPC Watch service
//! opens one [`StreamHandle`]/[`StreamReceiver`] pair per client stream,
//! creates and cancels watchers on the handle, and turns each [`Delivery`]
//! it receives into a `WatchResponse` (filling `prev_kv`, the header, and
//! fragmenting). This crate never speaks gRPC or Raft.
//!
//! # How events reach a watcher
//!
//! Every watcher has `next_rev`, the next revision it must see. It is either
//! - **synced**: it has seen everything up to the hub's revision, and
//!   [`WatchHub::notify`] hands it the events of each new revision directly
//!   (single-key watchers are found by hash lookup, range watchers by a scan);
//!   or
//! - **unsynced**: it is behind (a historical `start_revision`, a stream that
//!   had no room, a snapshot restore). A background task reads the missing
//!   revisions from the store with [`cairn_storage::Store::history`], in
//!   bounded batches, one read per group of watchers at the same `next_rev`,
//!   on the blocking pool and never under the hub lock. A watcher becomes
//!   synced again only under the hub lock, and only when its `next_rev` is
//!   exactly the hub revision + 1: events the task read and events `notify`
//!   delivers then neither overlap nor leave a gap.
//!
//! All events of one revision for one watcher travel in one
//! [`Delivery::Events`], and a watcher's deliveries are in revision order
//! without duplicates or gaps. If the store has compacted past a lagging
//! watcher's `next_rev`, the watcher is canceled with the compaction
//! revision, as etcd does.
//!
//! # Memory bound
//!
//! Nothing is buffered per watcher: a watcher that cannot be served from
//! memory falls back to reading the store. What is buffered is bounded per
//! stream: a stream's queue accepts a message only if its queued bytes
//! (encoded events plus 32 bytes per message) stay within
//! [`HubConfig::stream_buffer_bytes`], or if the queue is empty. So a
//! stream holds at most `max(stream_buffer_bytes, M) + 32` bytes, where `M`
//! is the largest single message: the events of one revision (from
//! `notify`), or one catch-up batch (about `max_batch_bytes` plus one
//! revision, since [`cairn_storage::Store::history`] never splits a
//! revision). When a message does not fit, `notify` never waits: the
//! watchers concerned are moved aside (unsynced at that revision) and
//! caught up from the store once the client reads again. The sync task
//! holds one history batch at a time. Per watcher, the hub keeps its key
//! range and a few integers.

mod hub;
mod queue;

use std::time::Duration;

use cairn_api::mvccpb::Event;

pub use hub::{StreamHandle, StreamReceiver, WatchHub};

/// Tuning of a [`WatchHub`]. Zero values are raised to the smallest usable
/// one (1 byte, 1 watcher, 1 revision, 1 ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// Byte budget of each stream's queue (see the crate docs' memory bound).
    pub stream_buffer_bytes: usize,
    /// How often the sync task looks at unsynced watchers even when nothing
    /// woke it (it is also woken whenever a watcher becomes unsynced and
    /// whenever a full stream has drained to half its budget).
    pub sync_interval: Duration,
    /// Unsynced watchers served per sync round, so one round's work (and the
    /// hub lock hold times within it) stay bounded.
    pub max_watchers_per_sync: usize,
    /// Revisions per history read.
    pub max_revisions_per_batch: usize,
    /// Record bytes per history read (a revision is never split, so a read
    /// can exceed this by one revision).
    pub max_batch_bytes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            stream_buffer_bytes: 4 << 20,
            sync_interval: Duration::from_millis(100),
            max_watchers_per_sync: 512,
            max_revisions_per_batch: 1000,
            max_batch_bytes: 1 << 20,
        }
    }
}

impl HubConfig {
    fn sanitized(mut self) -> Self {
        self.stream_buffer_bytes = self.stream_buffer_bytes.max(1);
        self.sync_interval = self.sync_interval.max(Duration::from_millis(1));
        self.max_watchers_per_sync = self.max_watchers_per_sync.max(1);
        self.max_revisions_per_batch = self.max_revisions_per_batch.max(1);
        self.max_batch_bytes = self.max_batch_bytes.max(1);
        self
    }
}

/// A watch create request, as etcd's `WatchCreateRequest` after v3rpc's
/// checks (the server maps filters and fields one to one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateWatch {
    /// 0 = the hub picks an id: as in etcd, a per-stream counter starting at
    /// 0 that skips ids in use.
    pub watch_id: i64,
    /// An empty key means `"\0"`, the smallest key (as etcd's v3rpc does).
    pub key: Vec<u8>,
    /// Empty: only `key`; `"\0"`: every key `>= key`; else `[key, range_end)`.
    pub range_end: Vec<u8>,
    /// 0 = from the hub revision + 1 (only future changes). Negative values
    /// are treated as 1 (the oldest revision the store may still have);
    /// etcd's clients never send them.
    pub start_revision: i64,
    pub no_put: bool,
    pub no_delete: bool,
    /// Passed through in [`Delivery::Events`]; the server fills `prev_kv`.
    pub prev_kv: bool,
    /// Passed through in [`Delivery::Events`]; the server fragments.
    pub fragment: bool,
    /// The watcher takes part in [`StreamHandle::progress_notify_tick`].
    pub progress_notify: bool,
}

/// Why a watcher could not be created. The messages are etcd's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatchError {
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    /// The stream's receiver was dropped, or the hub was shut down.
    #[error("watch stream closed")]
    Closed,
}

/// One message for a stream's client; the server turns each into one
/// `WatchResponse` (or several fragments of one).
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    /// Always the first message about a watcher. `revision` is the hub
    /// revision when it was registered (the response header revision).
    Created { watch_id: i64, revision: i64 },
    /// Events of one or more whole revisions, in order. `revision` is the
    /// header revision, etcd's rule: the revision the watcher is synced to
    /// (the events' revision when delivered live, the hub revision the
    /// history read went up to when catching up).
    Events { watch_id: i64, revision: i64, events: Vec<Event>, prev_kv: bool, fragment: bool },
    /// Nothing more below or at `revision` is coming for `watch_id` (-1: for
    /// every watcher of the stream).
    Progress { watch_id: i64, revision: i64 },
    /// The watcher is gone. `compact_revision` is non-zero when it was
    /// canceled because the store compacted past it.
    Canceled { watch_id: i64, compact_revision: i64, reason: String },
}
