//! Feeds arbitrary bytes to the SSTable reader as a table file. Opening, iterating in both
//! directions and point lookups must return `Ok` or `Err`, never panic.

#![no_main]

use std::path::PathBuf;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pontoon_engine::key;
use pontoon_engine::sstable::{BytesFile, Table, TableIter};

fuzz_target!(|data: &[u8]| {
    let file = Arc::new(BytesFile(data.to_vec()));
    let Ok(table) = Table::open(file, PathBuf::from("fuzz.sst")) else {
        return;
    };
    let table = Arc::new(table);
    let _ = table.properties();
    let _ = table.range_tombstones();

    // Forward, remembering a few user keys to look up.
    let mut probes: Vec<Vec<u8>> = vec![Vec::new(), b"a".to_vec()];
    let mut it = TableIter::new(Arc::clone(&table));
    let mut steps = 0;
    let mut r = it.seek_to_first();
    while r.is_ok() && it.valid() && steps < 10_000 {
        if probes.len() < 16 {
            probes.push(key::user_key(it.key()).to_vec());
        }
        let _ = it.value();
        r = it.next();
        steps += 1;
    }

    // Backward.
    steps = 0;
    let mut r = it.seek_to_last();
    while r.is_ok() && it.valid() && steps < 10_000 {
        let _ = (it.key(), it.value());
        r = it.prev();
        steps += 1;
    }

    for uk in &probes {
        let _ = table.may_contain(uk);
        for seq in [0, 1, key::MAX_SEQ, u64::MAX] {
            let _ = table.get(uk, seq);
        }
        let target = key::seek_key(uk, key::MAX_SEQ);
        if it.seek(&target).is_ok() && it.valid() {
            let _ = it.next();
            let _ = it.prev();
        }
        if it.seek_for_prev(&target).is_ok() && it.valid() {
            let _ = it.prev();
            let _ = it.next();
        }
    }
});
