//! The per-stream delivery queue: a FIFO bounded in bytes, not in messages.
//!
//! A message count would not bound memory (one revision can carry thousands
//! of events), so every queued [`Delivery`] is charged its encoded event
//! bytes plus [`MESSAGE_OVERHEAD`]. The hub's hot path (`notify`, the sync
//! task) only ever *tries* to push: it runs under the hub lock and must never
//! wait for a slow client. Control messages (`Created`, `Canceled` from a
//! client request) instead *reserve* room asynchronously, which only
//! backpressures the stream that asked.
//!
//! Lock order: the hub lock may be held while taking a queue's lock, never
//! the other way round (the queue knows nothing of the hub).

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use prost::Message;
use tokio::sync::Notify;

use crate::Delivery;

/// Bytes charged per message on top of its events, so that a flood of
/// event-less messages (`Created`, `Progress`, ...) is bounded too.
pub(crate) const MESSAGE_OVERHEAD: usize = 32;

/// What a delivery costs against its stream's budget.
pub(crate) fn delivery_size(d: &Delivery) -> usize {
    MESSAGE_OVERHEAD
        + match d {
            Delivery::Events { events, .. } => events.iter().map(Message::encoded_len).sum(),
            Delivery::Canceled { reason, .. } => reason.len(),
            Delivery::Created { .. } | Delivery::Progress { .. } => 0,
        }
}

/// Outcome of a non-blocking push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TrySend {
    Sent,
    /// No room: the caller keeps the data elsewhere (in storage) and retries.
    Full,
    /// Nobody will read it (receiver dropped or stream closed): the message
    /// was discarded, which callers treat as delivered.
    Gone,
}

/// The queue's state is closed: no more reservations.
#[derive(Debug)]
pub(crate) struct Closed;

struct State {
    items: VecDeque<(Delivery, usize)>,
    /// Bytes of queued items plus outstanding reservations.
    used: usize,
    /// Reservations waiting for room. While any waits, `try_send` refuses,
    /// so a busy hub cannot starve a client's own `create`/`cancel`.
    waiting: usize,
    receiver_gone: bool,
    /// The sending side is finished (stream handle dropped, hub shut down):
    /// the receiver drains what is queued and then sees the end.
    closed: bool,
    /// A `try_send` failed since the queue last drained to half its budget:
    /// the sync task skips this stream and is woken when there is room again.
    starved: bool,
}

impl State {
    /// A message fits if it stays within the budget, or if the queue is
    /// empty (so one message larger than the whole budget still gets through).
    fn fits(&self, budget: usize, size: usize) -> bool {
        self.used == 0 || self.used.saturating_add(size) <= budget
    }
}

pub(crate) struct Queue {
    budget: usize,
    state: Mutex<State>,
    /// The receiver waits here (single receiver: `notify_one`'s stored permit
    /// means no wake-up is ever lost).
    readable: Notify,
    /// Reservations wait here (`notify_waiters` after every release).
    writable: Notify,
    /// The hub's sync task, woken when a starved queue has room again.
    sync_wake: Arc<Notify>,
}

impl Queue {
    pub(crate) fn new(budget: usize, sync_wake: Arc<Notify>) -> Self {
        Self {
            budget: budget.max(1),
            state: Mutex::new(State {
                items: VecDeque::new(),
                used: 0,
                waiting: 0,
                receiver_gone: false,
                closed: false,
                starved: false,
            }),
            readable: Notify::new(),
            writable: Notify::new(),
            sync_wake,
        }
    }

    /// Pushes `d` if it fits right now; never waits.
    pub(crate) fn try_send(&self, d: Delivery) -> TrySend {
        let size = delivery_size(&d);
        let mut st = self.state.lock();
        if st.receiver_gone || st.closed {
            return TrySend::Gone;
        }
        if st.waiting > 0 || !st.fits(self.budget, size) {
            st.starved = true;
            return TrySend::Full;
        }
        st.used += size;
        st.items.push_back((d, size));
        drop(st);
        self.readable.notify_one();
        TrySend::Sent
    }

    /// Whether the sync task should bother reading history for this stream.
    pub(crate) fn accepting(&self) -> bool {
        let st = self.state.lock();
        !st.starved || st.receiver_gone || st.closed
    }

    /// Waits until `size` bytes fit, and holds them for a later
    /// [`Reservation::send`]. Cancel-safe: dropping the future while it
    /// waits leaves no trace.
    pub(crate) async fn reserve(self: &Arc<Self>, size: usize) -> Result<Reservation, Closed> {
        /// Counts this call in `waiting` while it waits, also if the future
        /// is dropped mid-wait.
        struct Waiting<'a> {
            queue: &'a Queue,
            counted: bool,
        }
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                if self.counted {
                    let mut st = self.queue.state.lock();
                    st.waiting -= 1;
                    self.queue.relieve(st);
                }
            }
        }
        let mut waiting = Waiting { queue: self, counted: false };
        loop {
            let mut notified = pin!(self.writable.notified());
            // Registered before the check, so a release between the check
            // and the await still wakes us.
            notified.as_mut().enable();
            {
                let mut st = self.state.lock();
                if st.receiver_gone || st.closed {
                    return Err(Closed);
                }
                if st.fits(self.budget, size) {
                    st.used += size;
                    if waiting.counted {
                        st.waiting -= 1;
                        waiting.counted = false;
                    }
                    return Ok(Reservation { queue: self.clone(), size, spent: false });
                }
                if !waiting.counted {
                    st.waiting += 1;
                    waiting.counted = true;
                }
            }
            notified.await;
        }
    }

    /// After bytes were freed or a waiting reservation left: wakes the
    /// reservations, and the sync task if a push failed earlier and there is
    /// room again (hysteresis: only once half the budget is free, not for
    /// every message received).
    fn relieve(&self, mut st: MutexGuard<'_, State>) {
        let wake_sync = st.starved && st.waiting == 0 && st.used <= self.budget / 2;
        if wake_sync {
            st.starved = false;
        }
        drop(st);
        self.writable.notify_waiters();
        if wake_sync {
            self.sync_wake.notify_one();
        }
    }

    /// The next delivery, or `None` once the queue is closed and drained.
    pub(crate) async fn recv(&self) -> Option<Delivery> {
        loop {
            {
                let mut st = self.state.lock();
                if let Some((d, size)) = st.items.pop_front() {
                    st.used -= size;
                    self.relieve(st);
                    return Some(d);
                }
                if st.closed {
                    return None;
                }
            }
            self.readable.notified().await;
        }
    }

    /// The sending side is done (stream handle dropped or hub shut down).
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.readable.notify_one();
        self.writable.notify_waiters();
    }

    /// The receiver was dropped: free what is queued, and make every later
    /// push a no-op.
    fn receiver_dropped(&self) {
        let mut st = self.state.lock();
        st.receiver_gone = true;
        let queued: usize = st.items.iter().map(|(_, size)| size).sum();
        st.used -= queued;
        st.items = VecDeque::new();
        self.relieve(st);
    }

    #[cfg(test)]
    fn used(&self) -> usize {
        self.state.lock().used
    }
}

/// Room held in a [`Queue`]; released if dropped unsent.
pub(crate) struct Reservation {
    queue: Arc<Queue>,
    size: usize,
    spent: bool,
}

impl Reservation {
    /// Enqueues `d` in the reserved room (charging its real size, which the
    /// callers make equal to the reserved one). A no-op if the receiver went
    /// away meanwhile.
    pub(crate) fn send(mut self, d: Delivery) {
        self.spent = true;
        let actual = delivery_size(&d);
        let mut st = self.queue.state.lock();
        st.used -= self.size;
        if st.receiver_gone || st.closed {
            self.queue.relieve(st);
            return;
        }
        st.used += actual;
        st.items.push_back((d, actual));
        drop(st);
        self.queue.readable.notify_one();
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.spent {
            let mut st = self.queue.state.lock();
            st.used -= self.size;
            self.queue.relieve(st);
        }
    }
}

/// The receiving end of a queue; dropping it discards what is queued.
pub(crate) struct Receiver(pub(crate) Arc<Queue>);

impl Drop for Receiver {
    fn drop(&mut self) {
        self.0.receiver_dropped();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use cairn_api::mvccpb::{Event, KeyValue};

    fn events(n: usize, value_len: usize) -> Delivery {
        let ev = Event {
            r#type: 0,
            kv: Some(KeyValue { key: b"k".to_vec(), value: vec![7; value_len], ..Default::default() }),
            prev_kv: None,
        };
        Delivery::Events { watch_id: 1, revision: 2, events: vec![ev; n], prev_kv: false, fragment: false }
    }

    fn queue(budget: usize) -> Arc<Queue> {
        Arc::new(Queue::new(budget, Arc::new(Notify::new())))
    }

    #[tokio::test]
    async fn oversized_message_only_into_an_empty_queue() {
        let q = queue(100);
        let big = events(10, 50);
        assert!(delivery_size(&big) > 100);
        assert_eq!(q.try_send(big.clone()), TrySend::Sent);
        assert_eq!(q.try_send(Delivery::Progress { watch_id: 1, revision: 1 }), TrySend::Full);
        assert!(!q.accepting());
        assert_eq!(q.recv().await, Some(big));
        assert_eq!(q.used(), 0);
        assert!(q.accepting(), "drained: no longer starved");
        assert_eq!(q.try_send(Delivery::Progress { watch_id: 1, revision: 1 }), TrySend::Sent);
    }

    #[tokio::test]
    async fn reservation_waits_for_room_and_blocks_try_send_meanwhile() {
        let q = queue(2 * MESSAGE_OVERHEAD);
        assert_eq!(q.try_send(Delivery::Progress { watch_id: 1, revision: 1 }), TrySend::Sent);
        assert_eq!(q.try_send(Delivery::Progress { watch_id: 1, revision: 2 }), TrySend::Sent);
        let q2 = q.clone();
        let waiter = tokio::spawn(async move {
            let r = q2.reserve(MESSAGE_OVERHEAD).await.unwrap();
            r.send(Delivery::Created { watch_id: 9, revision: 3 });
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        q.recv().await.unwrap();
        // The freed room goes to the waiting reservation, not to try_send.
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert_eq!(q.recv().await, Some(Delivery::Progress { watch_id: 1, revision: 2 }));
        assert_eq!(q.recv().await, Some(Delivery::Created { watch_id: 9, revision: 3 }));
        assert_eq!(q.used(), 0);
    }

    #[tokio::test]
    async fn cancelled_reservation_leaves_no_trace() {
        let q = queue(MESSAGE_OVERHEAD);
        assert_eq!(q.try_send(Delivery::Progress { watch_id: 1, revision: 1 }), TrySend::Sent);
        let r = tokio::time::timeout(Duration::from_millis(20), q.reserve(MESSAGE_OVERHEAD)).await;
        assert!(r.is_err(), "no room yet");
        q.recv().await.unwrap();
        assert_eq!(q.try_send(Delivery::Progress { watch_id: 1, revision: 2 }), TrySend::Sent);
        let unsent = {
            q.recv().await.unwrap();
            q.reserve(MESSAGE_OVERHEAD).await.unwrap()
        };
        assert_eq!(q.used(), MESSAGE_OVERHEAD);
        drop(unsent);
        assert_eq!(q.used(), 0);
    }

    #[tokio::test]
    async fn receiver_drop_discards_and_closes() {
        let q = queue(1000);
        let rx = Receiver(q.clone());
        assert_eq!(q.try_send(events(3, 10)), TrySend::Sent);
        drop(rx);
        assert_eq!(q.used(), 0);
        assert_eq!(q.try_send(events(3, 10)), TrySend::Gone);
        assert!(q.reserve(10).await.is_err());
    }

    #[tokio::test]
    async fn close_drains_then_ends() {
        let q = queue(1000);
        assert_eq!(q.try_send(Delivery::Progress { watch_id: -1, revision: 4 }), TrySend::Sent);
        q.close();
        assert_eq!(q.recv().await, Some(Delivery::Progress { watch_id: -1, revision: 4 }));
        assert_eq!(q.recv().await, None);
    }
}
