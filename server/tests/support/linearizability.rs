//! A linearizability checker for Pontoon key-value histories.
//!
//! A test records every client operation it issues (what it asked for, what it was told, and
//! when it started and finished, as timestamps from one shared clock) and asks [`check`]
//! whether some sequential order of those operations both respects real time and is legal for
//! a simple key-value store. If none exists the store is not linearizable.
//!
//! # Model
//!
//! Every key is an independent register holding `Option<Vec<u8>>` (`None` = absent), starting
//! absent. `Get` must observe the current value, `Put` replaces it, `Delete` makes it absent and
//! `Append(x)` replaces it with the old value (or nothing, if absent) followed by `x`. Because
//! operations on different keys never interact, the history is partitioned by key and each key
//! is checked on its own (P-compositionality); the whole history is linearizable exactly when
//! every key's sub-history is.
//!
//! # Real time
//!
//! Operation `a` must precede `b` in the linearization only when `a.ret < b.call` *strictly*.
//! Two operations whose intervals merely touch (`a.ret == b.call`) count as concurrent. With
//! coarse clocks two distinct instants can read the same value, so this is the conservative
//! choice: it may hide a violation that needed a nanosecond to show, but it never reports one
//! that did not happen. Internally the call and return events are sorted by time with calls
//! ahead of returns at equal times, which is what makes touching intervals overlap.
//!
//! # Unknown outcomes
//!
//! An operation answered [`Output::Unknown`] (a timeout, a dropped connection) may or may not
//! have taken effect, at any moment after its call. Its return time is taken as +infinity and
//! its output is not checked. A `Get` with an unknown outcome constrains nothing and is dropped.
//! A write with an unknown outcome that is not needed can always be placed at the very end,
//! where it harms nobody, so the search stops as soon as every operation with a known outcome
//! has been placed.
//!
//! # Algorithm
//!
//! This is the Wing & Gong search with Lowe's memoization, as used by Porcupine:
//!
//! 1. Turn every operation into a call entry and a return entry, sort them by time and thread
//!    them on a doubly linked list with a head and a tail sentinel.
//! 2. Walk the list from the head. At a call entry, try to linearize that operation now: apply
//!    it to the model state. If the model accepts it and the configuration (set of linearized
//!    operations, new state) has not been seen before, remember it, push (operation, old
//!    state) on a stack, *lift* the call and its return entry out of the list and restart from
//!    the head. Otherwise move on to the next entry.
//! 3. Reaching a return entry means that operation had to take effect by now and no choice
//!    made it possible: pop the last choice, *unlift* its entries back into place (the dancing
//!    links trick: lifts and unlifts happen in stack order, so a couple of pointer writes
//!    restore each entry), restore the state and continue just after the popped call. An empty
//!    stack at that point means no linearization exists.
//! 4. The list running out of known operations means a linearization was found.
//!
//! The search is iterative (an explicit stack, no recursion). The memo holds each visited
//! configuration. Values are interned so a state is a small integer; the set is a bitset with
//! an incrementally updated Zobrist hash, stored in a compact form (number of leading all-ones
//! words, then the non-zero words after them), which keeps mostly sequential histories of tens
//! of thousands of operations cheap: a linearized set there is a dense prefix plus a short
//! frontier. Memo entries live in a few flat arenas.
//!
//! On top of that, a few reductions keep concurrency and unknown outcomes from multiplying the
//! search. Each preserves the answer, and all are exercised against a brute-force checker in
//! the tests:
//!
//! - **Reads first.** If a pending read can be linearized right now (it sees the current
//!   value), it is linearized, and if that leads nowhere the configuration is given up without
//!   trying anything else: in any linearization from here the read could be moved to the
//!   front, since everything that had to precede it already has and it changes nothing.
//! - **Unobservable values.** All values no read of the key can ever see (none returns them,
//!   or, with appends on the key, none starts with them) are one state: they behave alike.
//! - **Unknown outcomes last.** Writes with an unknown outcome sit on a list of their own, in
//!   call order, and are only tried once the known candidates are exhausted. The memo then also
//!   skips a configuration when one with the same known operations and state but a subset of
//!   its unknown ones was visited: the extra unknown writes could always go last instead. Of
//!   several pending unknown writes with the same effect only the earliest called is tried, and
//!   an unknown put or delete is not tried right after another unknown write (placing it
//!   instead of that one reaches a configuration that dominates).
//! - **Unknown outcomes resolved up front.** An unknown write no read could have observed is
//!   dropped (it may as well not have happened). An unknown put whose value is read, on a key
//!   without appends where no other put writes that value, must precede that read, so it gets
//!   the read's return time and becomes an ordinary operation.
//!
//! The search is still exponential in the worst case: many mutually concurrent writes on one
//! key whose order the reads do not pin down (in the tests' simulations 16 clients hammering a
//! single key check in about a second, 32 do not finish). [`check`] takes a time budget and
//! answers [`CheckResult::Timeout`] when it runs out, or when the memo would pass about 1 GiB.
//!
//! # Diagnostics
//!
//! When a key is not linearizable the report gives the longest linearizable prefix the search
//! found (most known operations placed), the value after it, the last operations of that
//! prefix, the operation that could not be placed (it returned, yet nothing legal could be
//! placed before that return) and the other operations that were candidates at that point.
//! Operations are named `ops[i]`, their index in the slice given to [`check`] (push order for
//! [`History`]).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

/// What a client asked the store to do to a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Read the value.
    Get,
    /// Replace the value.
    Put(Vec<u8>),
    /// Remove the key.
    Delete,
    /// Replace the value with the old value (empty if absent) followed by the argument.
    Append(Vec<u8>),
}

/// What the store answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// The answer to a `Get`: the value, `None` if the key was absent.
    Value(Option<Vec<u8>>),
    /// A `Put`, `Delete` or `Append` that returned normally.
    Ok,
    /// The outcome is unknown (timed out, connection lost, ...): it may or may not have
    /// taken effect.
    Unknown,
}

/// One client operation with its real-time interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Which client issued it (used in reports only).
    pub client: u64,
    /// The key it touched.
    pub key: Vec<u8>,
    /// The request.
    pub input: Input,
    /// The answer.
    pub output: Output,
    /// When the request was issued (monotonic, e.g. nanoseconds since a shared `Instant`).
    pub call: u64,
    /// When the answer arrived, on the same clock. Ignored for [`Output::Unknown`].
    pub ret: u64,
}

/// The verdict of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key's history is linearizable.
    Ok,
    /// `key`'s history is not linearizable; `detail` explains where the search got stuck.
    Illegal {
        /// The offending key.
        key: Vec<u8>,
        /// A human-readable account for debugging.
        detail: String,
    },
    /// The time budget (or the memo's memory budget, about 1 GiB) ran out while checking
    /// `key`, and no key was found illegal.
    Timeout {
        /// The first key whose check ran out of time.
        key: Vec<u8>,
        /// How far the search got.
        detail: String,
    },
}

impl CheckResult {
    /// Whether the history was found linearizable.
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok)
    }

    /// Whether the history was found not linearizable.
    pub fn is_illegal(&self) -> bool {
        matches!(self, CheckResult::Illegal { .. })
    }

    /// Whether the check ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, CheckResult::Timeout { .. })
    }

    /// The key an `Illegal` or `Timeout` verdict is about.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            CheckResult::Ok => None,
            CheckResult::Illegal { key, .. } | CheckResult::Timeout { key, .. } => Some(key),
        }
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Ok => write!(f, "linearizable"),
            CheckResult::Illegal { key, detail } => {
                write!(f, "key {}: not linearizable\n{detail}", show_bytes(key))
            }
            CheckResult::Timeout { key, detail } => {
                write!(
                    f,
                    "key {}: linearizability check timed out\n{detail}",
                    show_bytes(key)
                )
            }
        }
    }
}

/// Collects operations for [`check`], with a shared clock for their timestamps.
#[derive(Clone, Debug)]
pub struct History {
    epoch: Instant,
    ops: Vec<Operation>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        Self::with_epoch(Instant::now())
    }

    /// An empty history whose clock counts from `epoch`.
    pub fn with_epoch(epoch: Instant) -> Self {
        History {
            epoch,
            ops: Vec::new(),
        }
    }

    /// The instant timestamps count from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Nanoseconds since [`History::epoch`], suitable for `call` and `ret`.
    pub fn now(&self) -> u64 {
        nanos_since(self.epoch)
    }

    /// Records one operation.
    pub fn push(&mut self, op: Operation) {
        self.ops.push(op);
    }

    /// The number of recorded operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The recorded operations, in push order.
    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    /// The recorded operations, in push order.
    pub fn into_ops(self) -> Vec<Operation> {
        self.ops
    }

    /// Checks the recorded operations; see [`check`].
    pub fn check(&self, timeout: Duration) -> CheckResult {
        check(&self.ops, timeout)
    }
}

impl Extend<Operation> for History {
    fn extend<I: IntoIterator<Item = Operation>>(&mut self, iter: I) {
        self.ops.extend(iter);
    }
}

/// Nanoseconds elapsed since `epoch`, saturating; a timestamp for [`Operation`]s recorded by
/// several threads that share `epoch`.
pub fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Decides whether `ops` is linearizable with respect to the key-value model.
///
/// The history is partitioned by key and the keys are checked one after another (in key
/// order) against one overall time budget `timeout`, plus a memory budget of about 1 GiB for
/// each key's memo. The first key found illegal is reported at once. A key that runs out of
/// budget is remembered and the remaining keys are still visited (once the time is spent,
/// only those that need very little search finish), so an illegal key is reported in
/// preference to a timeout where possible.
///
/// Malformed operations (a known-outcome operation with `ret < call`, a `Get` answered `Ok`,
/// a write answered with a value) are reported as `Illegal` with a detail starting with
/// "malformed history", since they point at a bug in the test harness.
pub fn check(ops: &[Operation], timeout: Duration) -> CheckResult {
    let deadline = Instant::now().checked_add(timeout);
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        by_key.entry(op.key.as_slice()).or_default().push(i);
    }
    let mut timed_out: Option<(Vec<u8>, String)> = None;
    for (key, indices) in by_key {
        match check_key(ops, &indices, deadline) {
            KeyOutcome::Linearizable => {}
            KeyOutcome::Illegal(detail) => {
                return CheckResult::Illegal {
                    key: key.to_vec(),
                    detail,
                }
            }
            KeyOutcome::Timeout(detail) => {
                if timed_out.is_none() {
                    timed_out = Some((key.to_vec(), detail));
                }
            }
        }
    }
    match timed_out {
        Some((key, detail)) => CheckResult::Timeout { key, detail },
        None => CheckResult::Ok,
    }
}

// ---------------------------------------------------------------------------------------------
// Per-key search.

enum KeyOutcome {
    Linearizable,
    Illegal(String),
    Timeout(String),
}

/// How often (in search steps, a power of two) the deadline and the memo size are looked at.
const BUDGET_CHECK_MASK: u64 = 255;

/// The memo may not grow past this many bytes (roughly); past it the check gives up with
/// [`CheckResult::Timeout`], as it would on running out of time.
const MEMO_LIMIT_BYTES: usize = 1 << 30;

/// The interned id of the absent value.
const ABSENT: usize = 0;

/// The interned id standing for every value that no read of the key can observe: a value no
/// read returns (with appends on the key: no read starts with). Such values behave alike: no
/// read matches them, appending to them gives another such value, and puts or deletes
/// overwrite them. Merging them into one state lets the memo merge configurations that
/// differ only in which unread value the key holds.
const UNOBSERVABLE: usize = 1;

/// An operation of one key, in the form the search uses.
struct LocalOp<'a> {
    /// Index in the caller's slice, for reports.
    orig: usize,
    op: &'a Operation,
    kind: Kind<'a>,
    call: u64,
    /// The return time; `u64::MAX` for an unknown outcome, unless pinned (see `seen_by`).
    ret: u64,
    /// Whether the operation has a finite return time: a known outcome, or a pinned put.
    /// Only such operations must be linearized; the others may always go last.
    known: bool,
    /// For an unknown-outcome put pinned by a read: that read's index in the caller's slice.
    seen_by: Option<usize>,
}

#[derive(Clone, Copy)]
enum Kind<'a> {
    /// Must observe this interned state.
    Get(usize),
    /// Sets this interned state.
    Put(usize),
    Delete,
    Append(&'a [u8]),
}

fn check_key(ops: &[Operation], indices: &[usize], deadline: Option<Instant>) -> KeyOutcome {
    let (local, states, dropped) = match prepare(ops, indices) {
        Ok(prepared) => prepared,
        Err(detail) => return KeyOutcome::Illegal(detail),
    };
    Search::new(&local, states, dropped).run(deadline)
}

/// Validates and converts one key's operations; also returns the interned states and how
/// many unknown-outcome writes were left out as unobservable (see [`unobservable`]). Known
/// operations get the low ids in call order, unknown ones the high ids: the linearized set of
/// a mostly sequential history is then a dense prefix of the bitset, which the memo stores
/// compactly.
#[allow(clippy::type_complexity)]
fn prepare<'a>(
    ops: &'a [Operation],
    indices: &[usize],
) -> Result<(Vec<LocalOp<'a>>, States, usize), String> {
    let mut kept: Vec<(usize, &'a Operation, bool)> = Vec::with_capacity(indices.len());
    for &orig in indices {
        let Some(op) = ops.get(orig) else { continue };
        let known = !matches!(op.output, Output::Unknown);
        let malformed = |why: &str| {
            format!(
                "malformed history: {why}: {}",
                describe_op(op, orig, ret_shown(op, known))
            )
        };
        match (&op.input, &op.output) {
            (Input::Get, Output::Unknown) => continue,
            (Input::Get, Output::Ok) => return Err(malformed("a get answered ok, not a value")),
            (Input::Get, Output::Value(_)) => {}
            (_, Output::Value(_)) => return Err(malformed("a write answered with a value")),
            _ => {}
        }
        if known && op.ret < op.call {
            return Err(malformed("returned before it was called"));
        }
        kept.push((orig, op, known));
    }

    let mut reads: Vec<Option<&[u8]>> = kept
        .iter()
        .filter_map(|(_, op, _)| match &op.output {
            Output::Value(v) => Some(v.as_deref()),
            _ => None,
        })
        .collect();
    reads.sort_unstable();
    reads.dedup();
    let has_appends = kept
        .iter()
        .any(|(_, op, _)| matches!(op.input, Input::Append(_)));
    let before = kept.len();
    kept.retain(|(_, op, known)| *known || !unobservable(&op.input, &reads, has_appends));
    let dropped = before - kept.len();

    let mut states = States::new(
        reads.iter().flatten().map(|r| r.to_vec()).collect(),
        has_appends,
    );
    let mut local: Vec<LocalOp<'a>> = kept
        .into_iter()
        .map(|(orig, op, known)| {
            let kind = match (&op.input, &op.output) {
                (Input::Get, Output::Value(v)) => Kind::Get(states.intern(v.as_deref())),
                (Input::Put(v), _) => Kind::Put(states.intern(Some(v))),
                (Input::Delete, _) => Kind::Delete,
                (Input::Append(a), _) => Kind::Append(a),
                // Unknown gets were dropped and bad outputs rejected above.
                (Input::Get, _) => Kind::Get(UNOBSERVABLE),
            };
            LocalOp {
                orig,
                op,
                kind,
                call: op.call,
                ret: if known { op.ret } else { u64::MAX },
                known,
                seen_by: None,
            }
        })
        .collect();
    if !has_appends {
        pin_observed_puts(&mut local);
    }
    local.sort_by_key(|o| (!o.known, o.call, o.ret, o.orig));
    Ok((local, states, dropped))
}

/// Gives an unknown-outcome put a return time when a read saw its value and nothing else can
/// have produced that value (no appends on the key, no other put of the same value): it must
/// be linearized before that read, so before the read returned. The constraint that adds
/// (anything called after that return comes after the put) already follows from the read
/// itself, so no linearization is lost, and the put stops being a forever-pending candidate.
fn pin_observed_puts(local: &mut [LocalOp<'_>]) {
    let mut writers: HashMap<&[u8], usize> = HashMap::new();
    let mut first_read: HashMap<&[u8], (u64, usize)> = HashMap::new();
    for o in local.iter() {
        match (&o.op.input, &o.op.output) {
            (Input::Put(v), _) => *writers.entry(v.as_slice()).or_default() += 1,
            (Input::Get, Output::Value(Some(v))) => {
                let seen = first_read.entry(v.as_slice()).or_insert((o.ret, o.orig));
                *seen = (*seen).min((o.ret, o.orig));
            }
            _ => {}
        }
    }
    for o in local.iter_mut() {
        let (Input::Put(v), Output::Unknown) = (&o.op.input, &o.op.output) else {
            continue;
        };
        if writers.get(v.as_slice()) != Some(&1) {
            continue;
        }
        if let Some(&(ret, reader)) = first_read.get(v.as_slice()) {
            // A read before the call is hopeless anyway; leave it to the search to report.
            if ret >= o.call {
                o.ret = ret;
                o.known = true;
                o.seen_by = Some(reader);
            }
        }
    }
}

/// Whether an unknown-outcome write can be assumed never to have happened because no read
/// (of `reads`, the distinct values read from the key) could have seen its effect.
///
/// Suppose a linearization places the write `w`. Until the next put or delete, every value
/// the key takes starts with `w`'s put value, is absent then built by appends (after a
/// delete), or contains `w`'s appended bytes. If no read returns such a value, no read lies
/// in that stretch, so removing `w` changes only states nobody observes: the history is
/// linearizable with `w` exactly when it is without it (a write with unknown outcome can
/// always go last). Dropping such writes up front keeps them from multiplying the search.
fn unobservable(input: &Input, reads: &[Option<&[u8]>], has_appends: bool) -> bool {
    let mut values = reads.iter().flatten();
    match input {
        Input::Get => false,
        Input::Put(v) => !values.any(|r| r.starts_with(v)),
        Input::Delete => !has_appends && !reads.contains(&None),
        Input::Append(a) if a.is_empty() => !values.any(|_| true),
        Input::Append(a) => !values.any(|r| r.windows(a.len()).any(|w| w == a.as_slice())),
    }
}

/// Interned register values and the memoized effect of appends.
struct States {
    /// By id; `ABSENT` and `UNOBSERVABLE` hold `None`.
    values: Vec<Option<Vec<u8>>>,
    index: HashMap<Vec<u8>, usize>,
    /// The distinct present values reads returned, sorted.
    reads: Vec<Vec<u8>>,
    /// Whether the key has appends (then a value is observable if a read starts with it).
    has_appends: bool,
    /// (state, op id) -> state after that append.
    appends: HashMap<(usize, usize), usize>,
}

impl States {
    fn new(reads: Vec<Vec<u8>>, has_appends: bool) -> Self {
        States {
            values: vec![None, None],
            index: HashMap::new(),
            reads,
            has_appends,
            appends: HashMap::new(),
        }
    }

    fn observable(&self, bytes: &[u8]) -> bool {
        // The first read not below `bytes` starts with it if any read does.
        let at = self.reads.partition_point(|r| r.as_slice() < bytes);
        self.reads.get(at).is_some_and(|r| {
            if self.has_appends {
                r.starts_with(bytes)
            } else {
                r.as_slice() == bytes
            }
        })
    }

    fn intern(&mut self, value: Option<&[u8]>) -> usize {
        let Some(bytes) = value else { return ABSENT };
        if let Some(&id) = self.index.get(bytes) {
            return id;
        }
        if !self.observable(bytes) {
            return UNOBSERVABLE;
        }
        self.insert(bytes.to_vec())
    }

    fn intern_owned(&mut self, bytes: Vec<u8>) -> usize {
        if let Some(&id) = self.index.get(&bytes) {
            return id;
        }
        if !self.observable(&bytes) {
            return UNOBSERVABLE;
        }
        self.insert(bytes)
    }

    fn insert(&mut self, bytes: Vec<u8>) -> usize {
        let id = self.values.len();
        self.values.push(Some(bytes.clone()));
        self.index.insert(bytes, id);
        id
    }

    /// The model: the state after applying `kind` (operation `op_id`) to `state`, or `None`
    /// if the operation's output is impossible in `state`.
    fn step(&mut self, state: usize, op_id: usize, kind: Kind<'_>) -> Option<usize> {
        match kind {
            Kind::Get(want) => (state == want && state != UNOBSERVABLE).then_some(state),
            Kind::Put(value) => Some(value),
            Kind::Delete => Some(ABSENT),
            Kind::Append(_) if state == UNOBSERVABLE => Some(UNOBSERVABLE),
            Kind::Append(arg) => {
                if let Some(&next) = self.appends.get(&(state, op_id)) {
                    return Some(next);
                }
                let old = self.values.get(state).and_then(|v| v.as_deref());
                let mut bytes = old.map(<[u8]>::to_vec).unwrap_or_default();
                bytes.extend_from_slice(arg);
                let next = self.intern_owned(bytes);
                self.appends.insert((state, op_id), next);
                Some(next)
            }
        }
    }
}

/// The model on real values, for reports: the value after `input`, or `None` if `output`
/// is impossible.
fn apply(value: &Option<Vec<u8>>, input: &Input, output: &Output) -> Option<Option<Vec<u8>>> {
    match (input, output) {
        (Input::Get, Output::Value(seen)) => (seen == value).then(|| value.clone()),
        (Input::Get, _) => None,
        (Input::Put(v), _) => Some(Some(v.clone())),
        (Input::Delete, _) => Some(None),
        (Input::Append(a), _) => {
            let mut bytes = value.clone().unwrap_or_default();
            bytes.extend_from_slice(a);
            Some(Some(bytes))
        }
    }
}

/// splitmix64's finalizer: a cheap, well-mixing bijection on `u64`.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The set of linearized operations with a known outcome, with a Zobrist hash kept up to
/// date and a compact canonical form.
struct Bits {
    words: Vec<u64>,
    /// Index of the first word that is not all ones.
    lead: usize,
    /// Every word at or past this index is zero.
    high: usize,
    hash: u64,
}

impl Bits {
    fn new(n: usize) -> Self {
        Bits {
            words: vec![0; n.div_ceil(64)],
            lead: 0,
            high: 0,
            hash: 0,
        }
    }

    fn zobrist(i: usize) -> u64 {
        mix64((i as u64) ^ 0x5bd1_e995_0000_0000)
    }

    fn set(&mut self, i: usize) {
        let w = i / 64;
        if let Some(word) = self.words.get_mut(w) {
            *word |= 1u64 << (i % 64);
        }
        self.hash ^= Self::zobrist(i);
        self.high = self.high.max(w + 1);
        while self.words.get(self.lead) == Some(&u64::MAX) {
            self.lead += 1;
        }
    }

    fn clear(&mut self, i: usize) {
        let w = i / 64;
        if let Some(word) = self.words.get_mut(w) {
            *word &= !(1u64 << (i % 64));
        }
        self.hash ^= Self::zobrist(i);
        self.lead = self.lead.min(w);
    }

    /// The non-zero words past `lead`, with their indices: together with `lead` a canonical
    /// description of the set.
    fn canonical(&mut self, out: &mut Vec<(usize, u64)>) {
        while self.high > self.lead && self.words.get(self.high - 1) == Some(&0) {
            self.high -= 1;
        }
        out.clear();
        let end = self.high.min(self.words.len());
        if let Some(words) = self.words.get(self.lead..end) {
            out.extend(
                words
                    .iter()
                    .enumerate()
                    .filter(|(_, &w)| w != 0)
                    .map(|(j, &w)| (self.lead + j, w)),
            );
        }
    }
}

/// The set of linearized operations with an unknown outcome (indexed from 0).
struct UnknownBits {
    words: Vec<u64>,
}

impl UnknownBits {
    fn set(&mut self, i: usize) {
        if let Some(word) = self.words.get_mut(i / 64) {
            *word |= 1u64 << (i % 64);
        }
    }

    fn clear(&mut self, i: usize) {
        if let Some(word) = self.words.get_mut(i / 64) {
            *word &= !(1u64 << (i % 64));
        }
    }

    /// The words without trailing zero words.
    fn trimmed(&self) -> &[u64] {
        let end = self
            .words
            .iter()
            .rposition(|&w| w != 0)
            .map_or(0, |p| p + 1);
        self.words.get(..end).unwrap_or(&[])
    }
}

/// Whether every bit of `small` is in `big` (missing words are zero).
fn is_subset(small: &[u64], big: &[u64]) -> bool {
    small
        .iter()
        .enumerate()
        .all(|(i, &w)| w & !big.get(i).copied().unwrap_or(0) == 0)
}

/// A hasher for keys that are already well-mixed `u64`s.
#[derive(Default)]
struct PremixedHasher(u64);

impl Hasher for PremixedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix64(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A memoized configuration; its bitsets live in the cache's arenas.
struct CacheEntry {
    state: usize,
    lead: usize,
    /// Start of its canonical known-set words in `Cache::words`.
    words_at: usize,
    /// Start of its unknown-set words in `Cache::unknown`.
    unknown_at: usize,
    words_len: u32,
    unknown_len: u32,
    /// The next entry with the same hash, `NO_ENTRY` if none.
    next: usize,
}

const NO_ENTRY: usize = usize::MAX;

/// The memo of visited configurations (linearized set, state), in a few flat arenas so that
/// millions of entries cost little to build and to free.
#[derive(Default)]
struct Cache {
    /// Hash -> first entry with that hash.
    heads: HashMap<u64, usize, BuildHasherDefault<PremixedHasher>>,
    entries: Vec<CacheEntry>,
    words: Vec<(usize, u64)>,
    unknown: Vec<u64>,
    scratch: Vec<(usize, u64)>,
}

impl Cache {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<CacheEntry>()
            + self.words.capacity() * std::mem::size_of::<(usize, u64)>()
            + self.unknown.capacity() * 8
            + self.heads.capacity() * 17
    }

    /// Records the configuration, or returns false if the search can skip it: it was seen
    /// before, or a configuration with the same known operations and state but only a subset
    /// of its unknown-outcome operations was (see the module docs).
    fn insert(&mut self, bits: &mut Bits, unknown: &UnknownBits, state: usize) -> bool {
        bits.canonical(&mut self.scratch);
        let unknown = unknown.trimmed();
        let (Ok(words_len), Ok(unknown_len)) = (
            u32::try_from(self.scratch.len()),
            u32::try_from(unknown.len()),
        ) else {
            // Absurdly large sets: do not memoize (always safe, only slower).
            return true;
        };
        let hash = bits.hash ^ mix64(state as u64);
        let head = self.heads.get(&hash).copied().unwrap_or(NO_ENTRY);
        let mut cursor = head;
        while let Some(c) = self.entries.get(cursor) {
            let words = self
                .words
                .get(c.words_at..c.words_at + c.words_len as usize);
            if c.state == state && c.lead == bits.lead && words == Some(&self.scratch[..]) {
                let theirs = self
                    .unknown
                    .get(c.unknown_at..c.unknown_at + c.unknown_len as usize)
                    .unwrap_or(&[]);
                if is_subset(theirs, unknown) {
                    return false;
                }
            }
            cursor = c.next;
        }
        let id = self.entries.len();
        self.entries.push(CacheEntry {
            state,
            lead: bits.lead,
            words_at: self.words.len(),
            unknown_at: self.unknown.len(),
            words_len,
            unknown_len,
            next: head,
        });
        self.words.extend_from_slice(&self.scratch);
        self.unknown.extend_from_slice(unknown);
        self.heads.insert(hash, id);
        true
    }
}

/// What the search does next.
#[derive(Clone, Copy)]
enum Cursor {
    /// A new configuration was just reached.
    Enter,
    /// Trying the known operation whose call entry this is (or, at a return entry, done with
    /// the known candidates).
    Main(usize),
    /// Trying unknown-outcome operations from this node of their list, as long as they were
    /// called no later than `limit` (the return time of the first pending known operation).
    Unknown { node: usize, limit: u64 },
    /// No candidate is left in this configuration: back up.
    Dead,
}

/// One linearized operation on the search stack.
struct Frame {
    op: usize,
    /// The state before it.
    before: usize,
    /// Where to carry on once this choice is undone.
    resume: Cursor,
    /// A read that matched the state: if it leads nowhere, nothing does (see `enter`).
    forced: bool,
}

/// The entry lists and search state for one key.
///
/// Operations with a known outcome (ids `0..known`) live as call and return entries in one
/// doubly linked list; operations with an unknown outcome (ids `known..n`) never return, so
/// they live in a second list, in call order, and are tried only after the known candidates.
/// Preferring to leave them out makes the dominance pruning in [`Cache::insert`] effective.
struct Search<'a, 'o> {
    ops: &'a [LocalOp<'o>],
    states: States,
    known: usize,
    /// Unknown-outcome writes left out as unobservable.
    dropped: usize,
    /// Main list: 0 = head sentinel, 1..=2k the sorted events, 2k+1 = tail sentinel.
    next: Vec<usize>,
    prev: Vec<usize>,
    entry_op: Vec<usize>,
    entry_is_call: Vec<bool>,
    entry_match: Vec<usize>,
    /// Per known op: its call entry.
    call_entry: Vec<usize>,
    /// Unknown list: 0 = head sentinel, node j+1 = op `known + j`, u+1 = tail sentinel.
    u_next: Vec<usize>,
    u_prev: Vec<usize>,
    u_tail: usize,
    /// Circular lists of the pending unknown-outcome operations with the same effect, in
    /// call order: nodes as in the unknown list, then one head per class.
    c_next: Vec<usize>,
    c_prev: Vec<usize>,
    /// Per node of the unknown list: the head of its class list.
    class_head: Vec<usize>,

    // The current configuration.
    state: usize,
    bits: Bits,
    unknown_bits: UnknownBits,
    known_done: usize,
    stack: Vec<Frame>,
    cache: Cache,

    // The deepest dead end so far, for reports: `best` agrees with the stack below
    // `low_water`, so a new record only copies what changed since the last one.
    best: Vec<usize>,
    best_known: Option<usize>,
    best_blocker: Option<usize>,
    low_water: usize,
}

const HEAD: usize = 0;

impl<'a, 'o> Search<'a, 'o> {
    fn new(ops: &'a [LocalOp<'o>], states: States, dropped: usize) -> Self {
        let known = ops.iter().take_while(|o| o.known).count();
        // (time, 0 = call / 1 = return, op): calls sort ahead of returns at equal times.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * known);
        for (id, op) in ops.iter().enumerate().take(known) {
            events.push((op.call, 0, id));
            events.push((op.ret, 1, id));
        }
        events.sort_unstable();
        let len = 2 * known + 2;
        let mut entry_op = vec![0; len];
        let mut entry_is_call = vec![false; len];
        let mut call_entry = vec![0; known];
        let mut ret_entry = vec![0; known];
        for (pos, &(_, kind, id)) in events.iter().enumerate() {
            let e = pos + 1;
            entry_op[e] = id;
            entry_is_call[e] = kind == 0;
            if kind == 0 {
                call_entry[id] = e;
            } else {
                ret_entry[id] = e;
            }
        }
        let mut entry_match = vec![0; len];
        for id in 0..known {
            entry_match[call_entry[id]] = ret_entry[id];
            entry_match[ret_entry[id]] = call_entry[id];
        }
        let unknown = ops.len() - known;
        // Unknown-outcome operations with the same effect form a class.
        let mut classes: HashMap<(u8, usize, &[u8]), usize> = HashMap::new();
        let mut class_head = vec![0; unknown + 2];
        let mut c_next: Vec<usize> = (0..unknown + 2).collect();
        let mut c_prev = c_next.clone();
        for (j, op) in ops.iter().skip(known).enumerate() {
            let key = match op.kind {
                Kind::Delete => (0, 0, &[][..]),
                Kind::Put(v) => (1, v, &[][..]),
                Kind::Append(a) => (2, 0, a),
                Kind::Get(v) => (3, v, &[][..]),
            };
            let fresh = unknown + 2 + classes.len();
            let head = *classes.entry(key).or_insert(fresh);
            if head == fresh {
                c_next.push(head);
                c_prev.push(head);
            }
            let node = j + 1;
            let last = c_prev[head];
            c_next[last] = node;
            c_prev[node] = last;
            c_next[node] = head;
            c_prev[head] = node;
            class_head[node] = head;
        }
        Search {
            ops,
            states,
            known,
            dropped,
            next: (1..=len).collect(),
            prev: (0..len).map(|i| i.saturating_sub(1)).collect(),
            entry_op,
            entry_is_call,
            entry_match,
            call_entry,
            u_next: (1..=unknown + 2).collect(),
            u_prev: (0..unknown + 2).map(|i| i.saturating_sub(1)).collect(),
            u_tail: unknown + 1,
            c_next,
            c_prev,
            class_head,
            state: ABSENT,
            bits: Bits::new(known),
            unknown_bits: UnknownBits {
                words: vec![0; unknown.div_ceil(64)],
            },
            known_done: 0,
            stack: Vec::new(),
            cache: Cache::default(),
            best: Vec::new(),
            best_known: None,
            best_blocker: None,
            low_water: 0,
        }
    }

    /// Unlinks a call entry and its return entry.
    fn lift(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        self.prev[n] = p;
        let m = self.entry_match[e];
        let (p, n) = (self.prev[m], self.next[m]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    /// Undoes the matching [`Search::lift`]; lifts and unlifts must nest.
    fn unlift(&mut self, e: usize) {
        let m = self.entry_match[e];
        let (p, n) = (self.prev[m], self.next[m]);
        self.next[p] = m;
        self.prev[n] = m;
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        self.prev[n] = e;
    }

    /// Unlinks a node from the unknown list and from its class list.
    fn u_lift(&mut self, node: usize) {
        let (p, n) = (self.u_prev[node], self.u_next[node]);
        self.u_next[p] = n;
        self.u_prev[n] = p;
        let (p, n) = (self.c_prev[node], self.c_next[node]);
        self.c_next[p] = n;
        self.c_prev[n] = p;
    }

    /// Undoes the matching [`Search::u_lift`].
    fn u_unlift(&mut self, node: usize) {
        let (p, n) = (self.c_prev[node], self.c_next[node]);
        self.c_next[p] = node;
        self.c_prev[n] = node;
        let (p, n) = (self.u_prev[node], self.u_next[node]);
        self.u_next[p] = node;
        self.u_prev[n] = node;
    }

    /// The unknown list's node for an unknown-outcome op and back.
    fn node_of(&self, id: usize) -> usize {
        id - self.known + 1
    }

    fn op_of(&self, node: usize) -> usize {
        self.known + node - 1
    }

    fn run(&mut self, deadline: Option<Instant>) -> KeyOutcome {
        let mut steps: u64 = 0;
        let mut cursor = Cursor::Enter;
        loop {
            // Whatever unknown-outcome operations are left can go at the very end.
            if self.known_done == self.known {
                return KeyOutcome::Linearizable;
            }
            steps += 1;
            if steps & BUDGET_CHECK_MASK == 0 {
                let late = deadline.is_some_and(|d| Instant::now() >= d);
                let full = self.cache.bytes() > MEMO_LIMIT_BYTES;
                if late || full {
                    return KeyOutcome::Timeout(format!(
                        "gave up ({}) after {steps} search steps over {} operations ({} with \
                         unknown outcome); longest linearizable prefix found so far: {} \
                         operations; {} configurations memoized",
                        if late {
                            "out of time"
                        } else {
                            "memo too large"
                        },
                        self.ops.len(),
                        self.unknown_outcomes(),
                        self.best.len().max(self.stack.len()),
                        self.cache.len(),
                    ));
                }
            }
            cursor = match cursor {
                Cursor::Enter => self.enter(),
                Cursor::Main(e) if self.entry_is_call[e] => {
                    if self.try_push(self.entry_op[e], cursor, false) {
                        Cursor::Enter
                    } else {
                        Cursor::Main(self.next[e])
                    }
                }
                Cursor::Main(e) => Cursor::Unknown {
                    node: self.u_next[HEAD],
                    limit: self.ops[self.entry_op[e]].ret,
                },
                Cursor::Unknown { node, limit } => {
                    let id = self.op_of(node);
                    if node == self.u_tail || self.ops[id].call > limit {
                        Cursor::Dead
                    } else if !self.skip_unknown(id) && self.try_push(id, cursor, false) {
                        Cursor::Enter
                    } else {
                        Cursor::Unknown {
                            node: self.u_next[node],
                            limit,
                        }
                    }
                }
                Cursor::Dead => {
                    self.record_dead_end();
                    match self.pop() {
                        Some(cursor) => cursor,
                        None => return KeyOutcome::Illegal(self.report()),
                    }
                }
            };
        }
    }

    /// Starts on a new configuration. A pending read that matches the state is linearized
    /// first and alone: if some linearization continues from here, one continues with that
    /// read next (it may move to the front, since nothing pending had to precede it and it
    /// changes nothing), so its failure is the configuration's failure. This removes the
    /// reads from the branching, which otherwise dominates under high concurrency.
    fn enter(&mut self) -> Cursor {
        let mut e = self.next[HEAD];
        while self.entry_is_call[e] {
            let id = self.entry_op[e];
            if matches!(self.ops[id].kind, Kind::Get(want) if want == self.state) {
                return if self.try_push(id, Cursor::Dead, true) {
                    Cursor::Enter
                } else {
                    Cursor::Dead
                };
            }
            e = self.next[e];
        }
        Cursor::Main(self.next[HEAD])
    }

    /// Whether to leave out unknown-outcome operation `id` here: a put or delete right after
    /// another unknown-outcome operation. The configuration it would lead to is dominated by
    /// the one reached by placing it instead of that operation (same known operations, same
    /// state, fewer unknown ones), which the search visits anyway.
    fn skip_unknown(&self, id: usize) -> bool {
        let node = self.node_of(id);
        if self.c_prev[node] != self.class_head[node] {
            return true;
        }
        let blind = matches!(self.ops[id].kind, Kind::Put(_) | Kind::Delete);
        blind && self.stack.last().is_some_and(|f| !self.ops[f.op].known)
    }

    /// Linearizes operation `id` next if the model allows it and the resulting configuration
    /// is new.
    fn try_push(&mut self, id: usize, resume: Cursor, forced: bool) -> bool {
        let op = &self.ops[id];
        let Some(next_state) = self.states.step(self.state, id, op.kind) else {
            return false;
        };
        if op.known {
            self.bits.set(id);
        } else {
            self.unknown_bits.set(id - self.known);
        }
        if !self
            .cache
            .insert(&mut self.bits, &self.unknown_bits, next_state)
        {
            if op.known {
                self.bits.clear(id);
            } else {
                self.unknown_bits.clear(id - self.known);
            }
            return false;
        }
        self.stack.push(Frame {
            op: id,
            before: self.state,
            resume,
            forced,
        });
        self.state = next_state;
        if op.known {
            self.known_done += 1;
            self.lift(self.call_entry[id]);
        } else {
            self.u_lift(self.node_of(id));
        }
        true
    }

    /// Undoes the last choice and says where to carry on, or `None` if there is none.
    fn pop(&mut self) -> Option<Cursor> {
        let frame = self.stack.pop()?;
        self.low_water = self.low_water.min(self.stack.len());
        self.state = frame.before;
        let id = frame.op;
        let after = if self.ops[id].known {
            self.bits.clear(id);
            self.known_done -= 1;
            let e = self.call_entry[id];
            self.unlift(e);
            Cursor::Main(self.next[e])
        } else {
            self.unknown_bits.clear(id - self.known);
            let node = self.node_of(id);
            self.u_unlift(node);
            match frame.resume {
                Cursor::Unknown { limit, .. } => Cursor::Unknown {
                    node: self.u_next[node],
                    limit,
                },
                _ => Cursor::Dead,
            }
        };
        Some(if frame.forced { Cursor::Dead } else { after })
    }

    /// Remembers the current configuration if it is the best dead end so far: most known
    /// operations placed, then fewest unknown ones.
    fn record_dead_end(&mut self) {
        let record = match self.best_known {
            None => true,
            Some(k) => {
                self.known_done > k || (self.known_done == k && self.stack.len() < self.best.len())
            }
        };
        if !record {
            return;
        }
        self.best_known = Some(self.known_done);
        self.best.truncate(self.low_water);
        let fresh = self.stack.get(self.low_water..).unwrap_or(&[]);
        self.best.extend(fresh.iter().map(|f| f.op));
        self.low_water = self.stack.len();
        // The first pending return: the operation that could not be placed in time.
        let mut e = self.next[HEAD];
        while self.entry_is_call[e] {
            e = self.next[e];
        }
        self.best_blocker = (e != self.next.len() - 1).then(|| self.entry_op[e]);
    }

    fn unknown_outcomes(&self) -> usize {
        let unknown = |o: &&LocalOp<'_>| o.op.output == Output::Unknown;
        self.ops.iter().filter(unknown).count()
    }

    /// Explains a failed search: the longest linearizable prefix, the operation that could not
    /// be placed after it, and the other candidates at that point.
    fn report(&self) -> String {
        const SHOW_PREFIX: usize = 10;
        const SHOW_CANDIDATES: usize = 16;
        let prefix = &self.best;
        let total = self.ops.len();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "no linearization exists for the {total} operations on this key ({} with unknown \
             outcome, treated as returning at +inf; not counted: gets with unknown outcome, \
             and {} unknown-outcome writes left out because no read could have observed them)",
            self.unknown_outcomes(),
            self.dropped,
        );

        // Replay the prefix to show the value after each step.
        let mut after = Vec::with_capacity(prefix.len());
        let mut value = Some(None);
        for &id in prefix {
            let op = self.ops[id].op;
            value = value.and_then(|v| apply(&v, &op.input, &op.output));
            after.push(value.clone());
        }
        let _ = writeln!(
            out,
            "longest linearizable prefix found: {} of {total} operations; value after it: {}",
            prefix.len(),
            show_replayed(&value),
        );
        if !prefix.is_empty() {
            let skip = prefix.len().saturating_sub(SHOW_PREFIX);
            let _ = writeln!(
                out,
                "{} of that prefix, in linearization order:",
                if skip > 0 { "the end" } else { "all" }
            );
            for (&id, v) in prefix.iter().zip(&after).skip(skip) {
                let _ = writeln!(
                    out,
                    "  {}  => value {}",
                    self.describe(id),
                    show_replayed(v)
                );
            }
        }
        let Some(blocker) = self.best_blocker else {
            return out;
        };
        let _ = writeln!(
            out,
            "this operation returned, so it must take effect before its return, but neither it \
             nor any other pending operation can legally come next:\n  {}",
            self.describe(blocker)
        );

        let mut in_prefix = vec![false; total];
        for &id in prefix {
            in_prefix[id] = true;
        }
        let limit = self.ops[blocker].ret;
        let candidates: Vec<usize> = (0..total)
            .filter(|&id| id != blocker && !in_prefix[id] && self.ops[id].call <= limit)
            .collect();
        if candidates.is_empty() {
            let _ = writeln!(
                out,
                "every other operation invoked before it returned is in the prefix"
            );
        } else {
            let _ = writeln!(
                out,
                "other operations invoked before it returned and not in the prefix ({}):",
                candidates.len()
            );
            for &id in candidates.iter().take(SHOW_CANDIDATES) {
                let _ = writeln!(out, "  {}", self.describe(id));
            }
            if candidates.len() > SHOW_CANDIDATES {
                let _ = writeln!(out, "  ... and {} more", candidates.len() - SHOW_CANDIDATES);
            }
        }
        let _ = write!(
            out,
            "(the search visited {} configurations)",
            self.cache.len()
        );
        out
    }

    fn describe(&self, id: usize) -> String {
        let op = &self.ops[id];
        let ret = match op.seen_by {
            Some(reader) => format!(
                "+inf, but took effect by {} when ops[{reader}] returned its value",
                op.ret
            ),
            None => ret_shown(op.op, op.known),
        };
        describe_op(op.op, op.orig, ret)
    }
}

fn show_replayed(value: &Option<Option<Vec<u8>>>) -> String {
    match value {
        Some(v) => show_value(v.as_deref()),
        None => "<replay failed>".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Formatting.

fn ret_shown(op: &Operation, known: bool) -> String {
    if known {
        op.ret.to_string()
    } else {
        "+inf".to_string()
    }
}

fn describe_op(op: &Operation, orig: usize, ret: String) -> String {
    let input = match &op.input {
        Input::Get => "get".to_string(),
        Input::Put(v) => format!("put {}", show_bytes(v)),
        Input::Delete => "delete".to_string(),
        Input::Append(v) => format!("append {}", show_bytes(v)),
    };
    let output = match &op.output {
        Output::Value(v) => show_value(v.as_deref()),
        Output::Ok => "ok".to_string(),
        Output::Unknown => "unknown".to_string(),
    };
    format!(
        "ops[{orig}] client {}: {input} -> {output}  [call {}, ret {ret}]",
        op.client, op.call
    )
}

fn show_value(value: Option<&[u8]>) -> String {
    match value {
        Some(v) => show_bytes(v),
        None => "<absent>".to_string(),
    }
}

/// Quoted, escaped, and cut short if long.
fn show_bytes(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    if bytes.len() <= MAX {
        format!("\"{}\"", bytes.escape_ascii())
    } else {
        let head = bytes.get(..MAX).unwrap_or(bytes);
        format!("\"{}\"... ({} bytes)", head.escape_ascii(), bytes.len())
    }
}
