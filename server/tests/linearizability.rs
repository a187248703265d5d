//! Unit tests for the linearizability checker in `support/linearizability.rs`.

#![allow(clippy::unwrap_used)]

#[path = "support/linearizability.rs"]
mod linearizability;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use linearizability::{check, CheckResult, History, Input, Operation, Output};

/// Generous: every history below is decided far quicker than this.
const BUDGET: Duration = Duration::from_secs(60);

fn op(client: u64, key: &str, input: Input, output: Output, call: u64, ret: u64) -> Operation {
    Operation {
        client,
        key: key.as_bytes().to_vec(),
        input,
        output,
        call,
        ret,
    }
}

fn put(client: u64, key: &str, value: &str, call: u64, ret: u64) -> Operation {
    let input = Input::Put(value.as_bytes().to_vec());
    op(client, key, input, Output::Ok, call, ret)
}

fn put_unknown(client: u64, key: &str, value: &str, call: u64) -> Operation {
    let input = Input::Put(value.as_bytes().to_vec());
    // The recorded return time is deliberately small: the checker must ignore it.
    op(client, key, input, Output::Unknown, call, call + 1)
}

fn append(client: u64, key: &str, arg: &str, call: u64, ret: u64) -> Operation {
    let input = Input::Append(arg.as_bytes().to_vec());
    op(client, key, input, Output::Ok, call, ret)
}

fn delete(client: u64, key: &str, call: u64, ret: u64) -> Operation {
    op(client, key, Input::Delete, Output::Ok, call, ret)
}

fn get(client: u64, key: &str, seen: Option<&str>, call: u64, ret: u64) -> Operation {
    let output = Output::Value(seen.map(|s| s.as_bytes().to_vec()));
    op(client, key, Input::Get, output, call, ret)
}

fn run(ops: &[Operation]) -> CheckResult {
    check(ops, BUDGET)
}

#[track_caller]
fn assert_ok(ops: &[Operation]) {
    let result = run(ops);
    assert!(result.is_ok(), "expected linearizable, got: {result}");
}

/// Asserts the verdict is Illegal for `key` and returns the detail.
#[track_caller]
fn assert_illegal(ops: &[Operation], key: &str) -> String {
    match run(ops) {
        CheckResult::Illegal { key: k, detail } => {
            assert_eq!(k, key.as_bytes(), "wrong key reported; detail:\n{detail}");
            assert!(
                detail.contains("longest linearizable prefix"),
                "detail lacks the prefix:\n{detail}"
            );
            detail
        }
        other => panic!("expected Illegal for key {key:?}, got: {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Basics.

#[test]
fn empty_history_is_linearizable() {
    assert_ok(&[]);
    assert!(History::new().check(BUDGET).is_ok());
}

#[test]
fn sequential_history_is_linearizable() {
    let ops = [
        get(1, "k", None, 0, 1),
        put(1, "k", "a", 2, 3),
        get(2, "k", Some("a"), 4, 5),
        put(2, "k", "b", 6, 7),
        get(1, "k", Some("b"), 8, 9),
        append(1, "k", "c", 10, 11),
        get(3, "k", Some("bc"), 12, 13),
        delete(3, "k", 14, 15),
        get(1, "k", None, 16, 17),
        append(2, "k", "d", 18, 19),
        get(2, "k", Some("d"), 20, 21),
    ];
    assert_ok(&ops);
}

#[test]
fn input_order_does_not_matter() {
    let mut ops = vec![
        put(1, "k", "a", 0, 10),
        put(2, "k", "b", 20, 30),
        get(3, "k", Some("b"), 40, 50),
        get(3, "k", Some("a"), 60, 70),
    ];
    ops.reverse();
    let detail = assert_illegal(&ops, "k");
    // Reports name operations by their index in the slice given to `check`.
    assert!(detail.contains("ops[0] client 3: get -> \"a\""), "{detail}");
}

#[test]
fn concurrent_put_and_get_may_see_either_value() {
    for seen in ["a", "b"] {
        let ops = [
            put(1, "k", "a", 0, 10),
            put(1, "k", "b", 20, 40),
            get(2, "k", Some(seen), 25, 35),
        ];
        assert_ok(&ops);
    }
    // A get overlapping the first put may also see the key absent.
    assert_ok(&[put(1, "k", "a", 0, 10), get(2, "k", None, 5, 15)]);
}

#[test]
fn two_reads_during_one_put_cannot_flip_back() {
    // Both reads overlap the put, but the second starts after the first returned: once the
    // new value was seen, the old one cannot come back.
    let ops = [
        put(1, "k", "a", 0, 10),
        put(1, "k", "b", 20, 100),
        get(2, "k", Some("b"), 30, 40),
        get(3, "k", Some("a"), 50, 60),
    ];
    assert_illegal(&ops, "k");
    // In the other order it is fine.
    let ops = [
        put(1, "k", "a", 0, 10),
        put(1, "k", "b", 20, 100),
        get(2, "k", Some("a"), 30, 40),
        get(3, "k", Some("b"), 50, 60),
    ];
    assert_ok(&ops);
}

#[test]
fn stale_read_is_illegal_and_named() {
    let ops = [
        put(1, "key-1", "old", 0, 10),
        put(1, "key-1", "new", 20, 30),
        get(2, "key-1", Some("old"), 40, 50),
    ];
    let detail = assert_illegal(&ops, "key-1");
    assert!(
        detail.contains("ops[2] client 2: get -> \"old\""),
        "{detail}"
    );
    assert!(detail.contains("2 of 3 operations"), "{detail}");
    assert!(detail.contains("value after it: \"new\""), "{detail}");
    let shown = run(&ops).to_string();
    assert!(
        shown.starts_with("key \"key-1\": not linearizable"),
        "{shown}"
    );
}

#[test]
fn read_of_a_value_never_written_is_illegal() {
    let ops = [put(1, "k", "a", 0, 10), get(2, "k", Some("ghost"), 5, 15)];
    let detail = assert_illegal(&ops, "k");
    assert!(detail.contains("get -> \"ghost\""), "{detail}");
    // Not even on an untouched key.
    assert_illegal(&[get(1, "k", Some("ghost"), 0, 1)], "k");
    // Absent and empty are different values.
    assert_illegal(&[get(1, "k", Some(""), 0, 1)], "k");
}

#[test]
fn touching_intervals_are_concurrent() {
    // `a` returns at the very instant `b` is called: they count as concurrent, so `b` may be
    // ordered first and a later read may see `a`.
    let ops = [
        put(1, "k", "a", 0, 10),
        put(2, "k", "b", 10, 20),
        get(3, "k", Some("a"), 30, 40),
    ];
    assert_ok(&ops);
    // One nanosecond apart they are ordered.
    let ops = [
        put(1, "k", "a", 0, 9),
        put(2, "k", "b", 10, 20),
        get(3, "k", Some("a"), 30, 40),
    ];
    assert_illegal(&ops, "k");
}

#[test]
fn zero_length_intervals_are_fine() {
    let ops = [
        put(1, "k", "a", 5, 5),
        get(2, "k", Some("a"), 5, 5),
        put(1, "k", "b", 6, 6),
        get(2, "k", Some("b"), 7, 7),
    ];
    assert_ok(&ops);
}

// ---------------------------------------------------------------------------------------------
// Unknown outcomes.

#[test]
fn unknown_put_later_observed_is_fine() {
    let ops = [
        put(1, "k", "x", 0, 10),
        put_unknown(1, "k", "y", 20),
        get(2, "k", Some("y"), 100, 110),
    ];
    assert_ok(&ops);
}

#[test]
fn unknown_put_never_observed_is_fine() {
    let ops = [
        put(1, "k", "x", 0, 10),
        put_unknown(1, "k", "y", 20),
        get(2, "k", Some("x"), 100, 110),
        get(2, "k", Some("x"), 120, 130),
    ];
    assert_ok(&ops);
}

#[test]
fn unknown_put_may_take_effect_long_after_its_recorded_return() {
    // `y`'s outcome is unknown: it may land after `z` even though `z` was issued after the
    // client gave up on `y`.
    let ops = [
        put_unknown(1, "k", "y", 20),
        put(1, "k", "z", 40, 50),
        get(2, "k", Some("z"), 55, 58),
        get(2, "k", Some("y"), 60, 70),
    ];
    assert_ok(&ops);
}

#[test]
fn unknown_put_observed_then_older_value_is_illegal() {
    let ops = [
        put(1, "k", "x", 0, 10),
        put_unknown(1, "k", "y", 20),
        get(2, "k", Some("y"), 40, 50),
        get(3, "k", Some("x"), 60, 70),
    ];
    let detail = assert_illegal(&ops, "k");
    assert!(detail.contains("ret +inf"), "{detail}");
    // Likewise with a write that completed before the unknown one was observed.
    let ops = [
        put_unknown(1, "k", "y", 20),
        put(1, "k", "z", 40, 50),
        get(2, "k", Some("y"), 60, 70),
        get(2, "k", Some("z"), 80, 90),
    ];
    assert_illegal(&ops, "k");
}

#[test]
fn unknown_put_cannot_take_effect_before_its_call() {
    let ops = [get(2, "k", Some("y"), 0, 10), put_unknown(1, "k", "y", 20)];
    assert_illegal(&ops, "k");
}

#[test]
fn unknown_get_is_ignored() {
    let ops = [
        put(1, "k", "x", 0, 10),
        op(2, "k", Input::Get, Output::Unknown, 20, 30),
        get(3, "k", Some("x"), 40, 50),
    ];
    assert_ok(&ops);
}

#[test]
fn unknown_append_and_delete() {
    // An unknown append that did land, seen later; and one that did not.
    let landed = [
        put(1, "k", "a", 0, 10),
        op(1, "k", Input::Append(b"b".to_vec()), Output::Unknown, 20, 0),
        get(2, "k", Some("ab"), 100, 110),
    ];
    assert_ok(&landed);
    let lost = [
        put(1, "k", "a", 0, 10),
        op(1, "k", Input::Append(b"b".to_vec()), Output::Unknown, 20, 0),
        get(2, "k", Some("a"), 100, 110),
        append(2, "k", "c", 120, 130),
        get(2, "k", Some("ac"), 140, 150),
    ];
    assert_ok(&lost);
    let deleted = [
        put(1, "k", "a", 0, 10),
        op(1, "k", Input::Delete, Output::Unknown, 20, 25),
        get(2, "k", None, 100, 110),
        get(2, "k", Some("a"), 120, 130),
    ];
    assert_illegal(&deleted, "k");
}

// ---------------------------------------------------------------------------------------------
// Appends and deletes.

#[test]
fn concurrent_appends_observed_in_either_order_are_fine() {
    for seen in ["ab", "ba"] {
        let ops = [
            append(1, "k", "a", 0, 10),
            append(2, "k", "b", 5, 15),
            get(3, "k", Some(seen), 20, 30),
        ];
        assert_ok(&ops);
    }
    // A read in the middle of both may see either single append.
    for seen in ["a", "b"] {
        let ops = [
            append(1, "k", "a", 0, 10),
            append(2, "k", "b", 5, 15),
            get(3, "k", Some(seen), 6, 9),
        ];
        assert_ok(&ops);
    }
}

#[test]
fn appends_out_of_real_time_order_are_illegal() {
    let ops = [
        append(1, "k", "a", 0, 10),
        append(2, "k", "b", 20, 30),
        get(3, "k", Some("ba"), 40, 50),
    ];
    assert_illegal(&ops, "k");
    // A lost append is illegal too.
    let ops = [
        append(1, "k", "a", 0, 10),
        append(2, "k", "b", 20, 30),
        get(3, "k", Some("b"), 40, 50),
    ];
    assert_illegal(&ops, "k");
    // Once "ab" was seen, a later read cannot show "ba".
    let ops = [
        append(1, "k", "a", 0, 100),
        append(2, "k", "b", 0, 100),
        get(3, "k", Some("ab"), 10, 20),
        get(3, "k", Some("ba"), 30, 40),
    ];
    assert_illegal(&ops, "k");
}

#[test]
fn append_to_existing_and_absent_values() {
    let ops = [
        append(1, "k", "x", 0, 1),
        get(1, "k", Some("x"), 2, 3),
        put(1, "k", "p", 4, 5),
        append(1, "k", "q", 6, 7),
        get(1, "k", Some("pq"), 8, 9),
        delete(1, "k", 10, 11),
        append(1, "k", "", 12, 13),
        get(1, "k", Some(""), 14, 15),
    ];
    assert_ok(&ops);
}

#[test]
fn deletes() {
    assert_ok(&[
        put(1, "k", "a", 0, 10),
        delete(1, "k", 20, 30),
        get(2, "k", None, 40, 50),
    ]);
    // The deleted value cannot come back.
    assert_illegal(
        &[
            put(1, "k", "a", 0, 10),
            delete(1, "k", 20, 30),
            get(2, "k", Some("a"), 40, 50),
        ],
        "k",
    );
    // A read concurrent with the delete may see either.
    for seen in [Some("a"), None] {
        assert_ok(&[
            put(1, "k", "a", 0, 10),
            delete(1, "k", 20, 30),
            get(2, "k", seen, 25, 45),
        ]);
    }
    // Absent before the first write, but not after it returned.
    assert_illegal(&[put(1, "k", "a", 0, 10), get(2, "k", None, 20, 30)], "k");
    // Deleting an absent key is fine, and re-creating a deleted key too.
    assert_ok(&[
        delete(1, "k", 0, 1),
        put(1, "k", "b", 2, 3),
        delete(2, "k", 4, 5),
        put(2, "k", "a", 6, 7),
        get(1, "k", Some("a"), 8, 9),
    ]);
}

// ---------------------------------------------------------------------------------------------
// Several keys, reports, malformed input, the builder.

#[test]
fn one_illegal_key_among_several_is_reported() {
    let ops = [
        put(1, "alpha", "1", 0, 10),
        put(2, "beta", "1", 0, 10),
        put(3, "gamma", "1", 0, 10),
        put(1, "alpha", "2", 20, 30),
        put(2, "beta", "2", 20, 30),
        put(3, "gamma", "2", 20, 30),
        get(1, "alpha", Some("2"), 40, 50),
        get(2, "beta", Some("1"), 40, 50), // stale
        get(3, "gamma", Some("2"), 40, 50),
        // The same stale read on a different key would be fine if nothing else was written
        // there: keys are independent.
        get(4, "delta", None, 40, 50),
    ];
    let detail = assert_illegal(&ops, "beta");
    assert!(detail.contains("ops[7] client 2: get -> \"1\""), "{detail}");
    // Operations on other keys are not mentioned.
    assert!(!detail.contains("ops[0]"), "{detail}");
    assert!(!detail.contains("ops[6]"), "{detail}");
    assert_eq!(run(&ops).key(), Some(&b"beta"[..]));
}

#[test]
fn reads_are_not_confused_across_keys() {
    // "b" was written to "y" only; reading it from "x" is a read of a value never written there.
    let ops = [put(1, "y", "b", 0, 10), get(2, "x", Some("b"), 20, 30)];
    assert_illegal(&ops, "x");
}

#[test]
fn report_lists_prefix_blocker_and_candidates() {
    let ops = [
        put(1, "k", "a", 0, 10),
        put(2, "k", "b", 20, 30),
        append(3, "k", "c", 25, 80),
        get(4, "k", Some("a"), 40, 50),
    ];
    let detail = assert_illegal(&ops, "k");
    assert!(
        detail.contains("no linearization exists for the 4 operations"),
        "{detail}"
    );
    // The blocker is the stale read; the still-running append is a candidate.
    assert!(detail.contains("ops[3] client 4: get -> \"a\""), "{detail}");
    assert!(
        detail.contains("ops[2] client 3: append \"c\" -> ok"),
        "{detail}"
    );
    assert!(
        detail.contains("ops[0] client 1: put \"a\" -> ok  [call 0, ret 10]"),
        "{detail}"
    );
}

#[test]
fn malformed_operations_are_reported() {
    let backwards = [put(1, "k", "a", 10, 5)];
    match run(&backwards) {
        CheckResult::Illegal { key, detail } => {
            assert_eq!(key, b"k");
            assert!(detail.starts_with("malformed history"), "{detail}");
        }
        other => panic!("expected a malformed-history report, got {other}"),
    }
    let get_ok = [op(1, "k", Input::Get, Output::Ok, 0, 1)];
    assert!(run(&get_ok).is_illegal());
    let put_value = [op(
        1,
        "k",
        Input::Put(b"a".to_vec()),
        Output::Value(None),
        0,
        1,
    )];
    assert!(run(&put_value).is_illegal());
    // An unknown outcome's return time is irrelevant, even if before the call.
    assert_ok(&[op(
        1,
        "k",
        Input::Put(b"a".to_vec()),
        Output::Unknown,
        10,
        5,
    )]);
}

#[test]
fn history_builder_records_and_checks() {
    let mut h = History::new();
    assert!(h.is_empty());
    let t0 = h.now();
    let t1 = h.now();
    h.push(put(1, "k", "a", t0, t1));
    let t2 = h.now();
    let t3 = h.now();
    assert!(t0 <= t1 && t1 <= t2 && t2 <= t3);
    h.push(get(2, "k", Some("a"), t2, t3));
    assert_eq!(h.len(), 2);
    assert!(h.check(BUDGET).is_ok());
    h.extend([
        put(1, "k", "b", t3 + 10, t3 + 20),
        get(2, "k", Some("a"), t3 + 30, t3 + 40),
    ]);
    assert!(h.check(BUDGET).is_illegal());
    assert_eq!(h.ops().len(), 4);
    assert_eq!(h.into_ops().len(), 4);
}

// ---------------------------------------------------------------------------------------------
// Randomized histories from a real (sequentially executed) store.

/// splitmix64: small, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

struct Sim {
    seed: u64,
    clients: u64,
    ops_per_client: usize,
    keys: u64,
    /// Idle time between a client's operations: 0..=max_gap.
    max_gap: u64,
    /// Operation latency: 1..=max_latency.
    max_latency: u64,
    /// Chance that an operation's outcome is unknown; half of those take effect anyway,
    /// possibly well after the client gave up.
    unknown_per_mille: u64,
    /// Whether to issue appends (otherwise those become puts).
    appends: bool,
}

/// Generates a history by letting clients issue overlapping operations and executing each at
/// a random instant within its interval against a real map, in instant order. The result is
/// linearizable by construction. Put values ("v<n>") and append arguments ("a<n>") are unique.
fn simulate(sim: &Sim) -> Vec<Operation> {
    struct Planned {
        op: Operation,
        at: u64,
        takes_effect: bool,
    }
    let mut rng = Rng(sim.seed);
    let mut planned = Vec::new();
    let mut serial = 0u64;
    for client in 0..sim.clients {
        let mut t = rng.below(sim.max_gap + 1);
        for _ in 0..sim.ops_per_client {
            serial += 1;
            let call = t;
            let ret = call + 1 + rng.below(sim.max_latency);
            let unknown = rng.chance(sim.unknown_per_mille);
            let takes_effect = !unknown || rng.chance(500);
            let at = if unknown {
                call + rng.below(4 * sim.max_latency)
            } else {
                call + rng.below(ret - call + 1)
            };
            let key = format!("k{}", rng.below(sim.keys));
            let input = match rng.below(100) {
                0..=44 => Input::Get,
                45..=69 => Input::Put(format!("v{serial}").into_bytes()),
                70..=79 => Input::Delete,
                _ if sim.appends => Input::Append(format!("a{serial}").into_bytes()),
                _ => Input::Put(format!("v{serial}").into_bytes()),
            };
            let output = if unknown { Output::Unknown } else { Output::Ok };
            let op = Operation {
                client,
                key: key.into_bytes(),
                input,
                output,
                call,
                ret,
            };
            planned.push(Planned {
                op,
                at,
                takes_effect,
            });
            t = ret + rng.below(sim.max_gap + 1);
        }
    }
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by_key(|&i| (planned[i].at, i));
    let mut store: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for i in order {
        let p = &mut planned[i];
        if !p.takes_effect {
            continue;
        }
        let key = p.op.key.clone();
        match &p.op.input {
            Input::Get => {
                if p.op.output != Output::Unknown {
                    p.op.output = Output::Value(store.get(&key).cloned());
                }
            }
            Input::Put(v) => {
                store.insert(key, v.clone());
            }
            Input::Delete => {
                store.remove(&key);
            }
            Input::Append(a) => store.entry(key).or_default().extend_from_slice(a),
        }
    }
    // Hand the operations over in a scrambled order, as a merged log might.
    let mut ops: Vec<Operation> = planned.into_iter().map(|p| p.op).collect();
    for i in (1..ops.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        ops.swap(i, j);
    }
    ops
}

fn is_known_write(op: &Operation) -> bool {
    op.output == Output::Ok && !matches!(op.input, Input::Get)
}

/// Finds a read `g`, a put `p` and a write `q` on one key, all with known outcomes, with
/// `p` before `q` before `g` in real time; returns (`g`, `p`'s value). Since put values are
/// unique and nothing else can produce a put value, `g` cannot see `p`'s value. Reads are
/// tried in call order from `percent`% of the way through the history.
fn find_stale_candidate(ops: &[Operation], percent: usize) -> Option<(usize, Vec<u8>)> {
    let mut reads: Vec<usize> = (0..ops.len())
        .filter(|&g| matches!(ops[g].output, Output::Value(_)))
        .collect();
    reads.sort_by_key(|&g| ops[g].call);
    for &g in reads.iter().skip(reads.len() * percent / 100) {
        let read = &ops[g];
        let same_key = |o: &&Operation| o.key == read.key;
        let Some(q) = ops
            .iter()
            .filter(same_key)
            .filter(|o| is_known_write(o) && o.ret < read.call)
            .max_by_key(|o| o.call)
        else {
            continue;
        };
        let p = ops
            .iter()
            .filter(same_key)
            .filter(|o| o.output == Output::Ok && o.ret < q.call)
            .filter_map(|o| match &o.input {
                Input::Put(v) => Some((o.ret, v.clone())),
                _ => None,
            })
            .max_by_key(|(ret, _)| *ret);
        if let Some((_, value)) = p {
            return Some((g, value));
        }
    }
    None
}

/// Checks a simulated (hence linearizable) history, then two damaged copies: one read
/// returning a value never written, one read returning a value overwritten before it began.
fn check_simulation_and_tampering(sim: &Sim, stale_at_percent: usize) {
    let seed = sim.seed;
    let ops = simulate(sim);
    let started = Instant::now();
    let result = run(&ops);
    assert!(result.is_ok(), "seed {seed}: {result}");
    eprintln!(
        "seed {seed}: {} ops over {} keys checked in {:?}",
        ops.len(),
        sim.keys,
        started.elapsed()
    );

    let mut tampered = ops.clone();
    let g = tampered
        .iter()
        .position(|o| matches!(o.output, Output::Value(_)))
        .unwrap();
    tampered[g].output = Output::Value(Some(b"tampered".to_vec()));
    let key = String::from_utf8(tampered[g].key.clone()).unwrap();
    let detail = assert_illegal(&tampered, &key);
    assert!(
        detail.contains(&format!("ops[{g}] ")),
        "seed {seed}:\n{detail}"
    );

    let mut stale = ops.clone();
    let (g, old) = find_stale_candidate(&stale, stale_at_percent).unwrap();
    stale[g].output = Output::Value(Some(old));
    let key = String::from_utf8(stale[g].key.clone()).unwrap();
    let started = Instant::now();
    let detail = assert_illegal(&stale, &key);
    assert!(
        detail.contains(&format!("ops[{g}] ")),
        "seed {seed}:\n{detail}"
    );
    eprintln!("seed {seed}: stale read found in {:?}", started.elapsed());
}

#[test]
fn random_concurrent_histories_check_and_tampering_is_caught() {
    for seed in 1..=4 {
        check_simulation_and_tampering(
            &Sim {
                seed,
                clients: 8,
                ops_per_client: 400,
                keys: 3,
                max_gap: 30,
                max_latency: 100,
                unknown_per_mille: 20,
                appends: true,
            },
            60,
        );
    }
}

#[test]
fn random_histories_with_many_unknown_outcomes() {
    for (seed, appends) in [(11, false), (12, true)] {
        check_simulation_and_tampering(
            &Sim {
                seed,
                clients: 6,
                ops_per_client: 500,
                keys: 2,
                max_gap: 50,
                max_latency: 100,
                unknown_per_mille: 150,
                appends,
            },
            50,
        );
    }
}

#[test]
fn random_history_with_sixteen_clients_on_one_key() {
    check_simulation_and_tampering(
        &Sim {
            seed: 21,
            clients: 16,
            ops_per_client: 150,
            keys: 1,
            max_gap: 30,
            max_latency: 100,
            unknown_per_mille: 20,
            appends: true,
        },
        25,
    );
}

#[test]
fn large_mostly_sequential_history_on_one_key() {
    let sim = Sim {
        seed: 42,
        clients: 4,
        ops_per_client: 2_500,
        keys: 1,
        max_gap: 300,
        max_latency: 60,
        unknown_per_mille: 5,
        appends: true,
    };
    let ops = simulate(&sim);
    assert_eq!(ops.len(), 10_000);
    let started = Instant::now();
    let result = run(&ops);
    assert!(result.is_ok(), "{result}");
    eprintln!("10,000 ops on one key checked in {:?}", started.elapsed());

    let mut stale = ops.clone();
    let (g, old) = find_stale_candidate(&stale, 90).unwrap();
    stale[g].output = Output::Value(Some(old));
    let started = Instant::now();
    let detail = assert_illegal(&stale, "k0");
    eprintln!("a stale read among them found in {:?}", started.elapsed());
    assert!(detail.contains(&format!("ops[{g}] ")), "{detail}");
}

#[test]
fn long_strictly_sequential_history_needs_no_recursion() {
    // 30,000 operations, each after the previous: the search goes 30,000 deep.
    let mut ops = Vec::new();
    for i in 0..10_000u64 {
        let t = i * 10;
        let v = format!("v{i}");
        ops.push(put(1, "k", &v, t, t + 1));
        ops.push(get(2, "k", Some(&v), t + 2, t + 3));
        ops.push(append(3, "k", "+", t + 4, t + 5));
    }
    assert_ok(&ops);
    // Break the very last read.
    let last = ops.len() - 2;
    ops[last].output = Output::Value(Some(b"v0".to_vec()));
    let detail = assert_illegal(&ops, "k");
    assert!(detail.contains("29998 of 30000 operations"), "{detail}");
}

/// The definition, executed literally: try every order of the operations that respects real
/// time (an unknown outcome never returns) and the model, per key; operations with an unknown
/// outcome may be left out.
fn brute_force(ops: &[Operation]) -> bool {
    fn ret(o: &Operation) -> u64 {
        if o.output == Output::Unknown {
            u64::MAX
        } else {
            o.ret
        }
    }
    fn search(ops: &[&Operation], placed: &mut [bool], store: &HashMap<Vec<u8>, Vec<u8>>) -> bool {
        let pending = |i: usize| !placed[i] && ops[i].output != Output::Unknown;
        if !(0..ops.len()).any(pending) {
            return true;
        }
        for i in 0..ops.len() {
            let o = ops[i];
            let must_wait = (0..ops.len()).any(|j| !placed[j] && j != i && ret(ops[j]) < o.call);
            if placed[i] || must_wait {
                continue;
            }
            let mut next = store.clone();
            match (&o.input, &o.output) {
                (Input::Get, Output::Value(v)) => {
                    if store.get(&o.key) != v.as_ref() {
                        continue;
                    }
                }
                (Input::Put(v), _) => {
                    next.insert(o.key.clone(), v.clone());
                }
                (Input::Delete, _) => {
                    next.remove(&o.key);
                }
                (Input::Append(a), _) => next.entry(o.key.clone()).or_default().extend(a),
                _ => unreachable!(),
            }
            placed[i] = true;
            if search(ops, placed, &next) {
                return true;
            }
            placed[i] = false;
        }
        false
    }
    let ops: Vec<&Operation> = ops
        .iter()
        .filter(|o| !(o.input == Input::Get && o.output == Output::Unknown))
        .collect();
    search(&ops, &mut vec![false; ops.len()], &HashMap::new())
}

/// A tiny history over one or two keys with few distinct values (so values repeat and
/// coincide), generated like `simulate` and then, half the time, damaged at random.
fn small_random_history(rng: &mut Rng) -> Vec<Operation> {
    const VALUES: [&str; 4] = ["a", "b", "ab", ""];
    let n = 1 + rng.below(7) as usize;
    let keys = 1 + rng.below(2);
    let mut planned: Vec<(Operation, u64, bool)> = Vec::new();
    for client in 0..n as u64 {
        let call = rng.below(20);
        let ret = call + rng.below(10);
        let unknown = rng.chance(200);
        let takes_effect = !unknown || rng.chance(500);
        let at = if unknown {
            call + rng.below(30)
        } else {
            call + rng.below(ret - call + 1)
        };
        let value = VALUES[rng.below(4) as usize].as_bytes().to_vec();
        let input = match rng.below(10) {
            0..=3 => Input::Get,
            4..=6 => Input::Put(value),
            7 => Input::Delete,
            _ => Input::Append(value),
        };
        let output = if unknown { Output::Unknown } else { Output::Ok };
        let key = format!("k{}", rng.below(keys)).into_bytes();
        let op = Operation {
            client,
            key,
            input,
            output,
            call,
            ret,
        };
        planned.push((op, at, takes_effect));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (planned[i].1, i));
    let mut store: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for i in order {
        let (op, _, takes_effect) = &mut planned[i];
        if !*takes_effect {
            continue;
        }
        match &op.input {
            Input::Get => {
                if op.output != Output::Unknown {
                    op.output = Output::Value(store.get(&op.key).cloned());
                }
            }
            Input::Put(v) => {
                store.insert(op.key.clone(), v.clone());
            }
            Input::Delete => {
                store.remove(&op.key);
            }
            Input::Append(a) => store.entry(op.key.clone()).or_default().extend(a),
        }
    }
    let mut ops: Vec<Operation> = planned.into_iter().map(|p| p.0).collect();
    if rng.chance(600) {
        let i = rng.below(n as u64) as usize;
        let reads: Vec<usize> = (0..n).filter(|&j| ops[j].input == Input::Get).collect();
        match rng.below(3) {
            0 if !reads.is_empty() => {
                let seen = ["a", "b", "ab", "ba", "aa", ""][rng.below(6) as usize];
                let seen = (!rng.chance(200)).then(|| seen.as_bytes().to_vec());
                let j = reads[rng.below(reads.len() as u64) as usize];
                ops[j].output = Output::Value(seen);
            }
            0 | 1 => {
                let shift = rng.below(15);
                ops[i].call = ops[i].call.saturating_sub(shift);
                ops[i].ret = ops[i].ret.saturating_sub(shift).max(ops[i].call);
            }
            _ => {
                let shift = rng.below(15);
                ops[i].call += shift;
                ops[i].ret += shift;
            }
        }
    }
    ops
}

#[test]
fn agrees_with_brute_force_on_small_random_histories() {
    let mut rng = Rng(7);
    let (mut ok, mut illegal) = (0, 0);
    for case in 0..20_000 {
        let ops = small_random_history(&mut rng);
        let expected = brute_force(&ops);
        let result = run(&ops);
        assert!(!result.is_timeout(), "case {case}: {result}");
        assert_eq!(
            result.is_ok(),
            expected,
            "case {case}: brute force says {expected}, checker says: {result}\n{ops:#?}"
        );
        if expected {
            ok += 1;
        } else {
            illegal += 1;
        }
    }
    // Both verdicts are well represented.
    assert!(
        ok > 5_000 && illegal > 2_000,
        "{ok} linearizable, {illegal} not"
    );
}

// ---------------------------------------------------------------------------------------------
// Time budget.

/// `n` appends that all overlap, then a read of a value no order produces: the search must
/// try every order before giving up.
fn pathological(n: u64) -> Vec<Operation> {
    let mut ops: Vec<Operation> = (0..n)
        .map(|i| append(i, "hard", &format!("{i},"), 0, 1_000))
        .collect();
    ops.push(get(99, "hard", Some("impossible"), 2_000, 2_001));
    ops.push(put(1, "easy", "a", 0, 1));
    ops
}

#[test]
fn pathological_history_times_out() {
    let ops = pathological(40);
    let started = Instant::now();
    let result = check(&ops, Duration::from_millis(50));
    let elapsed = started.elapsed();
    match &result {
        CheckResult::Timeout { key, detail } => {
            assert_eq!(key, b"hard");
            assert!(detail.contains("41 operations"), "{detail}");
        }
        other => panic!("expected a timeout, got {other}"),
    }
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    // The same shape, small enough to search exhaustively, is decided.
    assert_illegal(&pathological(5), "hard");
}

#[test]
fn illegal_key_wins_over_timed_out_key() {
    let mut ops = pathological(40);
    ops.push(put(1, "zzz", "a", 0, 1));
    ops.push(get(2, "zzz", Some("b"), 2, 3));
    match check(&ops, Duration::from_millis(50)) {
        CheckResult::Illegal { key, .. } => assert_eq!(key, b"zzz"),
        other => panic!("expected Illegal for zzz, got {other}"),
    }
}
