//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use pontoon_raftlog::fault::MemFs;
use pontoon_raftlog::{Config, Entry, LogStore};

/// A small-segment config so tests rotate often.
pub fn small_config() -> Config {
    Config {
        target_file_size: 4096,
        cache_capacity_bytes: 2048,
        purge_rewrite_lag_files: 1,
        ..Config::default()
    }
}

pub fn dir() -> &'static Path {
    Path::new("/log")
}

pub fn open_mem(fs: &MemFs, cfg: &Config) -> pontoon_raftlog::Result<LogStore> {
    LogStore::open_with_fs(dir(), cfg.clone(), Arc::new(fs.clone()))
}

pub fn entries(first: u64, n: u64, term: u64, tag: u8) -> Vec<Entry> {
    (first..first + n)
        .map(|i| Entry {
            index: i,
            term,
            data: vec![tag; (i % 7) as usize * 5 + 1],
        })
        .collect()
}

use std::collections::BTreeMap;

/// One stream of the oracle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OStream {
    pub first: u64,
    pub entries: Vec<(u64, Vec<u8>)>,
    pub states: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// An item of a batch, as the model tests generate them.
#[derive(Debug, Clone)]
pub enum Item {
    Append(u64, Vec<Entry>),
    Put(u64, Vec<u8>, Vec<u8>),
    Delete(u64, Vec<u8>),
    Compact(u64, u64),
    Remove(u64),
}

/// The in-memory oracle: the documented semantics of a `LogBatch`, written plainly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Oracle {
    pub streams: BTreeMap<u64, OStream>,
}

impl Oracle {
    pub fn apply(&mut self, items: &[Item]) {
        for it in items {
            match it {
                Item::Append(s, es) => {
                    let Some(f) = es.first() else { continue };
                    let st = self.streams.entry(*s).or_insert_with(|| OStream {
                        first: f.index,
                        ..Default::default()
                    });
                    let next = st.first + st.entries.len() as u64;
                    if f.index < st.first || f.index > next {
                        st.entries.clear();
                        st.first = f.index;
                    } else {
                        st.entries.truncate((f.index - st.first) as usize);
                    }
                    st.entries
                        .extend(es.iter().map(|e| (e.term, e.data.clone())));
                }
                Item::Put(s, k, v) => {
                    let st = self.streams.entry(*s).or_insert_with(|| OStream {
                        first: 1,
                        ..Default::default()
                    });
                    st.states.insert(k.clone(), v.clone());
                }
                Item::Delete(s, k) => {
                    let st = self.streams.entry(*s).or_insert_with(|| OStream {
                        first: 1,
                        ..Default::default()
                    });
                    st.states.remove(k);
                }
                Item::Compact(s, i) => {
                    let st = self.streams.entry(*s).or_insert_with(|| OStream {
                        first: (*i).max(1),
                        ..Default::default()
                    });
                    let next = st.first + st.entries.len() as u64;
                    if *i >= next {
                        st.entries.clear();
                        st.first = *i;
                    } else if *i > st.first {
                        st.entries.drain(..(*i - st.first) as usize);
                        st.first = *i;
                    }
                }
                Item::Remove(s) => {
                    self.streams.remove(s);
                }
            }
        }
    }

    pub fn batch(items: &[Item]) -> pontoon_raftlog::LogBatch {
        let mut b = pontoon_raftlog::LogBatch::new();
        for it in items {
            match it {
                Item::Append(s, es) => b.add_entries(*s, es).unwrap(),
                Item::Put(s, k, v) => b.put_state(*s, k, v).unwrap(),
                Item::Delete(s, k) => b.delete_state(*s, k).unwrap(),
                Item::Compact(s, i) => b.compact_to(*s, *i),
                Item::Remove(s) => b.remove_stream(*s),
            }
        }
        b
    }

    pub fn last(&self, s: u64) -> Option<u64> {
        self.streams
            .get(&s)
            .map(|st| st.first + st.entries.len() as u64 - 1)
    }

    /// Whether `store` holds exactly this state (state keys checked: those in the
    /// oracle plus `extra_keys`).
    pub fn matches(&self, store: &LogStore, extra_keys: &[Vec<u8>]) -> Result<(), String> {
        let ids: Vec<u64> = self.streams.keys().copied().collect();
        if store.streams() != ids {
            return Err(format!("streams {:?} != {:?}", store.streams(), ids));
        }
        for (id, st) in &self.streams {
            let last = st.first + st.entries.len() as u64 - 1;
            if store.first_index(*id) != Some(st.first) || store.last_index(*id) != Some(last) {
                return Err(format!(
                    "stream {id}: first/last {:?}/{:?} != {}/{}",
                    store.first_index(*id),
                    store.last_index(*id),
                    st.first,
                    last
                ));
            }
            if !st.entries.is_empty() {
                let got = store
                    .entries(*id, st.first, last + 1, u64::MAX)
                    .map_err(|e| format!("stream {id}: {e}"))?;
                let want: Vec<Entry> = st
                    .entries
                    .iter()
                    .enumerate()
                    .map(|(i, (t, d))| Entry {
                        index: st.first + i as u64,
                        term: *t,
                        data: d.clone(),
                    })
                    .collect();
                if got != want {
                    return Err(format!("stream {id}: entries differ"));
                }
                for e in &want {
                    if store.term(*id, e.index).ok() != Some(e.term) {
                        return Err(format!("stream {id}: term of {}", e.index));
                    }
                }
            }
            for k in st.states.keys().chain(extra_keys.iter()) {
                if store.get_state(*id, k) != st.states.get(k).cloned() {
                    return Err(format!("stream {id}: state {k:?} differs"));
                }
            }
        }
        Ok(())
    }
}

/// A generated batch item, before it is made concrete against the oracle's state (see
/// [`concretize`]); the model test generates these with proptest, the `raftlog_ops` fuzz
/// target from the fuzzer's bytes.
#[derive(Debug, Clone)]
pub enum GenItem {
    /// stream, offset from last+1 (negative = conflicting overwrite), count, term bump
    Append(u64, i8, u8, u8),
    Put(u64, u8, u8),
    Delete(u64, u8),
    /// stream, offset from the first index
    Compact(u64, u8),
    Remove(u64),
}

/// One step of a model run.
#[derive(Debug, Clone)]
pub enum Step {
    /// Items, synced, and a bit mask of the streams whose entries skip the entry cache.
    Write(Vec<GenItem>, bool, u8),
    Purge,
    Reopen,
    Crash,
}

/// Streams the model runs use (`0..MODEL_STREAMS`) and the state keys they check.
pub const MODEL_STREAMS: u64 = 4;

pub fn model_keys() -> Vec<Vec<u8>> {
    (0u8..3).map(|k| vec![k]).collect()
}

/// Turns generated items into concrete ones against the oracle's current state.
pub fn concretize(oracle: &Oracle, items: &[GenItem], term: &mut u64, tag: &mut u8) -> Vec<Item> {
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

/// Runs `steps` against a store on the in-memory file system (block-aligned unbuffered
/// writes if `direct`, the real-file default, else buffered ones) and the oracle, and
/// checks after every step, and after a final reopen, that the store holds exactly the
/// oracle's state. After a crash the store must hold the state of the last synced write or
/// the latest one (unsynced batches survive whole or not at all).
pub fn run_model(steps: &[Step], direct: bool) -> Result<(), String> {
    let mut fs = MemFs::new();
    fs.set_direct(direct);
    let cfg = small_config();
    let open = |fs: &MemFs| open_mem(fs, &cfg).map_err(|e| format!("open: {e}"));
    let mut store = open(&fs)?;
    let mut oracle = Oracle::default();
    // What is durable: the oracle as of the last synced write.
    let mut durable = Oracle::default();
    let (mut term, mut tag) = (1u64, 0u8);
    for (i, st) in steps.iter().enumerate() {
        match st {
            Step::Write(items, sync, skip) => {
                let items = concretize(&oracle, items, &mut term, &mut tag);
                let mut batch = Oracle::batch(&items);
                for s in (0..MODEL_STREAMS).filter(|s| skip & (1 << s) != 0) {
                    batch.skip_cache(s);
                }
                store
                    .write(batch, *sync)
                    .map_err(|e| format!("step {i}: write: {e}"))?;
                oracle.apply(&items);
                if *sync {
                    durable = oracle.clone();
                }
            }
            Step::Purge => {
                // A purge syncs its rewrite, which makes earlier writes durable too only if
                // it wrote something; the crash check allows both.
                store.purge().map_err(|e| format!("step {i}: purge: {e}"))?;
            }
            Step::Reopen => {
                drop(store);
                store = open(&fs)?;
                durable = oracle.clone();
            }
            Step::Crash => {
                drop(store);
                fs = fs.crash();
                store = open(&fs)?;
                // Resync the oracle to what the store holds.
                if oracle.matches(&store, &model_keys()).is_ok() {
                    durable = oracle.clone();
                } else {
                    durable
                        .matches(&store, &model_keys())
                        .map_err(|e| format!("step {i}: after crash: {e}"))?;
                    oracle = durable.clone();
                }
            }
        }
        oracle
            .matches(&store, &model_keys())
            .map_err(|e| format!("step {i} ({st:?}): {e}"))?;
    }
    drop(store);
    let store = open(&fs)?;
    oracle
        .matches(&store, &model_keys())
        .map_err(|e| format!("final reopen: {e}"))
}
