//! etcd's data model on top of the engine: every key carries `create_revision`,
//! `mod_revision`, `version` and `lease`; each region keeps a store revision that every
//! applied, data-changing command bumps by exactly one.
//!
//! Rules (etcd 3.4, see `../shared/ETCD_SEMANTICS.md`): a fresh region is at revision 1; a
//! put bumps it and sets `mod_revision`, creating a new generation (`create_revision` =
//! revision, `version` = 1) if the key did not exist, else `version + 1`; a delete-range that
//! removes at least one key bumps it once for all keys; one that matches nothing, and every
//! read, leaves it alone.
//!
//! Layout in the engine: a key's value in its column family is
//! `create_revision i64 | mod_revision i64 | version i64 | lease i64 | value` (all
//! little-endian); the region's [`ApplyState`] lives in the `raft` column family under
//! `apply/<region id, big-endian>` and is written in the same batch as the data it covers, so
//! a crash can never separate the two.

use pontoon_engine::{Engine, IterOptions, WriteBatch};

/// Column family holding apply states.
pub const RAFT_CF: &str = "raft";
const META_LEN: usize = 32;

/// Errors of the data model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] pontoon_engine::Error),
    /// A stored value is too short to hold its metadata.
    #[error("stored value of key {key:?} is corrupt: {reason}")]
    Corrupt {
        /// The key (lossy UTF-8).
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The request is malformed (etcd's InvalidArgument).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// A key with etcd's metadata (`mvccpb.KeyValue`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// Revision of the put that created the current generation.
    pub create_revision: i64,
    /// Revision of the last put.
    pub mod_revision: i64,
    /// 1 at creation, +1 per put.
    pub version: i64,
    /// The value (empty with `keys_only`).
    pub value: Vec<u8>,
    /// Lease id (0 = none).
    pub lease: i64,
}

/// What a region has applied: persisted with every applied command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyState {
    /// Index of the last applied raft entry.
    pub applied_index: u64,
    /// Term of that entry.
    pub applied_term: u64,
    /// The region's store revision (1 for a fresh region).
    pub revision: i64,
}

impl Default for ApplyState {
    fn default() -> Self {
        ApplyState {
            applied_index: 0,
            applied_term: 0,
            revision: 1,
        }
    }
}

fn apply_key(region: u64) -> Vec<u8> {
    let mut k = b"apply/".to_vec();
    k.extend_from_slice(&region.to_be_bytes());
    k
}

impl ApplyState {
    /// Loads the state of `region` (the default state if none was written).
    pub fn load(engine: &Engine, region: u64) -> Result<ApplyState> {
        match engine.get(RAFT_CF, &apply_key(region))? {
            None => Ok(ApplyState::default()),
            Some(b) if b.len() == 24 => {
                let u = |i: usize| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&b[i..i + 8]);
                    u64::from_le_bytes(a)
                };
                Ok(ApplyState {
                    applied_index: u(0),
                    applied_term: u(8),
                    revision: u(16) as i64,
                })
            }
            Some(_) => Err(Error::Corrupt {
                key: format!("apply/{region}"),
                reason: "apply state is not 24 bytes",
            }),
        }
    }

    /// Stages the state into `batch`.
    pub fn stage(&self, batch: &mut WriteBatch, region: u64) {
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(&self.applied_index.to_le_bytes());
        b.extend_from_slice(&self.applied_term.to_le_bytes());
        b.extend_from_slice(&(self.revision as u64).to_le_bytes());
        batch.put(RAFT_CF, &apply_key(region), &b);
    }
}

fn encode_value(kv: &KeyValue) -> Vec<u8> {
    let mut b = Vec::with_capacity(META_LEN + kv.value.len());
    for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
        b.extend_from_slice(&n.to_le_bytes());
    }
    b.extend_from_slice(&kv.value);
    b
}

fn decode_value(key: &[u8], stored: &[u8], keys_only: bool) -> Result<KeyValue> {
    if stored.len() < META_LEN {
        return Err(Error::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "shorter than its metadata",
        });
    }
    let n = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&stored[i * 8..i * 8 + 8]);
        i64::from_le_bytes(a)
    };
    Ok(KeyValue {
        key: key.to_vec(),
        create_revision: n(0),
        mod_revision: n(1),
        version: n(2),
        lease: n(3),
        value: if keys_only {
            Vec::new()
        } else {
            stored[META_LEN..].to_vec()
        },
    })
}

/// Reads one key with its metadata.
pub fn get(engine: &Engine, cf: &str, key: &[u8]) -> Result<Option<KeyValue>> {
    match engine.get(cf, key)? {
        Some(v) => Ok(Some(decode_value(key, &v, false)?)),
        None => Ok(None),
    }
}

/// Applies a put at the next revision; returns the previous pair if there was one.
pub fn put(
    engine: &Engine,
    state: &mut ApplyState,
    batch: &mut WriteBatch,
    cf: &str,
    key: &[u8],
    value: &[u8],
    lease: i64,
) -> Result<Option<KeyValue>> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("key is not provided"));
    }
    let prev = get(engine, cf, key)?;
    state.revision += 1;
    let kv = KeyValue {
        key: key.to_vec(),
        create_revision: prev.as_ref().map_or(state.revision, |p| p.create_revision),
        mod_revision: state.revision,
        version: prev.as_ref().map_or(1, |p| p.version + 1),
        value: value.to_vec(),
        lease,
    };
    batch.put(cf, key, &encode_value(&kv));
    Ok(prev)
}

/// The end of a range request as etcd reads it: `None` = just `key`; `Some("\0")` = every
/// key from `key` on.
fn range_bounds(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    if range_end.is_empty() {
        let mut end = key.to_vec();
        end.push(0);
        (key.to_vec(), Some(end))
    } else if range_end == [0] {
        (key.to_vec(), None)
    } else {
        (key.to_vec(), Some(range_end.to_vec()))
    }
}

/// Applies a delete of `[key, range_end)` (etcd's range_end rules). Bumps the revision once
/// if anything was deleted; returns the deleted pairs.
pub fn delete_range(
    engine: &Engine,
    state: &mut ApplyState,
    batch: &mut WriteBatch,
    cf: &str,
    key: &[u8],
    range_end: &[u8],
) -> Result<Vec<KeyValue>> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("key is not provided"));
    }
    let found = range(engine, cf, key, range_end, 0, false)?.kvs;
    if found.is_empty() {
        return Ok(found);
    }
    state.revision += 1;
    for kv in &found {
        batch.delete(cf, &kv.key);
    }
    Ok(found)
}

/// Result of a range read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeResult {
    /// The pairs (at most `limit`).
    pub kvs: Vec<KeyValue>,
    /// More pairs exist past `limit`.
    pub more: bool,
    /// Pairs in the whole range, whatever the limit.
    pub count: i64,
}

/// Reads `[key, range_end)` (etcd's rules); `limit` 0 means no limit.
pub fn range(
    engine: &Engine,
    cf: &str,
    key: &[u8],
    range_end: &[u8],
    limit: usize,
    keys_only: bool,
) -> Result<RangeResult> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("key is not provided"));
    }
    let (lo, hi) = range_bounds(key, range_end);
    let opts = IterOptions {
        lower_bound: Some(lo),
        upper_bound: hi,
        reverse: false,
    };
    let mut out = RangeResult::default();
    for item in engine.iter(cf, opts)? {
        let (k, v) = item?;
        out.count += 1;
        if limit == 0 || out.kvs.len() < limit {
            out.kvs.push(decode_value(&k, &v, keys_only)?);
        } else {
            out.more = true;
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use pontoon_engine::Options;

    struct Region {
        engine: Engine,
        state: ApplyState,
    }

    impl Region {
        fn write(&mut self, f: impl FnOnce(&Engine, &mut ApplyState, &mut WriteBatch)) -> i64 {
            let mut b = WriteBatch::new();
            let before = self.state.revision;
            f(&self.engine, &mut self.state, &mut b);
            self.state.applied_index += 1;
            self.state.stage(&mut b, 1);
            self.engine.write(&b).unwrap();
            assert!(
                self.state.revision - before <= 1,
                "one command bumps at most once"
            );
            self.state.revision
        }
        fn meta(&self, key: &str) -> Option<(i64, i64, i64, Vec<u8>)> {
            get(&self.engine, "default", key.as_bytes())
                .unwrap()
                .map(|kv| (kv.create_revision, kv.mod_revision, kv.version, kv.value))
        }
    }

    /// The observed etcd 3.4 transcript (ETCD_SEMANTICS.md §2.3), step by step.
    #[test]
    fn etcd_transcript() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), Options::default()).unwrap();
        let mut r = Region {
            state: ApplyState::load(&engine, 1).unwrap(),
            engine,
        };
        assert_eq!(r.state.revision, 1, "a fresh store is at revision 1");
        let set = |k: &'static str, v: &'static str| {
            move |e: &Engine, s: &mut ApplyState, b: &mut WriteBatch| {
                put(e, s, b, "default", k.as_bytes(), v.as_bytes(), 0).unwrap();
            }
        };
        assert_eq!(r.write(set("foo", "bar")), 2);
        assert_eq!(r.meta("foo"), Some((2, 2, 1, b"bar".to_vec())));
        assert_eq!(r.write(set("foo", "bar2")), 3);
        assert_eq!(r.meta("foo"), Some((2, 3, 2, b"bar2".to_vec())));
        let mut prev = None;
        assert_eq!(
            r.write(|e, s, b| prev = put(e, s, b, "default", b"foo", b"bar3", 0).unwrap()),
            4
        );
        let prev = prev.unwrap();
        assert_eq!(
            (prev.create_revision, prev.mod_revision, prev.version),
            (2, 3, 2)
        );
        assert_eq!(prev.value, b"bar2");
        assert_eq!(r.write(set("foo", "bar4")), 5);
        assert_eq!(r.write(set("foo", "bar4")), 6);
        let mut deleted = Vec::new();
        assert_eq!(
            r.write(|e, s, b| deleted = delete_range(e, s, b, "default", b"foo", b"").unwrap()),
            7
        );
        assert_eq!(deleted.len(), 1);
        assert_eq!(
            (
                deleted[0].create_revision,
                deleted[0].mod_revision,
                deleted[0].version
            ),
            (2, 6, 5)
        );
        assert_eq!(r.meta("foo"), None);
        // Deleting nothing does not bump the revision.
        assert_eq!(
            r.write(
                |e, s, b| assert!(delete_range(e, s, b, "default", b"foo", b"")
                    .unwrap()
                    .is_empty())
            ),
            7
        );
        assert_eq!(r.write(set("foo", "bar5")), 8);
        assert_eq!(
            r.meta("foo"),
            Some((8, 8, 1, b"bar5".to_vec())),
            "a new generation"
        );
        assert_eq!(r.write(set("foo", "bar5")), 9);
        assert_eq!(
            r.meta("foo"),
            Some((8, 9, 2, b"bar5".to_vec())),
            "the same value still bumps"
        );
        // Ranges, limits and counts.
        r.write(set("a1", "x"));
        r.write(set("a2", "y"));
        r.write(set("a3", "z"));
        let res = range(&r.engine, "default", b"a", b"b", 2, false).unwrap();
        assert_eq!((res.kvs.len(), res.more, res.count), (2, true, 3));
        let all = range(&r.engine, "default", b"a", &[0], 0, true).unwrap();
        assert_eq!(all.count, 4);
        assert!(all.kvs.iter().all(|kv| kv.value.is_empty()));
        assert_eq!(
            r.write(|e, s, b| assert_eq!(
                delete_range(e, s, b, "default", b"a", b"b").unwrap().len(),
                3
            )),
            13,
            "one revision for a multi-key delete"
        );
        // The apply state survives a restart with the data.
        let dir_path = dir.path().to_path_buf();
        let state = r.state;
        r.engine.close().unwrap();
        let engine = Engine::open(&dir_path, Options::default()).unwrap();
        assert_eq!(ApplyState::load(&engine, 1).unwrap(), state);
        assert!(matches!(
            range(&engine, "default", b"", b"", 0, false),
            Err(Error::InvalidArgument(_))
        ));
    }
}
