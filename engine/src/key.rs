//! Internal keys: a user key followed by an 8-byte trailer `(seq << 8) | kind`, little-endian.
//!
//! Internal keys order by user key ascending (bytewise), then by trailer descending, so the
//! newest version of a key comes first. A lookup "as of sequence `s`" seeks to
//! `(user_key, s, KIND_SEEK)` and the first entry at or after it with the same user key is the
//! newest version visible at `s`.

use std::cmp::Ordering;

/// Largest sequence number that fits the 56-bit field of the trailer.
pub const MAX_SEQ: u64 = (1 << 56) - 1;

/// Length of the trailer appended to every user key.
pub const TRAILER_LEN: usize = 8;

/// The kind of an entry stored under an internal key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ValueKind {
    /// A point tombstone: the key is deleted as of this sequence.
    Delete = 0,
    /// A value.
    Put = 1,
}

/// Kind byte used in seek targets; it sorts before every real kind of the same sequence.
pub const KIND_SEEK: u8 = 0xFF;

impl ValueKind {
    /// Decodes a kind byte; `None` for bytes that are not a stored kind.
    pub fn from_u8(b: u8) -> Option<ValueKind> {
        match b {
            0 => Some(ValueKind::Delete),
            1 => Some(ValueKind::Put),
            _ => None,
        }
    }
}

/// Packs a sequence number and a kind byte into a trailer.
#[inline]
pub fn pack_trailer(seq: u64, kind: u8) -> u64 {
    debug_assert!(seq <= MAX_SEQ);
    (seq << 8) | kind as u64
}

/// Appends `user_key` and its trailer to `buf`.
#[inline]
pub fn encode_into(buf: &mut Vec<u8>, user_key: &[u8], seq: u64, kind: u8) {
    buf.reserve(user_key.len() + TRAILER_LEN);
    buf.extend_from_slice(user_key);
    buf.extend_from_slice(&pack_trailer(seq, kind).to_le_bytes());
}

/// Returns the internal key for `user_key` at `seq` with `kind`.
#[inline]
pub fn encode(user_key: &[u8], seq: u64, kind: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(user_key.len() + TRAILER_LEN);
    encode_into(&mut v, user_key, seq, kind);
    v
}

/// The seek target that finds the newest version of `user_key` visible at `seq`.
#[inline]
pub fn seek_key(user_key: &[u8], seq: u64) -> Vec<u8> {
    encode(user_key, seq, KIND_SEEK)
}

/// A decoded view of an internal key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    /// The user's key.
    pub user_key: &'a [u8],
    /// Sequence number of the write.
    pub seq: u64,
    /// Raw kind byte (see [`ValueKind`]).
    pub kind: u8,
}

/// Splits an internal key; `None` if it is shorter than a trailer.
#[inline]
pub fn parse(ikey: &[u8]) -> Option<ParsedKey<'_>> {
    if ikey.len() < TRAILER_LEN {
        return None;
    }
    let (user_key, t) = ikey.split_at(ikey.len() - TRAILER_LEN);
    let mut b = [0u8; 8];
    b.copy_from_slice(t);
    let trailer = u64::from_le_bytes(b);
    Some(ParsedKey {
        user_key,
        seq: trailer >> 8,
        kind: (trailer & 0xFF) as u8,
    })
}

/// The user-key part of an internal key (the whole slice if it is too short to hold a trailer).
#[inline]
pub fn user_key(ikey: &[u8]) -> &[u8] {
    if ikey.len() < TRAILER_LEN {
        ikey
    } else {
        &ikey[..ikey.len() - TRAILER_LEN]
    }
}

#[inline]
fn trailer(ikey: &[u8]) -> u64 {
    if ikey.len() < TRAILER_LEN {
        return 0;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&ikey[ikey.len() - TRAILER_LEN..]);
    u64::from_le_bytes(b)
}

/// Total order of internal keys: user key ascending, then trailer (sequence, kind) descending.
/// Malformed keys (shorter than a trailer) compare as bare user keys with trailer 0; decoders
/// reject them before they reach a comparison that matters.
#[inline]
pub fn compare(a: &[u8], b: &[u8]) -> Ordering {
    match user_key(a).cmp(user_key(b)) {
        Ordering::Equal => trailer(b).cmp(&trailer(a)),
        o => o,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn newer_versions_sort_first() {
        let a = encode(b"k", 5, ValueKind::Put as u8);
        let b = encode(b"k", 3, ValueKind::Put as u8);
        let c = encode(b"l", 9, ValueKind::Put as u8);
        assert_eq!(compare(&a, &b), Ordering::Less);
        assert_eq!(compare(&b, &c), Ordering::Less);
        assert_eq!(compare(&seek_key(b"k", 5), &a), Ordering::Less);
        assert_eq!(compare(&seek_key(b"k", 4), &a), Ordering::Greater);
        let p = parse(&a).unwrap();
        assert_eq!((p.user_key, p.seq, p.kind), (&b"k"[..], 5, 1));
    }

    #[test]
    fn prefix_user_keys_order_bytewise() {
        let a = encode(b"ab", 1, 1);
        let b = encode(b"abc", 100, 1);
        assert_eq!(compare(&a, &b), Ordering::Less);
        let empty = encode(b"", 1, 1);
        assert_eq!(compare(&empty, &a), Ordering::Less);
    }
}
