//! [`PeerStorage`]: raft-rs's [`Storage`] over one stream of the raft-log store.
//!
//! Each region peer owns the stream whose id is its region id. Entries are stored as encoded
//! `eraftpb::Entry`s (index and term are also kept by the log store, so term lookups never
//! decode); the hard state, conf state and truncated state are state records of the stream.
//! Changes are staged into a [`LogBatch`] the caller writes, so one write (and one fdatasync)
//! persists the ready state of every peer on the store.

use std::sync::Arc;

use pontoon_raftlog::{LogBatch, LogStore};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

const KEY_HARD_STATE: &[u8] = b"hs";
const KEY_CONF_STATE: &[u8] = b"cs";
const KEY_TRUNCATED: &[u8] = b"trunc";

/// Errors of the storage bridge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The raft-log store failed.
    #[error(transparent)]
    Log(#[from] pontoon_raftlog::Error),
    /// A stored record does not decode.
    #[error("region {region}: stored {what} does not decode: {reason}")]
    Corrupt {
        /// Region (stream) id.
        region: u64,
        /// Which record.
        what: &'static str,
        /// Decoder message.
        reason: String,
    },
}

/// Bytes of entry data a peer keeps in memory after their raft-log write landed, until
/// they are applied (see `PeerStorage::tail`).
pub const TAIL_CACHE_BYTES: usize = 4 << 20;

/// The raft storage of one region peer.
pub struct PeerStorage {
    region_id: u64,
    log: Arc<LogStore>,
    hard_state: HardState,
    /// Commit index of the last hard state staged for writing (see
    /// [`PeerStorage::unstaged_commits`]).
    staged_commit: u64,
    conf_state: ConfState,
    /// Index and term of the last entry dropped by log compaction (0, 0 for a new log).
    truncated: (u64, u64),
    /// The log's newest entries, tagged with the id of the raft-log write that carries
    /// them, ascending by index; reads look here first. Until that write lands this is the
    /// only readable copy: raft-rs treats entries as stable as soon as their ready is handed
    /// over, while the log store shows them only once its writer has processed them. After
    /// it they stay until applied ([`PeerStorage::applied_to`]), as long as they fit in
    /// [`TAIL_CACHE_BYTES`]: applying reads committed entries back, and from here that is a
    /// reference-count bump instead of a copy out of the log store and a decode.
    tail: std::collections::VecDeque<(u64, Entry)>,
    /// Bytes of the entries' data in `tail`.
    tail_bytes: usize,
    /// The newest raft-log write known to have landed.
    written_id: u64,
    /// The newest applied index reported by [`PeerStorage::applied_to`].
    applied: u64,
    /// Where snapshots of the region's data come from (none: snapshots are unavailable).
    engine: Option<Arc<pontoon_engine::Engine>>,
}

fn decode<M: protobuf::Message>(region: u64, what: &'static str, bytes: &[u8]) -> Result<M, Error> {
    M::parse_from_bytes(bytes).map_err(|e| Error::Corrupt {
        region,
        what,
        reason: e.to_string(),
    })
}

fn encode<M: protobuf::Message>(m: &M) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_into(m, &mut buf);
    buf
}

/// Appends `m`'s encoding to `buf`. Encoding a well-formed in-memory message cannot fail;
/// if it did, nothing is appended, and the empty record is caught by the decoder on restart.
fn encode_into<M: protobuf::Message>(m: &M, buf: &mut Vec<u8>) {
    let start = buf.len();
    let size = m.compute_size() as usize;
    buf.resize(start + size, 0);
    let ok = match buf.get_mut(start..) {
        Some(out) => {
            // `compute_size` just cached the sizes this writes by: it fills `out` exactly
            // (as in `write_to_bytes`), or errors if it would not fit.
            let mut os = protobuf::CodedOutputStream::bytes(out);
            m.write_to_with_cached_sizes(&mut os).is_ok()
        }
        None => false,
    };
    if !ok {
        buf.truncate(start);
    }
}

impl PeerStorage {
    /// Opens the storage of region `region_id` from `log`. A region with no state yet starts
    /// with `initial_voters` as its configuration (pass the peers of a bootstrapped region;
    /// an empty slice for a peer that will learn its configuration from the leader).
    pub fn open(log: Arc<LogStore>, region_id: u64, initial_voters: &[u64]) -> Result<Self, Error> {
        let hard_state = match log.get_state(region_id, KEY_HARD_STATE) {
            Some(b) => decode(region_id, "hard state", &b)?,
            None => HardState::default(),
        };
        let conf_state = match log.get_state(region_id, KEY_CONF_STATE) {
            Some(b) => decode(region_id, "conf state", &b)?,
            None => {
                let mut cs = ConfState::default();
                cs.set_voters(initial_voters.to_vec());
                cs
            }
        };
        let truncated = match log.get_state(region_id, KEY_TRUNCATED) {
            Some(b) if b.len() == 16 => {
                let mut i = [0u8; 8];
                let mut t = [0u8; 8];
                i.copy_from_slice(&b[..8]);
                t.copy_from_slice(&b[8..]);
                (u64::from_le_bytes(i), u64::from_le_bytes(t))
            }
            Some(_) => {
                return Err(Error::Corrupt {
                    region: region_id,
                    what: "truncated state",
                    reason: "not 16 bytes".into(),
                })
            }
            None => (0, 0),
        };
        Ok(PeerStorage {
            region_id,
            log,
            staged_commit: hard_state.commit,
            hard_state,
            conf_state,
            truncated,
            tail: std::collections::VecDeque::new(),
            tail_bytes: 0,
            written_id: 0,
            applied: 0,
            engine: None,
        })
    }

    /// Lets [`Storage::snapshot`] build snapshots from `engine`, which must hold the
    /// region's data applied exactly up to what this peer has applied.
    pub fn set_engine(&mut self, engine: Arc<pontoon_engine::Engine>) {
        self.engine = Some(engine);
    }

    /// The conf state as last staged.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Index and term of the last compacted entry.
    pub fn truncated(&self) -> (u64, u64) {
        self.truncated
    }

    /// Stages the raft side of an applied snapshot (or of an engine that is ahead of the
    /// log after a crash): the whole old log goes, the log restarts after `index`, and the
    /// hard state's commit is lifted to `index`.
    pub fn reset_to_snapshot(
        &mut self,
        batch: &mut LogBatch,
        index: u64,
        term: u64,
        cs: ConfState,
    ) -> Result<(), Error> {
        batch.remove_stream(self.region_id);
        self.tail.clear();
        self.tail_bytes = 0;
        let mut hs = self.hard_state.clone();
        hs.term = hs.term.max(term);
        hs.commit = hs.commit.max(index);
        self.set_hard_state(batch, hs)?;
        self.set_conf_state(batch, cs)?;
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&index.to_le_bytes());
        b[8..].copy_from_slice(&term.to_le_bytes());
        batch.put_state(self.region_id, KEY_TRUNCATED, &b)?;
        self.truncated = (index, term);
        Ok(())
    }

    /// Region (and log stream) id.
    pub fn region_id(&self) -> u64 {
        self.region_id
    }

    /// The hard state as last staged, with a commit index possibly raised lazily since.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Stages `entries` (raft's conflicting-suffix rule applies) into `batch`.
    ///
    /// Until [`PeerStorage::written`] is called with `write_id` (the id of the raft-log write
    /// that carries `batch`), reads are served from a copy kept here.
    pub fn append(
        &mut self,
        batch: &mut LogBatch,
        entries: &[Entry],
        write_id: u64,
    ) -> Result<(), Error> {
        let Some(first) = entries.first().map(|e| e.index) else {
            return Ok(());
        };
        while self.tail.back().is_some_and(|(_, e)| e.index >= first) {
            if let Some((_, e)) = self.tail.pop_back() {
                self.tail_bytes -= e.data.len();
            }
        }
        for e in entries {
            self.tail_bytes += e.data.len();
            self.tail.push_back((write_id, e.clone()));
        }
        // Each entry is encoded straight into the batch (not into a buffer of its own that
        // the batch then copies).
        batch.add_entries_with(self.region_id, first, entries, |e, buf| {
            encode_into(e, buf);
            (e.index, e.term)
        })?;
        Ok(())
    }

    /// The raft-log writes up to `write_id` have landed: their entries are readable from
    /// the log store now (they stay cached here while they fit, until applied).
    pub fn written(&mut self, write_id: u64) {
        self.written_id = self.written_id.max(write_id);
        self.trim(self.applied);
    }

    /// Entries up to `index` are applied: no need to keep them in memory.
    pub fn applied_to(&mut self, index: u64) {
        self.applied = self.applied.max(index);
        self.trim(self.applied);
    }

    /// Drops written entries from the front of the tail: those up to `index`, and more
    /// while the tail is over its byte budget.
    fn trim(&mut self, index: u64) {
        while let Some((id, e)) = self.tail.front() {
            let landed = *id <= self.written_id;
            if !landed || (e.index > index && self.tail_bytes <= TAIL_CACHE_BYTES) {
                break;
            }
            self.tail_bytes -= e.data.len();
            self.tail.pop_front();
        }
    }

    fn tail_first(&self) -> Option<u64> {
        self.tail.front().map(|(_, e)| e.index)
    }

    /// Stages a new hard state into `batch`.
    pub fn set_hard_state(&mut self, batch: &mut LogBatch, hs: HardState) -> Result<(), Error> {
        batch.put_state(self.region_id, KEY_HARD_STATE, &encode(&hs))?;
        self.staged_commit = hs.commit;
        self.hard_state = hs;
        Ok(())
    }

    /// How far `commit` is ahead of the commit index last staged with a hard state.
    pub fn unstaged_commits(&self, commit: u64) -> u64 {
        commit.saturating_sub(self.staged_commit)
    }

    /// Raises the commit index without staging a write: it is persisted with the next
    /// staged hard state. The commit index need not be durable (raft re-learns it; a
    /// restart lifts it to the applied index), unlike term and vote.
    pub fn set_commit_lazily(&mut self, commit: u64) {
        self.hard_state.commit = self.hard_state.commit.max(commit);
    }

    /// Stages a new conf state into `batch`.
    pub fn set_conf_state(&mut self, batch: &mut LogBatch, cs: ConfState) -> Result<(), Error> {
        batch.put_state(self.region_id, KEY_CONF_STATE, &encode(&cs))?;
        self.conf_state = cs;
        Ok(())
    }

    /// Stages log compaction: entries up to and including `index` (whose term is `term`) are
    /// dropped. The caller must only do this for entries the engine has flushed.
    pub fn compact_to(&mut self, batch: &mut LogBatch, index: u64, term: u64) -> Result<(), Error> {
        if index <= self.truncated.0 {
            return Ok(());
        }
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&index.to_le_bytes());
        b[8..].copy_from_slice(&term.to_le_bytes());
        batch.put_state(self.region_id, KEY_TRUNCATED, &b)?;
        batch.compact_to(self.region_id, index + 1);
        self.truncated = (index, term);
        // Compaction stops at what is applied and durable, so these have landed.
        self.trim(index);
        Ok(())
    }

    fn map_err(e: pontoon_raftlog::Error) -> raft::Error {
        match e {
            pontoon_raftlog::Error::Compacted { .. } => raft::Error::Store(StorageError::Compacted),
            pontoon_raftlog::Error::Unavailable { .. } => {
                raft::Error::Store(StorageError::Unavailable)
            }
            other => raft::Error::Store(StorageError::Other(Box::new(other))),
        }
    }
}

impl Storage for PeerStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let max = max_size.into().unwrap_or(u64::MAX);
        let split = self.tail_first().unwrap_or(u64::MAX).max(low);
        let mut out = Vec::new();
        let mut size = 0u64;
        if low < split {
            let end = high.min(split);
            let stored = self
                .log
                .entries(self.region_id, low, end, max)
                .map_err(Self::map_err)?;
            for e in &stored {
                let corrupt = |reason: String| {
                    raft::Error::Store(StorageError::Other(Box::new(Error::Corrupt {
                        region: self.region_id,
                        what: "entry",
                        reason,
                    })))
                };
                let entry = Entry::parse_from_bytes(&e.data)
                    .map_err(|err| corrupt(format!("index {}: {err}", e.index)))?;
                // Served out of place, an entry would be replicated and applied as another
                // one: fail loudly instead.
                if entry.index != e.index {
                    return Err(corrupt(format!(
                        "the raft log returned entry {} for index {}",
                        entry.index, e.index
                    )));
                }
                size += u64::from(entry.compute_size());
                out.push(entry);
            }
            if (out.len() as u64) < end - low || end == high {
                return Ok(out); // cut short by max_size, or done
            }
        }
        for (_, e) in self
            .tail
            .iter()
            .skip_while(|(_, e)| e.index < split)
            .take_while(|(_, e)| e.index < high)
        {
            let sz = u64::from(e.compute_size());
            if !out.is_empty() && size + sz > max {
                break;
            }
            size += sz;
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if let Some(first) = self.tail_first() {
            if idx >= first {
                let pos = (idx - first) as usize;
                return match self.tail.get(pos) {
                    Some((_, e)) => Ok(e.term),
                    None => Err(raft::Error::Store(StorageError::Unavailable)),
                };
            }
        }
        if idx == self.truncated.0 {
            return Ok(self.truncated.1);
        }
        if idx < self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.log.term(self.region_id, idx).map_err(Self::map_err)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        if let Some((_, e)) = self.tail.back() {
            return Ok(e.index);
        }
        Ok(self
            .log
            .last_index(self.region_id)
            .unwrap_or(self.truncated.0)
            .max(self.truncated.0))
    }

    /// Builds a snapshot of the region from the engine. The store loop applies entries
    /// synchronously and calls raft (hence this) between applies, so the engine's data, its
    /// apply state and this storage's conf state all describe the same applied index.
    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let Some(engine) = &self.engine else {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        };
        let other = |e: crate::node::Error| raft::Error::Store(StorageError::Other(Box::new(e)));
        let region = crate::region::load_state(engine, self.region_id)
            .map_err(|e| other(e.into()))?
            .and_then(|s| s.region)
            .ok_or(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ))?;
        let (meta, data) =
            crate::snapshot::build(engine, self.region_id, &region.start_key, &region.end_key)
                .map_err(|e| other(e.into()))?;
        let mut snap = Snapshot {
            data: crate::region::encode_snapshot_data(&region, &data).into(),
            ..Default::default()
        };
        let md = snap.mut_metadata();
        md.index = meta.apply.applied_index;
        md.term = meta.apply.applied_term;
        md.set_conf_state(self.conf_state.clone());
        Ok(snap)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use raft::{Config, RawNode};

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    fn open_log(dir: &std::path::Path) -> Arc<LogStore> {
        Arc::new(LogStore::open(dir, pontoon_raftlog::Config::default()).unwrap())
    }

    #[test]
    fn lazily_raised_commits_count_until_a_hard_state_is_staged() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = open_log(dir.path());
            let mut s = PeerStorage::open(log.clone(), 7, &[1]).unwrap();
            let mut b = LogBatch::new();
            let hs = HardState {
                term: 2,
                vote: 1,
                commit: 10,
                ..Default::default()
            };
            s.set_hard_state(&mut b, hs).unwrap();
            log.write(b, true).unwrap();
            assert_eq!(s.unstaged_commits(10), 0);
            s.set_commit_lazily(70);
            assert_eq!(s.hard_state().commit, 70);
            assert_eq!(s.unstaged_commits(70), 60);
            assert_eq!(s.unstaged_commits(5), 0, "an older commit is never ahead");
            let mut b = LogBatch::new();
            let hs = s.hard_state().clone();
            s.set_hard_state(&mut b, hs).unwrap();
            log.write(b, true).unwrap();
            assert_eq!(s.unstaged_commits(70), 0);
            // Raised again but never staged: a restart sees the last staged commit.
            s.set_commit_lazily(90);
        }
        let s = PeerStorage::open(open_log(dir.path()), 7, &[]).unwrap();
        assert_eq!(s.initial_state().unwrap().hard_state.commit, 70);
        assert_eq!(s.unstaged_commits(90), 20);
    }

    #[test]
    fn entries_states_and_compaction_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = open_log(dir.path());
            let mut s = PeerStorage::open(log.clone(), 7, &[1]).unwrap();
            assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 0));
            let mut b = LogBatch::new();
            let es: Vec<Entry> = (1..=10).map(|i| entry(i, 1 + i / 5, b"x")).collect();
            s.append(&mut b, &es, 1).unwrap();
            let hs = HardState {
                term: 3,
                vote: 1,
                commit: 8,
                ..Default::default()
            };
            s.set_hard_state(&mut b, hs).unwrap();
            let cs = s.initial_state().unwrap().conf_state;
            s.set_conf_state(&mut b, cs).unwrap();
            log.write(b, true).unwrap();
            // A conflicting suffix from a new leader replaces entries 6..
            let mut b = LogBatch::new();
            s.append(&mut b, &[entry(6, 9, b"y"), entry(7, 9, b"z")], 2)
                .unwrap();
            s.compact_to(&mut b, 3, s.term(3).unwrap()).unwrap();
            log.write(b, true).unwrap();
        }
        let log = open_log(dir.path());
        let s = PeerStorage::open(log, 7, &[]).unwrap();
        assert_eq!(s.initial_state().unwrap().hard_state.commit, 8);
        assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1]);
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (4, 7));
        assert_eq!(s.term(3).unwrap(), 1, "the truncated term is kept");
        assert_eq!(s.term(7).unwrap(), 9);
        assert!(matches!(
            s.term(2),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let es = s
            .entries(4, 8, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            es.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
            vec![(4, 1), (5, 2), (6, 9), (7, 9)]
        );
        assert_eq!(&es[3].data[..], b"z");
        assert!(s
            .entries(2, 5, None, GetEntriesContext::empty(false))
            .is_err());
    }

    /// A single-voter raft group on this storage elects itself, commits proposals, and after
    /// a restart recovers the same log and commit index.
    #[test]
    fn single_voter_raft_commits_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let cfg = Config {
            id: 1,
            election_tick: 10,
            heartbeat_tick: 3,
            ..Config::default()
        };
        let mut committed: Vec<Vec<u8>> = Vec::new();
        {
            let log = open_log(dir.path());
            let storage = PeerStorage::open(log.clone(), 1, &[1]).unwrap();
            let mut node = RawNode::new(&cfg, storage, &logger).unwrap();
            node.campaign().unwrap();
            for round in 0..20u32 {
                if round > 0 && node.raft.state == raft::StateRole::Leader {
                    node.propose(vec![], format!("cmd{round}").into_bytes())
                        .unwrap();
                }
                if !node.has_ready() {
                    continue;
                }
                let mut ready = node.ready();
                let mut b = LogBatch::new();
                let store = node.mut_store();
                store.append(&mut b, ready.entries(), 3).unwrap();
                if let Some(hs) = ready.hs() {
                    store.set_hard_state(&mut b, hs.clone()).unwrap();
                }
                log.write(b, true).unwrap();
                for e in ready.take_committed_entries() {
                    if !e.data.is_empty() {
                        committed.push(e.data.to_vec());
                    }
                }
                let mut light = node.advance(ready);
                if let Some(commit) = light.commit_index() {
                    let mut hs = node.store().hard_state().clone();
                    hs.commit = commit;
                    let mut b = LogBatch::new();
                    node.mut_store().set_hard_state(&mut b, hs).unwrap();
                    log.write(b, true).unwrap();
                }
                for e in light.take_committed_entries() {
                    if !e.data.is_empty() {
                        committed.push(e.data.to_vec());
                    }
                }
                node.advance_apply();
            }
        }
        assert_eq!(
            committed.len(),
            19,
            "every proposal commits on a single voter"
        );
        let log = open_log(dir.path());
        let storage = PeerStorage::open(log, 1, &[1]).unwrap();
        let commit = storage.hard_state().commit;
        let entries = storage
            .entries(
                1,
                storage.last_index().unwrap() + 1,
                None,
                GetEntriesContext::empty(false),
            )
            .unwrap();
        let replay: Vec<Vec<u8>> = entries
            .iter()
            .filter(|e| e.index <= commit && !e.data.is_empty())
            .map(|e| e.data.to_vec())
            .collect();
        assert_eq!(replay, committed);
    }

    /// Written entries stay readable from memory until applied (and within the byte
    /// budget), a conflicting append replaces them, and what is read is always what the
    /// log holds.
    #[test]
    fn written_entries_stay_cached_until_applied() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        let mut s = PeerStorage::open(log.clone(), 9, &[1]).unwrap();
        let mut b = LogBatch::new();
        let es: Vec<Entry> = (1..=6).map(|i| entry(i, 1, &[i as u8; 10])).collect();
        s.append(&mut b, &es, 1).unwrap();
        log.write(b, true).unwrap();
        s.written(1);
        assert_eq!((s.tail_first(), s.tail_bytes), (Some(1), 60));
        let read = |s: &PeerStorage, lo, hi| {
            s.entries(lo, hi, None, GetEntriesContext::empty(false))
                .unwrap()
                .iter()
                .map(|e| (e.index, e.term, e.data.to_vec()))
                .collect::<Vec<_>>()
        };
        let want = |lo: u64, hi: u64, term_from: u64| {
            (lo..hi)
                .map(|i| (i, if i >= term_from { 2 } else { 1 }, vec![i as u8; 10]))
                .collect::<Vec<_>>()
        };
        assert_eq!(read(&s, 1, 7), want(1, 7, 99));
        s.applied_to(3);
        assert_eq!(s.tail_first(), Some(4));
        // 1..=3 come from the log store now, 4..=6 from memory: the same entries.
        assert_eq!(read(&s, 1, 7), want(1, 7, 99));
        assert_eq!(s.term(2).unwrap(), 1);
        // A new leader's entries replace 5 and 6 (written or not).
        let mut b = LogBatch::new();
        let es: Vec<Entry> = (5..=7).map(|i| entry(i, 2, &[i as u8; 10])).collect();
        s.append(&mut b, &es, 2).unwrap();
        assert_eq!(read(&s, 1, 8), want(1, 8, 5));
        assert_eq!(s.last_index().unwrap(), 7);
        log.write(b, true).unwrap();
        s.written(2);
        s.applied_to(7);
        assert_eq!((s.tail_first(), s.tail_bytes), (None, 0));
        assert_eq!(read(&s, 1, 8), want(1, 8, 5));
        // Unwritten entries are never dropped, applied or not; written ones over the
        // budget are.
        let big: Vec<Entry> = (8..=9)
            .map(|i| Entry {
                index: i,
                term: 2,
                data: vec![i as u8; TAIL_CACHE_BYTES].into(),
                ..Default::default()
            })
            .collect();
        let mut b = LogBatch::new();
        s.append(&mut b, &big, 3).unwrap();
        s.applied_to(8);
        assert_eq!(s.tail_first(), Some(8));
        log.write(b, true).unwrap();
        s.written(3);
        // 8 is applied; 9 is not, and fits the budget alone.
        assert_eq!(s.tail_first(), Some(9));
        s.applied_to(9);
        assert_eq!((s.tail_first(), s.tail_bytes), (None, 0));
        let mut b = LogBatch::new();
        s.append(
            &mut b,
            &big.iter()
                .map(|e| Entry {
                    index: e.index + 2,
                    ..e.clone()
                })
                .collect::<Vec<_>>(),
            4,
        )
        .unwrap();
        log.write(b, true).unwrap();
        s.written(4);
        // Not applied, but two of them are over the budget: the older goes.
        assert_eq!(s.tail_first(), Some(11));
        assert_eq!(
            s.entries(8, 12, None, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            4
        );
    }
}
