//! Model test: random batches (appends incl. conflicting overwrites and gaps, state
//! puts/deletes, compact_to, stream removal; some streams' entries kept out of the entry
//! cache), purges and reopens against the oracle.

mod common;

use common::*;
use proptest::prelude::*;

fn item() -> impl Strategy<Value = GenItem> {
    let s = 0u64..MODEL_STREAMS;
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_oracle(steps in prop::collection::vec(step(), 1..40), direct in any::<bool>()) {
        let r = run_model(&steps, direct);
        prop_assert!(r.is_ok(), "{:?}", r);
    }
}
