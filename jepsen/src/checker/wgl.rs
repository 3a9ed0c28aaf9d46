//! Linearizability search: Wing & Gong's algorithm with Lowe's memoization
//! ("WGL"), the algorithm of porcupine's `checkSingle` and Knossos' `wgl`.
//!
//! The history becomes one list of entries — each operation's call and its
//! return — sorted by time. The search walks the list from the front:
//!
//! - At a call entry it tries to linearize that operation next: if the model
//!   accepts it in the current state, the call and its return are unlinked
//!   from the list ("lift"), the previous state is pushed on a stack, and the
//!   walk restarts at the front.
//! - At a return entry the operation it belongs to has not been linearized,
//!   yet everything after it in the list was invoked after it returned, so no
//!   later choice can help: the search backtracks — it pops the last
//!   linearized operation, relinks its entries ("unlift") and tries the
//!   entry after its call instead.
//! - The history is linearizable once the list is empty; it is not if the
//!   search must backtrack with an empty stack.
//!
//! Only operations whose call precedes the first return in the list are ever
//! tried, so every linearization respects real-time order. Memoization makes
//! the search affordable: a configuration is the set of linearized operations
//! plus the model state, and it fully determines what the rest of the search
//! can do. Once explored (and, since the search goes on, failed), it is
//! never explored again. Sets are bitsets; the cache stores them in one arena
//! behind a 64-bit key: the XOR of a fixed random word per linearized
//! operation (updated in O(1) per step) and a hash of the state.
//!
//! Operations with an unknown outcome return at +infinity: their return
//! entries sit after every finite one, so they may be linearized anywhere
//! after their call — including after everything else, which is
//! indistinguishable from never taking effect.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use super::{Exhausted, Meter};

/// A sequential specification.
pub trait Model {
    /// An operation together with its observed result (e.g. "read returned 3").
    type Op;
    /// Model states are memoized, so they should be small and cheap to hash.
    type State: Clone + Eq + Hash;

    fn init(&self) -> Self::State;

    /// The state after `op` if `op`, with its observed result, is legal in
    /// `state`; `None` if it is not.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;
}

/// One operation of the history to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call<Op> {
    pub op: Op,
    /// When it was invoked.
    pub call: u64,
    /// When it completed, or `None` for never (+infinity): its outcome is
    /// unknown.
    pub ret: Option<u64>,
}

/// Why a history is not linearizable: the deepest point the search reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure<S> {
    /// The longest linearizable prefix found, as indices into the history,
    /// in linearization order.
    pub prefix: Vec<usize>,
    /// The model state after `prefix`.
    pub state: S,
    /// An operation that had to be linearized next (its return comes before
    /// every remaining call) but cannot be.
    pub blocked: usize,
    /// The other operations that were pending at that point (invoked before
    /// `blocked` returned, not in `prefix`). The search tried each of them
    /// next, and each was illegal or led to a dead end.
    pub candidates: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<S> {
    /// A witness: every operation, as indices into the history, in an order
    /// that respects real time and that the model accepts.
    Linearizable {
        order: Vec<usize>,
    },
    NotLinearizable(Failure<S>),
    /// The budget ran out first.
    Unknown(Exhausted),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WglError {
    #[error("operation {op} returns at {ret}, before its call at {call}")]
    ReturnBeforeCall { op: usize, call: u64, ret: u64 },
    #[error("history of {0} operations is too long for this checker")]
    TooLong(usize),
}

/// How many steps pass between two budget checks; reading the clock every
/// step would dominate cheap steps.
const CHARGE_EVERY: u64 = 1024;
const HEAD: u32 = 0;
const NONE: u32 = u32::MAX;

/// Checks whether `history` is linearizable with respect to `model`.
pub fn check<M: Model>(
    model: &M,
    history: &[Call<M::Op>],
    meter: &mut Meter,
) -> Result<Outcome<M::State>, WglError> {
    let n = history.len();
    // Two entries per operation plus the head and tail sentinels must fit in u32.
    if n >= (u32::MAX as usize - 2) / 2 {
        return Err(WglError::TooLong(n));
    }
    for (op, c) in history.iter().enumerate() {
        if let Some(ret) = c.ret {
            if ret < c.call {
                return Err(WglError::ReturnBeforeCall {
                    op,
                    call: c.call,
                    ret,
                });
            }
        }
    }
    let mut list = EntryList::new(history);
    let zobrist: Vec<u64> = (0..n as u64)
        .map(|i| mix64(i ^ 0x5851_f42d_4c95_7f2d))
        .collect();
    let mut cache: Cache<M::State> = Cache::new(n.div_ceil(64));
    let mut linearized = vec![0u64; n.div_ceil(64)];
    let mut set_hash = 0u64;
    let mut state = model.init();
    // Each stack frame: the call entry linearized and the state before it.
    let mut stack: Vec<(u32, M::State)> = Vec::new();
    let mut best: Option<Failure<M::State>> = None;
    let mut uncharged = 0u64;
    let mut charged_configurations = 0usize;

    let mut entry = list.next[HEAD as usize];
    let outcome = loop {
        if list.next[HEAD as usize] == list.tail {
            break Outcome::Linearizable {
                order: stack
                    .iter()
                    .map(|&(c, _)| list.op[c as usize] as usize)
                    .collect(),
            };
        }
        uncharged += 1;
        if uncharged == CHARGE_EVERY {
            let new_configurations = cache.len() - charged_configurations;
            charged_configurations = cache.len();
            if let Err(exhausted) =
                meter.charge(uncharged, new_configurations as u64, cache.bytes())
            {
                return Ok(Outcome::Unknown(exhausted));
            }
            uncharged = 0;
        }
        let e = entry as usize;
        let op = list.op[e] as usize;
        if list.ret_of_call[e] != NONE {
            let next_state = model.step(&state, &history[op].op);
            let mut lifted = false;
            if let Some(next_state) = next_state {
                set_bit(&mut linearized, op);
                let hash = set_hash ^ zobrist[op];
                if cache.insert(hash ^ hash_state(&next_state), &linearized, &next_state) {
                    set_hash = hash;
                    stack.push((entry, std::mem::replace(&mut state, next_state)));
                    list.lift(entry);
                    entry = list.next[HEAD as usize];
                    lifted = true;
                } else {
                    clear_bit(&mut linearized, op);
                }
            }
            if !lifted {
                entry = list.next[e];
            }
        } else {
            if best.as_ref().is_none_or(|b| stack.len() > b.prefix.len()) {
                best = Some(Failure {
                    prefix: stack
                        .iter()
                        .map(|&(c, _)| list.op[c as usize] as usize)
                        .collect(),
                    state: state.clone(),
                    blocked: op,
                    candidates: list.calls_before(entry, op),
                });
            }
            let Some((call_entry, previous)) = stack.pop() else {
                break Outcome::NotLinearizable(best.expect("recorded just above"));
            };
            let undone = list.op[call_entry as usize] as usize;
            state = previous;
            clear_bit(&mut linearized, undone);
            set_hash ^= zobrist[undone];
            list.unlift(call_entry);
            entry = list.next[call_entry as usize];
        }
    };
    // The final charge only records usage: the search already finished, so
    // its answer stands even if this last batch crossed a limit.
    let _ = meter.charge(uncharged, (cache.len() - charged_configurations) as u64, 0);
    Ok(outcome)
}

/// The entries as a doubly linked list over arrays: entry 0 is the head
/// sentinel, entries 1..=2n the calls and returns in time order, 2n+1 the
/// tail sentinel.
struct EntryList {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// The operation each entry belongs to.
    op: Vec<u32>,
    /// For a call entry, its return entry; `NONE` for returns and sentinels.
    ret_of_call: Vec<u32>,
    tail: u32,
}

impl EntryList {
    fn new<Op>(history: &[Call<Op>]) -> Self {
        // (completion unknown, time, is return, operation): at equal times
        // calls come first, so operations that touch are concurrent — the
        // conservative reading of equal timestamps.
        let mut keys: Vec<(bool, u64, bool, u32)> = Vec::with_capacity(history.len() * 2);
        for (op, c) in history.iter().enumerate() {
            keys.push((false, c.call, false, op as u32));
            keys.push((c.ret.is_none(), c.ret.unwrap_or(0), true, op as u32));
        }
        keys.sort_unstable();
        let len = keys.len() + 2;
        let tail = (len - 1) as u32;
        let mut list = Self {
            next: (1..=len as u32).collect(),
            prev: (0..len as u32).map(|i| i.wrapping_sub(1)).collect(),
            op: vec![NONE; len],
            ret_of_call: vec![NONE; len],
            tail,
        };
        list.next[tail as usize] = NONE;
        let mut call_entry = vec![NONE; history.len()];
        for (i, &(_, _, is_return, op)) in keys.iter().enumerate() {
            let e = i as u32 + 1;
            list.op[e as usize] = op;
            if is_return {
                list.ret_of_call[call_entry[op as usize] as usize] = e;
            } else {
                call_entry[op as usize] = e;
            }
        }
        list
    }

    /// Unlinks a call entry and its return.
    fn lift(&mut self, call: u32) {
        self.unlink(call);
        self.unlink(self.ret_of_call[call as usize]);
    }

    /// Undoes the matching [`EntryList::lift`]; lifts are undone in reverse
    /// order, so each entry's own links still point at its old neighbours.
    fn unlift(&mut self, call: u32) {
        self.relink(self.ret_of_call[call as usize]);
        self.relink(call);
    }

    fn unlink(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        self.next[p as usize] = n;
        self.prev[n as usize] = p;
    }

    fn relink(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        self.next[p as usize] = e;
        self.prev[n as usize] = e;
    }

    /// Operations whose calls are in the list before `stop`, except `skip`.
    fn calls_before(&self, stop: u32, skip: usize) -> Vec<usize> {
        let mut ops = Vec::new();
        let mut e = self.next[HEAD as usize];
        while e != stop {
            let op = self.op[e as usize] as usize;
            if self.ret_of_call[e as usize] != NONE && op != skip {
                ops.push(op);
            }
            e = self.next[e as usize];
        }
        ops
    }
}

fn set_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn clear_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] &= !(1 << (i % 64));
}

/// The set of explored configurations. Bitsets live back to back in one
/// arena and states in a parallel vector, so an entry costs its bits plus a
/// state plus a few words, and a lookup that hits allocates nothing.
struct Cache<S> {
    words: usize,
    /// Key → most recent entry with that key; older ones via `chain`.
    heads: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    chain: Vec<u32>,
    bits: Vec<u64>,
    states: Vec<S>,
}

impl<S: Eq + Clone> Cache<S> {
    fn new(words: usize) -> Self {
        Self {
            words,
            heads: HashMap::default(),
            chain: Vec::new(),
            bits: Vec::new(),
            states: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.states.len()
    }

    /// Approximate heap use, for the memory budget.
    fn bytes(&self) -> usize {
        self.bits.capacity() * 8
            + self.states.capacity() * std::mem::size_of::<S>()
            + self.chain.capacity() * 4
            // hashbrown: key, value and one control byte per bucket.
            + self.heads.capacity() * (8 + 4 + 1)
    }

    /// Adds the configuration; false if it was already there.
    fn insert(&mut self, key: u64, bits: &[u64], state: &S) -> bool {
        let index = self.states.len() as u32;
        match self.heads.entry(key) {
            Entry::Occupied(mut head) => {
                let mut i = *head.get();
                while i != NONE {
                    let at = i as usize * self.words;
                    if self.states[i as usize] == *state && self.bits[at..at + self.words] == *bits
                    {
                        return false;
                    }
                    i = self.chain[i as usize];
                }
                self.chain.push(*head.get());
                head.insert(index);
            }
            Entry::Vacant(slot) => {
                self.chain.push(NONE);
                slot.insert(index);
            }
        }
        self.bits.extend_from_slice(bits);
        self.states.push(state.clone());
        true
    }
}

/// Cache keys are already well-mixed hashes, so hashing them again is waste.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix64(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A fast non-cryptographic hasher for model states (FxHash's multiply and
/// rotate), finished with [`mix64`] so that XOR-combining with the set hash
/// keeps all 64 bits useful.
#[derive(Default)]
struct StateHasher(u64);

impl Hasher for StateHasher {
    fn finish(&self) -> u64 {
        mix64(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

fn hash_state<S: Hash>(state: &S) -> u64 {
    let mut hasher = StateHasher::default();
    state.hash(&mut hasher);
    hasher.finish()
}

/// SplitMix64's finalizer: a bijective mix of all 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Budget;

    /// A counter whose ops are "add 1 and observe the result": small enough
    /// to enumerate by hand, and order-sensitive.
    struct Counter;

    impl Model for Counter {
        type Op = u32;
        type State = u32;

        fn init(&self) -> u32 {
            0
        }

        fn step(&self, state: &u32, observed: &u32) -> Option<u32> {
            (state + 1 == *observed).then_some(state + 1)
        }
    }

    fn call(op: u32, call: u64, ret: Option<u64>) -> Call<u32> {
        Call { op, call, ret }
    }

    fn run(history: &[Call<u32>]) -> Outcome<u32> {
        check(&Counter, history, &mut Meter::start(Budget::default())).unwrap()
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(run(&[]), Outcome::Linearizable { order: vec![] });
    }

    #[test]
    fn concurrent_operations_are_reordered() {
        // The op that observed 1 was invoked last, but all three overlap.
        let history = [
            call(3, 0, Some(10)),
            call(2, 1, Some(11)),
            call(1, 2, Some(12)),
        ];
        assert_eq!(
            run(&history),
            Outcome::Linearizable {
                order: vec![2, 1, 0]
            }
        );
    }

    #[test]
    fn real_time_order_is_respected() {
        // "observed 2" returned before "observed 1" was invoked.
        let history = [call(2, 0, Some(5)), call(1, 6, Some(9))];
        assert_eq!(
            run(&history),
            Outcome::NotLinearizable(Failure {
                prefix: vec![],
                state: 0,
                blocked: 0,
                candidates: vec![],
            })
        );
    }

    #[test]
    fn unknown_outcome_may_take_effect_late() {
        // "observed 3" never returned: it may take effect after "observed 2"
        // and before "observed 4", which was invoked earlier.
        let history = [
            call(1, 0, Some(5)),
            call(2, 6, Some(9)),
            call(4, 10, Some(20)),
            call(3, 12, None),
        ];
        assert_eq!(
            run(&history),
            Outcome::Linearizable {
                order: vec![0, 1, 3, 2]
            }
        );
    }

    #[test]
    fn failure_reports_the_deepest_prefix() {
        // 1 and 2 linearize; then "observed 4" must be next, but the counter
        // is at 2 and the only pending op (observed 9) does not fit either.
        let history = [
            call(1, 0, Some(5)),
            call(2, 6, Some(9)),
            call(4, 10, Some(20)),
            call(9, 12, None),
        ];
        assert_eq!(
            run(&history),
            Outcome::NotLinearizable(Failure {
                prefix: vec![0, 1],
                state: 2,
                blocked: 2,
                candidates: vec![3],
            })
        );
    }

    #[test]
    fn return_before_call_is_an_error() {
        let err = check(
            &Counter,
            &[call(1, 5, Some(4))],
            &mut Meter::start(Budget::default()),
        );
        assert_eq!(
            err,
            Err(WglError::ReturnBeforeCall {
                op: 0,
                call: 5,
                ret: 4
            })
        );
    }

    /// Ops set one bit each and always succeed, except `Observe(mask)`,
    /// which is legal only in that exact state: enough branching to make
    /// the search explore every subset before it can give up.
    struct Bits;

    #[derive(Debug, Clone, Copy)]
    enum BitsOp {
        Set(u32),
        Observe(u64),
    }

    impl Model for Bits {
        type Op = BitsOp;
        type State = u64;

        fn init(&self) -> u64 {
            0
        }

        fn step(&self, state: &u64, op: &BitsOp) -> Option<u64> {
            match *op {
                BitsOp::Set(bit) => Some(state | 1 << bit),
                BitsOp::Observe(mask) => (*state == mask).then_some(*state),
            }
        }
    }

    #[test]
    fn budgets_yield_unknown() {
        // 14 concurrent sets and a concurrent observation of a bit nobody
        // sets: not linearizable, but only after trying all 2^14 subsets.
        let mut history: Vec<_> = (0..14)
            .map(|bit| Call {
                op: BitsOp::Set(bit),
                call: 0,
                ret: Some(100),
            })
            .collect();
        history.push(Call {
            op: BitsOp::Observe(1 << 20),
            call: 0,
            ret: Some(100),
        });

        let steps = Budget {
            max_steps: Some(CHARGE_EVERY),
            ..Budget::default()
        };
        let mut meter = Meter::start(steps);
        assert_eq!(
            check(&Bits, &history, &mut meter).unwrap(),
            Outcome::Unknown(Exhausted::Steps(CHARGE_EVERY))
        );

        let memory = Budget {
            max_memory_bytes: Some(4096),
            ..Budget::default()
        };
        let mut meter = Meter::start(memory);
        assert_eq!(
            check(&Bits, &history, &mut meter).unwrap(),
            Outcome::Unknown(Exhausted::Memory(4096))
        );

        let timeout = Budget {
            timeout: Some(std::time::Duration::ZERO),
            ..Budget::default()
        };
        let mut meter = Meter::start(timeout);
        assert_eq!(
            check(&Bits, &history, &mut meter).unwrap(),
            Outcome::Unknown(Exhausted::Timeout(std::time::Duration::ZERO))
        );

        // With the default budget the same history is decided, after more
        // steps than the small budget allowed.
        let mut meter = Meter::start(Budget::default());
        assert!(matches!(
            check(&Bits, &history, &mut meter).unwrap(),
            Outcome::NotLinearizable(_)
        ));
        assert!(meter.steps() > 1 << 14, "{} steps", meter.steps());
        assert!(
            meter.configurations() >= (1 << 14) - 1,
            "{} configurations",
            meter.configurations()
        );
    }

    #[test]
    fn cache_distinguishes_colliding_keys() {
        let mut cache: Cache<u32> = Cache::new(1);
        assert!(cache.insert(7, &[1], &1));
        assert!(cache.insert(7, &[2], &1));
        assert!(cache.insert(7, &[1], &2));
        assert!(!cache.insert(7, &[2], &1));
        assert!(!cache.insert(7, &[1], &1));
        assert_eq!(cache.len(), 3);
    }
}
