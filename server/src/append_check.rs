//! Well-formed appends on both ends of the wire.
//!
//! A `MsgAppend` says "after my entry `index` (of term `log_term`) come `entries`", so its
//! entries must start at `index + 1` and follow each other. raft-rs 0.7 can break that with
//! `batch_append`: when a round already holds an append to a follower that carries no
//! entries (index 7, say: a probe after a heartbeat response) and the follower's rejection
//! in the same round moves its next index back (to 6), the entries from 6 are appended to
//! that message, whose index stays 7 (`is_continuous_ents` checks only against the existing
//! message's entries, and there are none). A follower that has committed 7 (from a
//! snapshot) then finds "entry 6" conflicting with its committed log and raft-rs panics.
//! Seen splitting a 3-store cluster into 10,000 regions: a store far behind on the parent's
//! splits created the new regions' peers from messages, got snapshots for them, and died.
//!
//! The leader repairs its appends before they leave ([`repair_outgoing`]); every store checks
//! what it receives ([`check_incoming`]), so a malformed append from any peer (an older
//! build, a bug, a corrupted frame that still decodes) is trimmed or dropped instead of
//! crashing the store.

use raft::eraftpb::{Message, MessageType};

/// Makes an outgoing append well-formed. When its entries start at or before `index`
/// (the batching above), the message is re-anchored on the entry before its first one,
/// whose term `term_of` (the leader's log) gives; if the leader no longer has that term
/// (compacted), the entries the message's own anchor already covers are dropped instead.
/// Returns true if the message was changed. (Entries starting after `index + 1` cannot be
/// mended here; raft-rs does not make those, and the receiver refuses them.)
pub(crate) fn repair_outgoing(m: &mut Message, term_of: impl Fn(u64) -> Option<u64>) -> bool {
    if m.get_msg_type() != MessageType::MsgAppend {
        return false;
    }
    let Some(first) = m.entries.first().map(|e| e.index) else {
        return false;
    };
    if first > m.index {
        return false;
    }
    if first > 0 {
        if let Some(t) = term_of(first - 1) {
            m.index = first - 1;
            m.log_term = t;
            return true;
        }
    }
    trim(m);
    true
}

/// What [`check_incoming`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// Well-formed (or not an append): step it.
    Fine,
    /// Entries at or before the message's anchor were dropped; step the rest.
    Trimmed,
    /// Entries that do not follow each other or leave a gap after the anchor: drop it.
    Malformed,
}

/// Checks a received append: entries that repeat what the anchor (`index`, `log_term`)
/// already vouches for are dropped (the leader's log matches ours up to the anchor if the
/// anchor matches, so they add nothing), and an append whose entries leave a gap or go
/// backwards is refused.
pub(crate) fn check_incoming(m: &mut Message) -> Incoming {
    if m.get_msg_type() != MessageType::MsgAppend || m.entries.is_empty() {
        return Incoming::Fine;
    }
    if m.entries.windows(2).any(|w| w[1].index != w[0].index + 1) {
        return Incoming::Malformed;
    }
    let first = m.entries[0].index;
    if first == m.index + 1 {
        return Incoming::Fine;
    }
    if first > m.index + 1 {
        return Incoming::Malformed;
    }
    trim(m);
    Incoming::Trimmed
}

/// Drops the entries at or before the message's anchor.
fn trim(m: &mut Message) {
    let anchor = m.index;
    let kept: Vec<_> = m
        .take_entries()
        .into_iter()
        .filter(|e| e.index > anchor)
        .collect();
    m.set_entries(kept.into());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use raft::eraftpb::Entry;
    use raft::storage::MemStorage;
    use raft::{Config, RawNode};

    fn append(index: u64, log_term: u64, entries: &[(u64, u64)]) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.index = index;
        m.log_term = log_term;
        m.set_entries(
            entries
                .iter()
                .map(|&(index, term)| Entry {
                    index,
                    term,
                    ..Default::default()
                })
                .collect::<Vec<_>>()
                .into(),
        );
        m
    }

    fn shape(m: &Message) -> (u64, u64, Vec<u64>) {
        (
            m.index,
            m.log_term,
            m.entries.iter().map(|e| e.index).collect(),
        )
    }

    #[test]
    fn the_leader_re_anchors_a_batched_append_on_the_entry_before_its_first() {
        // raft-rs's batching: index 7 with entries from 6.
        let mut m = append(7, 3, &[(6, 2), (7, 3), (8, 3)]);
        assert!(repair_outgoing(&mut m, |i| (i == 5).then_some(1)));
        assert_eq!(shape(&m), (5, 1, vec![6, 7, 8]));
        // The term before the first entry is gone from the leader's log: the entries the
        // anchor covers go instead.
        let mut m = append(7, 3, &[(6, 2), (7, 3), (8, 3)]);
        assert!(repair_outgoing(&mut m, |_| None));
        assert_eq!(shape(&m), (7, 3, vec![8]));
        // Well-formed messages, messages without entries and other types are untouched.
        let mut m = append(5, 1, &[(6, 2)]);
        assert!(!repair_outgoing(&mut m, |_| Some(9)));
        assert_eq!(shape(&m), (5, 1, vec![6]));
        let mut m = append(7, 3, &[]);
        assert!(!repair_outgoing(&mut m, |_| Some(9)));
        let mut m = append(7, 3, &[(6, 2)]);
        m.set_msg_type(MessageType::MsgHeartbeat);
        assert!(!repair_outgoing(&mut m, |_| Some(9)));
        // A gap is not the batching's doing and is left for the receiver to refuse.
        let mut m = append(5, 1, &[(8, 2)]);
        assert!(!repair_outgoing(&mut m, |_| Some(9)));
        assert_eq!(shape(&m), (5, 1, vec![8]));
    }

    #[test]
    fn a_store_trims_or_refuses_malformed_appends() {
        let mut m = append(5, 1, &[(6, 2), (7, 2)]);
        assert_eq!(check_incoming(&mut m), Incoming::Fine);
        let mut m = append(7, 3, &[(6, 2), (7, 3), (8, 3)]);
        assert_eq!(check_incoming(&mut m), Incoming::Trimmed);
        assert_eq!(shape(&m), (7, 3, vec![8]));
        let mut m = append(7, 3, &[(6, 2), (7, 3)]);
        assert_eq!(check_incoming(&mut m), Incoming::Trimmed);
        assert_eq!(shape(&m), (7, 3, vec![]));
        // A gap after the anchor, or entries out of order: refused.
        let mut m = append(5, 1, &[(7, 2)]);
        assert_eq!(check_incoming(&mut m), Incoming::Malformed);
        let mut m = append(5, 1, &[(6, 2), (8, 2)]);
        assert_eq!(check_incoming(&mut m), Incoming::Malformed);
        let mut m = append(5, 1, &[(6, 2), (6, 2)]);
        assert_eq!(check_incoming(&mut m), Incoming::Malformed);
    }

    /// raft-rs's leader makes the malformed append: an empty append to a replicating
    /// follower (after its heartbeat response), then the follower's rejection in the same
    /// round; the repair turns it into the append it meant (the same entries, anchored on
    /// the one before them).
    #[test]
    fn a_leader_batches_entries_behind_an_empty_append_and_the_repair_re_anchors_it() {
        let storage = MemStorage::new();
        {
            let mut w = storage.wl();
            let mut snap = raft::eraftpb::Snapshot::default();
            snap.mut_metadata().index = 5;
            snap.mut_metadata().term = 1;
            snap.mut_metadata().mut_conf_state().voters = vec![1, 2];
            w.apply_snapshot(snap).unwrap();
            let e = |index, term| Entry {
                index,
                term,
                ..Default::default()
            };
            w.append(&[e(6, 2), e(7, 3)]).unwrap();
            w.set_hardstate(raft::eraftpb::HardState {
                term: 3,
                commit: 5,
                ..Default::default()
            });
        }
        let cfg = Config {
            id: 1,
            batch_append: true,
            ..Config::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut raw = RawNode::new(&cfg, storage, &logger).unwrap();
        let from_follower = |t: MessageType, term: u64| {
            let mut m = Message::default();
            m.set_msg_type(t);
            m.from = 2;
            m.to = 1;
            m.term = term;
            m
        };
        raw.campaign().unwrap();
        raw.step(from_follower(MessageType::MsgRequestVoteResponse, 4))
            .unwrap();
        assert_eq!(raw.raft.state, raft::StateRole::Leader);
        // The follower holds up to 5: the leader replicates 6..8 (8 is its empty entry).
        let mut ack = from_follower(MessageType::MsgAppendResponse, 4);
        ack.index = 5;
        raw.step(ack).unwrap();
        raw.raft.msgs.clear();
        // A heartbeat response: an append with nothing new (index 8), then the follower
        // turns out not to hold 6..8 after all (it rejects index 8, hint 5).
        raw.step(from_follower(MessageType::MsgHeartbeatResponse, 4))
            .unwrap();
        let mut reject = from_follower(MessageType::MsgAppendResponse, 4);
        reject.index = 8;
        reject.reject = true;
        reject.reject_hint = 5;
        reject.log_term = 1;
        raw.step(reject).unwrap();
        let mut appends: Vec<Message> = raw
            .raft
            .msgs
            .drain(..)
            .filter(|m| m.get_msg_type() == MessageType::MsgAppend)
            .collect();
        assert_eq!(appends.len(), 1);
        let m = &mut appends[0];
        // (raft-rs 0.7 sends index 8 with entry 6: probing sends one entry.)
        let (index, _, entries) = shape(m);
        assert!(
            index == 8 && entries.first() == Some(&6),
            "raft-rs no longer batches behind an empty append (the repair may go): {:?}",
            shape(m)
        );
        let log = &raw.raft.raft_log;
        assert!(repair_outgoing(m, |i| log.term(i).ok()));
        assert_eq!(shape(m), (5, 1, entries));
    }

    /// A follower that committed 7 from a snapshot gets raft-rs's batched append (index 7,
    /// entries from 6): stepped as is, raft-rs panics; checked first, it is an empty append
    /// at 7 that the follower accepts.
    #[test]
    fn a_follower_with_a_snapshot_survives_the_batched_append() {
        let follower = || {
            let storage = MemStorage::new();
            let mut snap = raft::eraftpb::Snapshot::default();
            snap.mut_metadata().index = 7;
            snap.mut_metadata().term = 3;
            snap.mut_metadata().mut_conf_state().voters = vec![1, 2];
            storage.wl().apply_snapshot(snap).unwrap();
            let cfg = Config {
                id: 2,
                ..Config::default()
            };
            let logger = slog::Logger::root(slog::Discard, slog::o!());
            RawNode::new(&cfg, storage, &logger).unwrap()
        };
        let batched = || {
            let mut m = append(7, 3, &[(6, 2), (7, 3)]);
            m.from = 1;
            m.to = 2;
            m.term = 3;
            m.commit = 7;
            m
        };
        let mut raw = follower();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = raw.step(batched());
        }));
        assert!(panicked.is_err(), "raft-rs accepts the batched append now");
        let mut raw = follower();
        let mut m = batched();
        assert_eq!(check_incoming(&mut m), Incoming::Trimmed);
        raw.step(m).unwrap();
        assert_eq!(raw.raft.raft_log.committed, 7);
        assert_eq!(raw.raft.raft_log.last_index(), 7);
    }
}
