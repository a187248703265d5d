//! Model-based fuzzing of the raft log (the fuzzer's version of `raftlog/tests/model.rs`,
//! sharing its oracle and driver): up to 48 steps of batches over four streams (appends,
//! including conflicting overwrites and gaps, state puts and deletes, `compact_to`, stream
//! removal, some streams' entries kept out of the entry cache), synced or not, purges, clean
//! reopens and power cuts, on the in-memory file system with tiny segments and a tiny entry
//! cache. After every step the store must hold exactly the oracle's state; any difference,
//! error or panic is a finding.
#![no_main]

#[path = "../../raftlog/tests/common/mod.rs"]
mod common;

use arbitrary::Arbitrary;
use common::{run_model, GenItem, Step, MODEL_STREAMS};
use libfuzzer_sys::fuzz_target;

const MAX_STEPS: usize = 48;
const MAX_ITEMS: usize = 6;

#[derive(Debug, Arbitrary)]
enum FuzzItem {
    /// stream, offset from the next index (clamped to -3..=1), count (1..=8), term bump
    Append(u8, i8, u8, bool),
    Put(u8, u8, u8),
    Delete(u8, u8),
    /// stream, offset from the first index (0..8)
    Compact(u8, u8),
    Remove(u8),
}

#[derive(Debug, Arbitrary)]
enum FuzzStep {
    Write(Vec<FuzzItem>, bool, u8),
    Purge,
    Reopen,
    Crash,
}

fn stream(s: u8) -> u64 {
    u64::from(s) % MODEL_STREAMS
}

fn item(it: &FuzzItem) -> GenItem {
    match *it {
        FuzzItem::Append(s, d, n, t) => {
            GenItem::Append(stream(s), d.clamp(-3, 1), n % 8 + 1, u8::from(t))
        }
        FuzzItem::Put(s, k, v) => GenItem::Put(stream(s), k % 3, v),
        FuzzItem::Delete(s, k) => GenItem::Delete(stream(s), k % 3),
        FuzzItem::Compact(s, k) => GenItem::Compact(stream(s), k % 8),
        FuzzItem::Remove(s) => GenItem::Remove(stream(s)),
    }
}

fuzz_target!(|input: (bool, Vec<FuzzStep>)| {
    let (direct, steps) = input;
    let steps: Vec<Step> = steps
        .iter()
        .take(MAX_STEPS)
        .filter_map(|st| match st {
            FuzzStep::Write(items, sync, skip) if !items.is_empty() => Some(Step::Write(
                items.iter().take(MAX_ITEMS).map(item).collect(),
                *sync,
                *skip,
            )),
            FuzzStep::Write(..) => None,
            FuzzStep::Purge => Some(Step::Purge),
            FuzzStep::Reopen => Some(Step::Reopen),
            FuzzStep::Crash => Some(Step::Crash),
        })
        .collect();
    if let Err(e) = run_model(&steps, direct) {
        panic!("the raft log differs from its model: {e}\nsteps: {steps:#?}");
    }
});
