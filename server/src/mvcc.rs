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

use std::collections::BTreeMap;
use std::ops::Bound;

use pontoon_engine::{Engine, IterOptions, Snapshot, WriteBatch};

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
    let mut k = Vec::with_capacity(14);
    k.extend_from_slice(b"apply/");
    k.extend_from_slice(&region.to_be_bytes());
    k
}

impl ApplyState {
    /// Loads the state of `region` (the default state if none was written).
    pub fn load(engine: &Engine, region: u64) -> Result<ApplyState> {
        Self::decode(region, engine.get(RAFT_CF, &apply_key(region))?)
    }

    /// Loads the state of `region` as of `snap`, so that it describes exactly the data the
    /// same snapshot reads (a region snapshot needs the two to agree).
    pub fn load_at(snap: &Snapshot, region: u64) -> Result<ApplyState> {
        Self::decode(region, snap.get(RAFT_CF, &apply_key(region))?)
    }

    fn decode(region: u64, stored: Option<Vec<u8>>) -> Result<ApplyState> {
        match stored {
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

    /// Stages the state into `batch`, as an in-place put: every apply of every region
    /// rewrites its state, and the memtable keeps one slot per region instead of a version
    /// per apply (with 64 busy regions, about one skiplist insert in two was an apply state).
    pub fn stage(&self, batch: &mut WriteBatch, region: u64) {
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(&self.applied_index.to_le_bytes());
        b.extend_from_slice(&self.applied_term.to_le_bytes());
        b.extend_from_slice(&(self.revision as u64).to_le_bytes());
        batch.put_in_place_owned(RAFT_CF, apply_key(region), b);
    }
}

/// A key's stored value: its metadata, then the value.
fn encode_parts(create: i64, modified: i64, version: i64, lease: i64, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(META_LEN + value.len());
    for n in [create, modified, version, lease] {
        b.extend_from_slice(&n.to_le_bytes());
    }
    b.extend_from_slice(value);
    b
}

/// The metadata of a stored value: `[create_revision, mod_revision, version, lease]`.
fn decode_meta_fields(key: &[u8], stored: &[u8]) -> Result<[i64; 4]> {
    let Some(meta) = stored.get(..META_LEN) else {
        return Err(Error::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "shorter than its metadata",
        });
    };
    let mut fields = [0i64; 4];
    for (f, b) in fields.iter_mut().zip(meta.chunks_exact(8)) {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        *f = i64::from_le_bytes(a);
    }
    Ok(fields)
}

/// `(create_revision, version)` of a stored value.
fn decode_meta(key: &[u8], stored: &[u8]) -> Result<(i64, i64)> {
    decode_meta_fields(key, stored).map(|[create, _, version, _]| (create, version))
}

fn decode_value(key: &[u8], stored: &[u8], keys_only: bool) -> Result<KeyValue> {
    let [create_revision, mod_revision, version, lease] = decode_meta_fields(key, stored)?;
    Ok(KeyValue {
        key: key.to_vec(),
        create_revision,
        mod_revision,
        version,
        lease,
        value: if keys_only {
            Vec::new()
        } else {
            stored.get(META_LEN..).unwrap_or_default().to_vec()
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

/// One write of a command, borrowing from the decoded command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// Set `key` to `value` (with `lease`, 0 for none).
    Put {
        /// Column family.
        cf: &'a str,
        /// Key (not empty).
        key: &'a [u8],
        /// Value.
        value: &'a [u8],
        /// Lease id.
        lease: i64,
        /// Return the pair it replaces (etcd's `prev_kv`); without it the put reads only
        /// the previous version's metadata.
        prev_kv: bool,
    },
    /// Delete `[key, range_end)` with etcd's range_end rules (empty = just `key`,
    /// `"\0"` = every key from `key` on).
    DeleteRange {
        /// Column family.
        cf: &'a str,
        /// First key (not empty).
        key: &'a [u8],
        /// End of the range.
        range_end: &'a [u8],
    },
}

/// What one [`Op`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// A put; the pair it replaced, if any and if the put asked for it (`prev_kv`).
    Put(Option<KeyValue>),
    /// A delete; the pairs it removed.
    Deleted(Vec<KeyValue>),
}

/// The writes of several commands, staged for one engine write. A region applies all the
/// commands committed in one round into one `Pending` and writes it with its apply state as
/// ONE batch: one engine write and one apply-state record per round instead of one per
/// command, and still no crash can separate the data from the apply state that covers it.
/// Each command reads what the earlier ones staged (the previous value of a put, the keys a
/// delete removes), so the result is exactly that of writing them one by one.
///
/// Staged writes live in the overlay alone until the batch is taken: then each key's
/// latest staged version moves into the batch, in key order, without a copy (a put's key
/// and encoded value used to be copied into the batch as well, two allocations per put).
#[derive(Default)]
pub struct Pending {
    /// Records written directly ([`Pending::batch_mut`]); the overlay's versions join them
    /// when the batch is taken.
    batch: WriteBatch,
    /// Latest staged version of every key written, by column family.
    staged: Vec<(String, Overlay)>,
}

/// Staged versions of the keys of one column family: the encoded value, or `None` for a
/// deleted key.
type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// One write of a command before it is staged: column family, key, encoded value or `None`
/// for a delete.
type StagedWrite<'a> = (&'a str, Vec<u8>, Option<Vec<u8>>);

impl Pending {
    /// True if nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.staged.iter().all(|(_, m)| m.is_empty())
    }

    /// The batch to write, for records of the caller's own (the apply state, region
    /// records) in column families that commands do not write (clients may not name
    /// [`RAFT_CF`] or the meta column family): staged versions join the batch when it is
    /// taken, after these records, which is the same state in any order.
    pub fn batch_mut(&mut self) -> &mut WriteBatch {
        &mut self.batch
    }

    /// Takes the staged batch, leaving this empty. The caller must write it before
    /// anything reads the engine for these keys again.
    pub fn take(&mut self) -> WriteBatch {
        self.move_staged();
        std::mem::take(&mut self.batch)
    }

    /// Moves every staged version into the batch (each key once, its latest: the same
    /// state as every version in order), emptying the overlay.
    fn move_staged(&mut self) {
        for (cf, m) in &mut self.staged {
            for (key, value) in std::mem::take(m) {
                match value {
                    Some(v) => self.batch.put_owned(cf, key, v),
                    None => self.batch.delete_owned(cf, key),
                };
            }
        }
    }

    fn cf(&self, cf: &str) -> Option<&Overlay> {
        self.staged.iter().find(|(c, _)| c == cf).map(|(_, m)| m)
    }

    fn stage(&mut self, cf: &str, key: Vec<u8>, value: Option<Vec<u8>>) {
        let i = match self.staged.iter().position(|(c, _)| c == cf) {
            Some(i) => i,
            None => {
                self.staged.push((cf.to_string(), BTreeMap::new()));
                self.staged.len() - 1
            }
        };
        if let Some((_, m)) = self.staged.get_mut(i) {
            m.insert(key, value);
        }
    }

    /// The newest version of `key`: staged here, else in the engine.
    fn get(&self, engine: &Engine, cf: &str, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.cf(cf).and_then(|m| m.get(key)) {
            Some(Some(v)) => Ok(Some(decode_value(key, v, false)?)),
            Some(None) => Ok(None),
            None => get(engine, cf, key),
        }
    }

    /// The `(create_revision, version)` of the newest version of `key`, staged here or in
    /// the engine: what a put needs of it unless it returns the previous pair (no copies of
    /// the key and value into a [`KeyValue`]).
    fn get_meta(&self, engine: &Engine, cf: &str, key: &[u8]) -> Result<Option<(i64, i64)>> {
        match self.cf(cf).and_then(|m| m.get(key)) {
            Some(Some(v)) => decode_meta(key, v).map(Some),
            Some(None) => Ok(None),
            None => match engine.get(cf, key)? {
                Some(v) => decode_meta(key, &v).map(Some),
                None => Ok(None),
            },
        }
    }

    /// Every live pair of `[key, range_end)` (etcd's rules): the engine's, overlaid with
    /// what is staged here, in key order.
    fn range_all(
        &self,
        engine: &Engine,
        cf: &str,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<Vec<KeyValue>> {
        let mut found = range(engine, cf, key, range_end, 0, false)?.kvs;
        let Some(m) = self.cf(cf) else {
            return Ok(found);
        };
        let (lo, hi) = range_bounds(key, range_end);
        let upper = match &hi {
            // An empty (or inverted) range: nothing to overlay, and `BTreeMap::range` would
            // panic on it.
            Some(h) if *h <= lo => return Ok(found),
            Some(h) => Bound::Excluded(h.as_slice()),
            None => Bound::Unbounded,
        };
        let mut overlay = m
            .range::<[u8], _>((Bound::Included(lo.as_slice()), upper))
            .peekable();
        if overlay.peek().is_none() {
            return Ok(found);
        }
        found.retain(|kv| !m.contains_key(&kv.key));
        for (k, v) in overlay {
            if let Some(v) = v {
                found.push(decode_value(k, v, false)?);
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }
}

/// Applies the writes of one command into `pending` (which the caller writes together with
/// the apply state). The whole command takes ONE revision, and only if it changes anything
/// (a delete that matches nothing does not count). As in an etcd txn, a command may not
/// write one key twice, and its reads see the commands before it, not its own writes. On
/// error nothing is staged and the revision is unchanged.
pub fn apply_ops(
    engine: &Engine,
    state: &mut ApplyState,
    pending: &mut Pending,
    ops: &[Op<'_>],
) -> Result<Vec<OpResult>> {
    for (i, op) in ops.iter().enumerate() {
        let (Op::Put { cf, key, .. } | Op::DeleteRange { cf, key, .. }) = *op;
        if key.is_empty() {
            return Err(Error::InvalidArgument("key is not provided"));
        }
        let same_put =
            |o: &Op<'_>| matches!(*o, Op::Put { cf: c, key: k, .. } if c == cf && k == key);
        if matches!(op, Op::Put { .. }) && ops[..i].iter().any(same_put) {
            return Err(Error::InvalidArgument("duplicate key given in txn request"));
        }
    }
    let rev = state.revision + 1;
    let mut staged: Vec<StagedWrite> = Vec::with_capacity(ops.len());
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        match *op {
            Op::Put {
                cf,
                key,
                value,
                lease,
                prev_kv,
            } => {
                let (meta, prev) = if prev_kv {
                    let prev = pending.get(engine, cf, key)?;
                    (prev.as_ref().map(|p| (p.create_revision, p.version)), prev)
                } else {
                    (pending.get_meta(engine, cf, key)?, None)
                };
                let stored = encode_parts(
                    meta.map_or(rev, |(create, _)| create),
                    rev,
                    meta.map_or(1, |(_, version)| version + 1),
                    lease,
                    value,
                );
                staged.push((cf, key.to_vec(), Some(stored)));
                results.push(OpResult::Put(prev));
            }
            Op::DeleteRange { cf, key, range_end } => {
                let found = pending.range_all(engine, cf, key, range_end)?;
                for kv in &found {
                    staged.push((cf, kv.key.clone(), None));
                }
                results.push(OpResult::Deleted(found));
            }
        }
    }
    if !staged.is_empty() {
        state.revision = rev;
        for (cf, key, value) in staged {
            pending.stage(cf, key, value);
        }
    }
    Ok(results)
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
        fn meta(&self, key: &str) -> Option<(i64, i64, i64, Vec<u8>)> {
            get(&self.engine, "default", key.as_bytes())
                .unwrap()
                .map(|kv| (kv.create_revision, kv.mod_revision, kv.version, kv.value))
        }
    }

    /// An owned [`Op`] (the tests' commands outlive any decoded request).
    #[derive(Debug, Clone)]
    struct TestOp {
        put: bool,
        /// A put's `prev_kv`.
        prev: bool,
        key: Vec<u8>,
        /// The value of a put, the range end of a delete.
        arg: Vec<u8>,
    }

    impl TestOp {
        fn op(&self) -> Op<'_> {
            if self.put {
                Op::Put {
                    cf: "default",
                    key: &self.key,
                    value: &self.arg,
                    lease: 0,
                    prev_kv: self.prev,
                }
            } else {
                Op::DeleteRange {
                    cf: "default",
                    key: &self.key,
                    range_end: &self.arg,
                }
            }
        }
    }

    fn ops(cmd: &[TestOp]) -> Vec<Op<'_>> {
        cmd.iter().map(TestOp::op).collect()
    }

    fn put_op(k: &str, v: &str) -> TestOp {
        TestOp {
            put: true,
            prev: true,
            key: k.as_bytes().to_vec(),
            arg: v.as_bytes().to_vec(),
        }
    }

    /// A put that does not ask for the pair it replaces.
    fn blind_put_op(k: &str, v: &str) -> TestOp {
        TestOp {
            prev: false,
            ..put_op(k, v)
        }
    }

    fn del_op(k: &str, end: &str) -> TestOp {
        TestOp {
            put: false,
            prev: false,
            key: k.as_bytes().to_vec(),
            arg: end.as_bytes().to_vec(),
        }
    }

    impl Region {
        /// Applies one command; returns the revision after it and its results.
        fn apply(&mut self, cmd: &[TestOp]) -> (i64, Vec<OpResult>) {
            let mut p = Pending::default();
            let results = apply_ops(&self.engine, &mut self.state, &mut p, &ops(cmd)).unwrap();
            self.state.applied_index += 1;
            let mut b = p.take();
            self.state.stage(&mut b, 1);
            self.engine.write(&b).unwrap();
            (self.state.revision, results)
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
        assert_eq!(r.apply(&[put_op("foo", "bar")]).0, 2);
        assert_eq!(r.meta("foo"), Some((2, 2, 1, b"bar".to_vec())));
        assert_eq!(r.apply(&[put_op("foo", "bar2")]).0, 3);
        assert_eq!(r.meta("foo"), Some((2, 3, 2, b"bar2".to_vec())));
        let (rev, res) = r.apply(&[put_op("foo", "bar3")]);
        assert_eq!(rev, 4);
        let OpResult::Put(Some(prev)) = &res[0] else {
            panic!("put --prev-kv must return the old pair: {res:?}");
        };
        assert_eq!(
            (prev.create_revision, prev.mod_revision, prev.version),
            (2, 3, 2)
        );
        assert_eq!(prev.value, b"bar2");
        // Without prev_kv: no pair returned, the metadata counted all the same.
        let (rev, res) = r.apply(&[blind_put_op("foo", "bar4")]);
        assert_eq!((rev, res), (5, vec![OpResult::Put(None)]));
        assert_eq!(r.meta("foo"), Some((2, 5, 4, b"bar4".to_vec())));
        assert_eq!(r.apply(&[put_op("foo", "bar4")]).0, 6);
        let (rev, res) = r.apply(&[del_op("foo", "")]);
        assert_eq!(rev, 7);
        let OpResult::Deleted(deleted) = &res[0] else {
            panic!("{res:?}");
        };
        assert_eq!(
            (
                deleted[0].create_revision,
                deleted[0].mod_revision,
                deleted[0].version
            ),
            (2, 6, 5)
        );
        assert_eq!(r.meta("foo"), None);
        assert_eq!(
            r.apply(&[del_op("foo", "")]).0,
            7,
            "deleting nothing does not bump"
        );
        assert_eq!(r.apply(&[put_op("foo", "bar5")]).0, 8);
        assert_eq!(
            r.meta("foo"),
            Some((8, 8, 1, b"bar5".to_vec())),
            "a new generation"
        );
        assert_eq!(r.apply(&[put_op("foo", "bar5")]).0, 9);
        assert_eq!(
            r.meta("foo"),
            Some((8, 9, 2, b"bar5".to_vec())),
            "the same value bumps"
        );
        // One command writing several keys takes one revision for all of them.
        assert_eq!(r.apply(&[put_op("t1", "x"), put_op("t2", "y")]).0, 10);
        assert_eq!(r.meta("t1").unwrap().0, 10);
        assert_eq!(r.meta("t2").unwrap().1, 10);
        let mut p = Pending::default();
        let err = apply_ops(
            &r.engine,
            &mut r.state,
            &mut p,
            &ops(&[put_op("d", "1"), put_op("d", "2")]),
        );
        assert!(matches!(err, Err(Error::InvalidArgument(_))));
        assert!(p.is_empty());
        assert_eq!(r.state.revision, 10);
        // Ranges, limits and counts.
        r.apply(&[put_op("a1", "x")]);
        r.apply(&[put_op("a2", "y")]);
        r.apply(&[put_op("a3", "z")]);
        let res = range(&r.engine, "default", b"a", b"b", 2, false).unwrap();
        assert_eq!((res.kvs.len(), res.more, res.count), (2, true, 3));
        let all = range(&r.engine, "default", b"a", &[0], 0, true).unwrap();
        assert_eq!(all.count, 6);
        assert!(all.kvs.iter().all(|kv| kv.value.is_empty()));
        assert_eq!(
            r.apply(&[del_op("a", "b")]).0,
            14,
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

    fn cmd_strategy() -> impl proptest::strategy::Strategy<Value = Vec<TestOp>> {
        use proptest::prelude::*;
        let key = (0u8..8).prop_map(|k| format!("k{k}"));
        let op = prop_oneof![
            2 => (key.clone(), "[a-c]{0,3}").prop_map(|(k, v)| put_op(&k, &v)),
            1 => (key.clone(), "[a-c]{0,3}").prop_map(|(k, v)| blind_put_op(&k, &v)),
            1 => key.clone().prop_map(|k| del_op(&k, "")),
            1 => (key.clone(), key).prop_map(|(a, b)| del_op(&a, &b)),
            1 => (0u8..8).prop_map(|k| del_op(&format!("k{k}"), "\0")),
        ];
        proptest::collection::vec(op, 1..4)
    }

    fn fresh(dir: &std::path::Path) -> Region {
        let engine = Engine::open(dir, Options::default()).unwrap();
        Region {
            state: ApplyState::load(&engine, 1).unwrap(),
            engine,
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Commands staged together in one `Pending` and written at once give the same
        /// answers, revisions and data as commands written one by one.
        #[test]
        fn pending_batches_match_one_by_one(
            cmds in proptest::collection::vec(cmd_strategy(), 1..40),
            cuts in proptest::collection::vec(proptest::bool::ANY, 40),
        ) {
            let d1 = tempfile::tempdir().unwrap();
            let d2 = tempfile::tempdir().unwrap();
            let mut one = fresh(d1.path());
            let mut many = fresh(d2.path());
            let mut p = Pending::default();
            for (i, cmd) in cmds.iter().enumerate() {
                let ops = ops(cmd);
                let ops = ops.as_slice();
                let mut q = Pending::default();
                let want = apply_ops(&one.engine, &mut one.state, &mut q, ops)
                    .map_err(|e| e.to_string());
                one.engine.write(&q.take()).unwrap();
                let got = apply_ops(&many.engine, &mut many.state, &mut p, ops)
                    .map_err(|e| e.to_string());
                proptest::prop_assert_eq!(&want, &got, "command {} {:?}", i, ops);
                proptest::prop_assert_eq!(one.state.revision, many.state.revision);
                if cuts[i] {
                    many.engine.write(&p.take()).unwrap();
                }
            }
            many.engine.write(&p.take()).unwrap();
            let all = |r: &Region| range(&r.engine, "default", b"k", &[0], 0, false).unwrap().kvs;
            proptest::prop_assert_eq!(all(&one), all(&many));
        }
    }
}
