//! Model test: random batches (appends incl. conflicting overwrites and gaps, state
//! puts/deletes, compact_to, stream removal; some streams' entries kept out of the entry
//! cache), purges and reopens against the oracle.

mod common;

use common::*;
use pontoon_raftlog::fault::MemFs;
use pontoon_raftlog::Entry;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum GenItem {
    /// stream, offset from last+1 (negative = conflicting overwrite), count, term bump
    Append(u64, i8, u8, u8),
    Put(u64, u8, u8),
    Delete(u64, u8),
    /// stream, offset from the first index
    Compact(u64, u8),
    Remove(u64),
}

#[derive(Debug, Clone)]
enum Step {
    /// Items, synced, and a bit mask of the streams whose entries skip the entry cache.
    Write(Vec<GenItem>, bool, u8),
    Purge,
    Reopen,
    Crash,
}

fn item() -> impl Strategy<Value = GenItem> {
    let s = 0u64..4;
    prop_oneof![
        6 => (s.clone(), -3i8..=1, 1u8..6, 0u8..2).prop_map(|(s, d, n, t)| GenItem::Append(s, d, n, t)),
        2 => (s.clone(), 0u8..3, any::<u8>()).prop_map(|(s, k, v)| GenItem::Put(s, k, v)),
        1 => (s.clone(), 0u8..3).prop_map(|(s, k)| GenItem::Delete(s, k)),
        2 => (s.clone(), 0u8..8).prop_map(|(s, k)| GenItem::Compact(s, k)),
        1 => s.prop_map(GenItem::Remove),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (prop::collection::vec(item(), 1..5), any::<bool>(), 0u8..16).prop_map(|(i, s, k)| Step::Write(i, s, k)),
        2 => Just(Step::Purge),
        1 => Just(Step::Reopen),
        1 => Just(Step::Crash),
    ]
}

/// Turns generated items into concrete ones against the oracle's current state.
fn concretize(oracle: &Oracle, items: &[GenItem], term: &mut u64, tag: &mut u8) -> Vec<Item> {
    let mut shadow = oracle.clone();
    let mut out = Vec::new();
    for it in items {
        let concrete = match *it {
            GenItem::Append(s, d, n, t) => {
                *term += u64::from(t);
                *tag = tag.wrapping_add(1);
                let next = shadow.last(s).map_or(1, |l| l + 1);
                let first = (next as i64 + i64::from(d)).max(1) as u64;
                let es: Vec<Entry> = (first..first + u64::from(n))
                    .map(|i| Entry {
                        index: i,
                        term: *term,
                        data: vec![*tag; (i % 5 * 37) as usize],
                    })
                    .collect();
                Item::Append(s, es)
            }
            GenItem::Put(s, k, v) => Item::Put(s, vec![k], vec![v; 3]),
            GenItem::Delete(s, k) => Item::Delete(s, vec![k]),
            GenItem::Compact(s, k) => {
                let first = shadow.streams.get(&s).map_or(1, |st| st.first);
                Item::Compact(s, first + u64::from(k))
            }
            GenItem::Remove(s) => Item::Remove(s),
        };
        shadow.apply(std::slice::from_ref(&concrete));
        out.push(concrete);
    }
    out
}

fn keys() -> Vec<Vec<u8>> {
    (0u8..3).map(|k| vec![k]).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_oracle(steps in prop::collection::vec(step(), 1..40), direct in any::<bool>()) {
        let mut fs = MemFs::new();
        // Block-aligned unbuffered writes (the real-file default) or buffered ones.
        fs.set_direct(direct);
        let cfg = small_config();
        let mut store = open_mem(&fs, &cfg).unwrap();
        let mut oracle = Oracle::default();
        // What is durable: the oracle as of the last synced write.
        let mut durable = Oracle::default();
        let (mut term, mut tag) = (1u64, 0u8);
        for st in steps {
            match st {
                Step::Write(items, sync, skip) => {
                    let items = concretize(&oracle, &items, &mut term, &mut tag);
                    let mut batch = Oracle::batch(&items);
                    for s in (0..4u64).filter(|s| skip & (1 << s) != 0) {
                        batch.skip_cache(s);
                    }
                    store.write(batch, sync).unwrap();
                    oracle.apply(&items);
                    if sync {
                        durable = oracle.clone();
                    }
                }
                Step::Purge => {
                    store.purge().unwrap();
                    // A purge syncs its rewrite, which makes earlier writes durable too
                    // only if it wrote something; the check below allows both.
                }
                Step::Reopen => {
                    drop(store);
                    store = open_mem(&fs, &cfg).unwrap();
                    durable = oracle.clone();
                }
                Step::Crash => {
                    drop(store);
                    fs = fs.crash();
                    store = open_mem(&fs, &cfg).unwrap();
                    // Unsynced writes may or may not have survived (whole batches only):
                    // the store must match the durable state or the latest one; resync
                    // the oracle to what the store holds.
                    if oracle.matches(&store, &keys()).is_ok() {
                        durable = oracle.clone();
                    } else {
                        let r = durable.matches(&store, &keys());
                        prop_assert!(r.is_ok(), "after crash: {:?}", r);
                        oracle = durable.clone();
                    }
                }
            }
            let r = oracle.matches(&store, &keys());
            prop_assert!(r.is_ok(), "{:?}", r);
        }
        drop(store);
        let store = open_mem(&fs, &cfg).unwrap();
        let r = oracle.matches(&store, &keys());
        prop_assert!(r.is_ok(), "final reopen: {:?}", r);
    }
}
