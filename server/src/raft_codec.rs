//! raft-rs's messages (`eraftpb.Message`) to and from their protobuf bytes, without
//! rust-protobuf on the common path.
//!
//! Every raft message a store sends is encoded once and every one it receives is decoded
//! once; with many regions, each carrying a put or two per append, that is two to three
//! messages per put, and rust-protobuf spent ~190 ns encoding and ~150 ns decoding each
//! (its size pass caches sizes through every nested message, its input stream is built
//! per call, and parsed entries' data are slices of the frame that the store loop then
//! copied into a buffer of their own anyway).
//!
//! [`encode`] writes the bytes rust-protobuf writes (same fields, same order) for any
//! message raft-rs makes except a snapshot, which it leaves to rust-protobuf (as it does a
//! message carrying unknown fields, which only a decoded one can). [`decode`]
//! reads the shapes raft-rs writes (the scalar fields, entries, a context) and hands
//! everything else to rust-protobuf, unchanged: a snapshot, an unknown field, an unknown
//! enum value, a wire type that does not match its field, a varint longer than a `u64`'s,
//! a length past the end. So both functions give exactly what rust-protobuf gives for any
//! input (the `raft_codec` fuzz target compares them on arbitrary bytes), and decoded
//! entries' data share one buffer of their own: a received message does not pin the frame
//! it came in (see [`rehome_entries`]).

use bytes::{Bytes, BytesMut};
use pontoon_client::prost::encoding::{encode_varint, encoded_len_varint};
use protobuf::Message as _;
use raft::eraftpb::{Entry, EntryType, Message, MessageType};

/// `m`'s protobuf encoding, byte for byte what `m.write_to_bytes()` gives.
pub fn encode(m: &Message) -> Vec<u8> {
    let unknown = |u: &protobuf::UnknownFields| u.iter().next().is_some();
    if m.snapshot.is_some()
        || unknown(m.get_unknown_fields())
        || m.get_entries()
            .iter()
            .any(|e| unknown(e.get_unknown_fields()))
    {
        return m.write_to_bytes().unwrap_or_default();
    }
    let mut out = Vec::with_capacity(message_len(m));
    write_message(m, &mut out);
    out
}

/// Decodes a message as `Message::parse_from_carllerche_bytes` does; the entries' data
/// are copied into one buffer of their own.
pub fn decode(buf: &Bytes) -> protobuf::ProtobufResult<Message> {
    match fast_decode(buf) {
        Some(m) => Ok(m),
        None => {
            let mut m = Message::parse_from_carllerche_bytes(buf)?;
            rehome_entries(&mut m);
            Ok(m)
        }
    }
}

/// Gives the entries of a received raft message one buffer of their own. Parsed zero-copy
/// by rust-protobuf, their data are slices of the frame they came in, itself a slice of the
/// connection's read buffer, and a follower keeps entries in memory until it applies them
/// (`PeerStorage::tail`): a few hundred bytes of entries left unapplied in a region that
/// went idle would pin a buffer of up to a whole frame, many regions' worth. One copy per
/// message into a buffer holding exactly its entries' data bounds what they pin.
pub fn rehome_entries(msg: &mut Message) {
    let total: usize = msg.get_entries().iter().map(|e| e.data.len()).sum();
    if total == 0 {
        return;
    }
    let mut buf = BytesMut::with_capacity(total);
    for e in msg.get_entries() {
        buf.extend_from_slice(&e.data);
    }
    let buf = buf.freeze();
    let mut at = 0;
    for e in msg.mut_entries().iter_mut() {
        let n = e.data.len();
        e.data = buf.slice(at..at + n);
        at += n;
    }
}

/// Length of a field of `len` payload bytes with a one-byte tag (every field number
/// here is below 16).
fn bytes_field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn uint_field_len(tag_len: usize, v: u64) -> usize {
    tag_len + encoded_len_varint(v)
}

fn entry_len(e: &Entry) -> usize {
    let mut n = 0;
    if e.entry_type != EntryType::EntryNormal {
        n += uint_field_len(1, e.entry_type as u64);
    }
    if e.term != 0 {
        n += uint_field_len(1, e.term);
    }
    if e.index != 0 {
        n += uint_field_len(1, e.index);
    }
    if !e.data.is_empty() {
        n += bytes_field_len(e.data.len());
    }
    if !e.context.is_empty() {
        n += bytes_field_len(e.context.len());
    }
    if e.sync_log {
        n += 2;
    }
    n
}

fn message_len(m: &Message) -> usize {
    let mut n = 0;
    if m.msg_type != MessageType::MsgHup {
        n += uint_field_len(1, m.msg_type as u64);
    }
    for v in [m.to, m.from, m.term, m.log_term, m.index, m.commit] {
        if v != 0 {
            n += uint_field_len(1, v);
        }
    }
    for e in m.get_entries() {
        n += bytes_field_len(entry_len(e));
    }
    if m.commit_term != 0 {
        n += uint_field_len(1, m.commit_term);
    }
    if m.request_snapshot != 0 {
        n += uint_field_len(1, m.request_snapshot);
    }
    if m.reject {
        n += 2;
    }
    if m.reject_hint != 0 {
        n += uint_field_len(1, m.reject_hint);
    }
    if !m.context.is_empty() {
        n += bytes_field_len(m.context.len());
    }
    if m.deprecated_priority != 0 {
        n += uint_field_len(1, m.deprecated_priority);
    }
    if m.priority != 0 {
        // Field 16 takes a two-byte tag.
        n += uint_field_len(2, m.priority as u64);
    }
    n
}

const VARINT: u64 = 0;
const LEN: u64 = 2;

fn put_tag(out: &mut Vec<u8>, field: u64, wire: u64) {
    encode_varint((field << 3) | wire, out);
}

fn put_uint(out: &mut Vec<u8>, field: u64, v: u64) {
    put_tag(out, field, VARINT);
    encode_varint(v, out);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    put_tag(out, field, LEN);
    encode_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn write_entry(e: &Entry, out: &mut Vec<u8>) {
    if e.entry_type != EntryType::EntryNormal {
        put_uint(out, 1, e.entry_type as u64);
    }
    if e.term != 0 {
        put_uint(out, 2, e.term);
    }
    if e.index != 0 {
        put_uint(out, 3, e.index);
    }
    if !e.data.is_empty() {
        put_bytes(out, 4, &e.data);
    }
    if !e.context.is_empty() {
        put_bytes(out, 6, &e.context);
    }
    if e.sync_log {
        put_uint(out, 5, 1);
    }
}

/// rust-protobuf's field order: the order of the `.proto` file, not of the numbers.
fn write_message(m: &Message, out: &mut Vec<u8>) {
    if m.msg_type != MessageType::MsgHup {
        put_uint(out, 1, m.msg_type as u64);
    }
    for (field, v) in [
        (2, m.to),
        (3, m.from),
        (4, m.term),
        (5, m.log_term),
        (6, m.index),
    ] {
        if v != 0 {
            put_uint(out, field, v);
        }
    }
    for e in m.get_entries() {
        put_tag(out, 7, LEN);
        encode_varint(entry_len(e) as u64, out);
        write_entry(e, out);
    }
    if m.commit != 0 {
        put_uint(out, 8, m.commit);
    }
    if m.commit_term != 0 {
        put_uint(out, 15, m.commit_term);
    }
    if m.request_snapshot != 0 {
        put_uint(out, 13, m.request_snapshot);
    }
    if m.reject {
        put_uint(out, 10, 1);
    }
    if m.reject_hint != 0 {
        put_uint(out, 11, m.reject_hint);
    }
    if !m.context.is_empty() {
        put_bytes(out, 12, &m.context);
    }
    if m.deprecated_priority != 0 {
        put_uint(out, 14, m.deprecated_priority);
    }
    if m.priority != 0 {
        put_uint(out, 16, m.priority as u64);
    }
}

/// A cursor over protobuf bytes; every read is bounds-checked and `None` on anything the
/// fast path leaves to rust-protobuf.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at >= self.buf.len()
    }

    /// A varint of at most 10 bytes whose value fits a `u64` (a tenth byte above 1 would
    /// carry bits past 64: rust-protobuf's business).
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.at)?;
            self.at += 1;
            if i == 9 && b > 1 {
                return None;
            }
            v |= u64::from(b & 0x7F) << (7 * i);
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    /// The next `len`-prefixed slice, as a range of `buf`.
    fn len_delimited(&mut self) -> Option<std::ops::Range<usize>> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.at.checked_add(len)?;
        if end > self.buf.len() {
            return None;
        }
        let r = self.at..end;
        self.at = end;
        Some(r)
    }

    /// The next tag as (field, wire type).
    fn tag(&mut self) -> Option<(u64, u64)> {
        let t = self.varint()?;
        Some((t >> 3, t & 7))
    }
}

/// Reads `r` as an `Entry`; its data as a range of the whole buffer.
fn read_entry(r: &mut Reader<'_>) -> Option<(Entry, std::ops::Range<usize>)> {
    let mut e = Entry::default();
    let mut data = 0..0;
    while !r.done() {
        match r.tag()? {
            (1, VARINT) => {
                e.entry_type = match r.varint()? as i32 {
                    0 => EntryType::EntryNormal,
                    1 => EntryType::EntryConfChange,
                    2 => EntryType::EntryConfChangeV2,
                    _ => return None,
                }
            }
            (2, VARINT) => e.term = r.varint()?,
            (3, VARINT) => e.index = r.varint()?,
            (4, LEN) => data = r.len_delimited()?,
            // rust-protobuf reads a bool as a 32-bit varint.
            (5, VARINT) => e.sync_log = r.varint()? as u32 != 0,
            (6, LEN) => {
                let c = r.len_delimited()?;
                e.context = Bytes::copy_from_slice(r.buf.get(c)?);
            }
            _ => return None,
        }
    }
    Some((e, data))
}

fn message_type(v: i32) -> Option<MessageType> {
    use MessageType::*;
    Some(match v {
        0 => MsgHup,
        1 => MsgBeat,
        2 => MsgPropose,
        3 => MsgAppend,
        4 => MsgAppendResponse,
        5 => MsgRequestVote,
        6 => MsgRequestVoteResponse,
        7 => MsgSnapshot,
        8 => MsgHeartbeat,
        9 => MsgHeartbeatResponse,
        10 => MsgUnreachable,
        11 => MsgSnapStatus,
        12 => MsgCheckQuorum,
        13 => MsgTransferLeader,
        14 => MsgTimeoutNow,
        15 => MsgReadIndex,
        16 => MsgReadIndexResp,
        17 => MsgRequestPreVote,
        18 => MsgRequestPreVoteResponse,
        _ => return None,
    })
}

fn fast_decode(buf: &[u8]) -> Option<Message> {
    let mut r = Reader { buf, at: 0 };
    let mut m = Message::default();
    let mut entries = Vec::new();
    let mut data_len = 0usize;
    while !r.done() {
        match r.tag()? {
            (1, VARINT) => m.msg_type = message_type(r.varint()? as i32)?,
            (2, VARINT) => m.to = r.varint()?,
            (3, VARINT) => m.from = r.varint()?,
            (4, VARINT) => m.term = r.varint()?,
            (5, VARINT) => m.log_term = r.varint()?,
            (6, VARINT) => m.index = r.varint()?,
            (7, LEN) => {
                let range = r.len_delimited()?;
                let mut sub = Reader {
                    buf: buf.get(..range.end)?,
                    at: range.start,
                };
                let (e, data) = read_entry(&mut sub)?;
                data_len += data.len();
                entries.push((e, data));
            }
            (8, VARINT) => m.commit = r.varint()?,
            (10, VARINT) => m.reject = r.varint()? as u32 != 0,
            (11, VARINT) => m.reject_hint = r.varint()?,
            (12, LEN) => {
                let c = r.len_delimited()?;
                m.context = Bytes::copy_from_slice(buf.get(c)?);
            }
            (13, VARINT) => m.request_snapshot = r.varint()?,
            (14, VARINT) => m.deprecated_priority = r.varint()?,
            (15, VARINT) => m.commit_term = r.varint()?,
            (16, VARINT) => m.priority = r.varint()? as i64,
            // A snapshot (9), an unknown field, a wire type that does not match.
            _ => return None,
        }
    }
    if !entries.is_empty() {
        let mut all = BytesMut::with_capacity(data_len);
        for (_, d) in &entries {
            all.extend_from_slice(buf.get(d.clone())?);
        }
        let all = all.freeze();
        let mut at = 0;
        let mut list = Vec::with_capacity(entries.len());
        for (mut e, d) in entries {
            if !d.is_empty() {
                e.data = all.slice(at..at + d.len());
                at += d.len();
            }
            list.push(e);
        }
        m.set_entries(list.into());
    }
    Some(m)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use raft::eraftpb::{ConfState, Snapshot};

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// 0 half the time, else a value of random width (small and huge ones alike).
        fn num(&mut self) -> u64 {
            if self.next().is_multiple_of(2) {
                0
            } else {
                self.next() >> (self.next() % 64)
            }
        }
        fn bytes(&mut self) -> Bytes {
            let n = match self.next() % 4 {
                0 => 0,
                1 => (self.next() % 8) as usize,
                2 => (self.next() % 300) as usize,
                _ => (self.next() % 20_000) as usize,
            };
            (0..n)
                .map(|_| self.next() as u8)
                .collect::<Vec<u8>>()
                .into()
        }
    }

    fn random_message(rng: &mut Rng) -> Message {
        let mut m = Message::default();
        m.set_msg_type(message_type((rng.next() % 19) as i32).unwrap());
        m.to = rng.num();
        m.from = rng.num();
        m.term = rng.num();
        m.log_term = rng.num();
        m.index = rng.num();
        m.commit = rng.num();
        m.commit_term = rng.num();
        m.request_snapshot = rng.num();
        m.reject = rng.next().is_multiple_of(2);
        m.reject_hint = rng.num();
        m.deprecated_priority = rng.num();
        m.priority = rng.num() as i64;
        if rng.next().is_multiple_of(4) {
            m.context = rng.bytes();
        }
        for _ in 0..rng.next() % 5 {
            let mut e = Entry::default();
            e.set_entry_type(match rng.next() % 3 {
                0 => EntryType::EntryNormal,
                1 => EntryType::EntryConfChange,
                _ => EntryType::EntryConfChangeV2,
            });
            e.term = rng.num();
            e.index = rng.num();
            e.data = rng.bytes();
            if rng.next().is_multiple_of(4) {
                e.context = rng.bytes();
            }
            e.sync_log = rng.next().is_multiple_of(8);
            m.mut_entries().push(e);
        }
        m
    }

    /// Random messages of every type and field encode to rust-protobuf's bytes and decode
    /// (through the fast path) to what rust-protobuf decodes; every entry's data ends in
    /// one buffer of the message's own.
    #[test]
    fn random_messages_encode_and_decode_as_rust_protobuf_does() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for i in 0..3000 {
            let m = random_message(&mut rng);
            let ours = encode(&m);
            assert_eq!(ours, m.write_to_bytes().unwrap(), "message {i}: {m:?}");
            let bytes = Bytes::from(ours);
            assert!(
                fast_decode(&bytes).is_some(),
                "message {i} took the slow path"
            );
            let got = decode(&bytes).unwrap();
            let want = Message::parse_from_carllerche_bytes(&bytes).unwrap();
            assert_eq!(got, want, "message {i}");
            assert_eq!(got, m);
        }
    }

    /// What the fast path leaves to rust-protobuf comes out as rust-protobuf makes it: a
    /// snapshot, an unknown field, an unknown message or entry type, a mismatched wire
    /// type, a truncated message, an over-long varint.
    #[test]
    fn unusual_bytes_take_rust_protobufs_path_with_its_result() {
        let mut snap = Message::default();
        snap.set_msg_type(MessageType::MsgSnapshot);
        let mut s = Snapshot {
            data: Bytes::from_static(b"state"),
            ..Default::default()
        };
        s.mut_metadata().index = 7;
        s.mut_metadata().set_conf_state(ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        });
        snap.set_snapshot(s);
        let snap_bytes = snap.write_to_bytes().unwrap();
        assert_eq!(encode(&snap), snap_bytes);

        let mut append = Message::default();
        append.set_msg_type(MessageType::MsgAppend);
        append.index = 5;
        append.mut_entries().push(Entry {
            index: 6,
            data: Bytes::from_static(b"put"),
            ..Default::default()
        });
        let good = append.write_to_bytes().unwrap();

        let mut cases: Vec<Vec<u8>> = vec![
            snap_bytes,
            // Unknown field 30 (varint).
            [good.clone(), vec![0xF0, 0x01, 0x05]].concat(),
            // Message type 40.
            vec![0x08, 40],
            // Entry type 9 inside field 7.
            vec![0x3A, 0x02, 0x08, 0x09],
            // Field 2 as length-delimited.
            vec![0x12, 0x01, 0x00],
            // An 11-byte varint.
            [vec![0x10], vec![0xFF; 10], vec![0x01]].concat(),
            // A tenth varint byte with bits past 64.
            [vec![0x10], vec![0xFF; 9], vec![0x7F]].concat(),
            // A group (wire type 3).
            vec![0x0B, 0x0C],
            // Nothing at all: the default message.
            Vec::new(),
            // An entry with an unknown field 12 (found by the fuzz target: it must encode
            // again with the field).
            vec![0x3A, 0x02, 0x60, 0x03],
        ];
        // Every truncation of a good message.
        for n in 0..good.len() {
            cases.push(good[..n].to_vec());
        }
        for (i, c) in cases.into_iter().enumerate() {
            let b = Bytes::from(c);
            let want = Message::parse_from_carllerche_bytes(&b);
            match (decode(&b), want) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got, want, "case {i}");
                    assert_eq!(encode(&got), want.write_to_bytes().unwrap(), "case {i}");
                }
                (Err(_), Err(_)) => {}
                (got, want) => panic!("case {i}: {got:?} against {want:?}"),
            }
        }
    }

    /// Decoded entries keep no slice of the bytes they were decoded from.
    #[test]
    fn decoded_entries_share_a_buffer_of_their_own() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        for i in 0..3u8 {
            m.mut_entries().push(Entry {
                index: u64::from(i) + 1,
                data: vec![i; 100].into(),
                ..Default::default()
            });
        }
        let frame = Bytes::from(encode(&m));
        let got = decode(&frame).unwrap();
        let base = got.get_entries()[0].data.as_ptr();
        for (i, e) in got.get_entries().iter().enumerate() {
            assert_eq!(e.data.as_ptr(), base.wrapping_add(100 * i));
            let inside = frame.as_ptr_range().contains(&e.data.as_ptr());
            assert!(!inside, "entry {i} points into the frame");
        }
    }
}
