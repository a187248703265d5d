//! etcd key ranges cut at region boundaries.
//!
//! A store never clips: a command whose key range is not entirely inside the region gets
//! `KeyNotInRegion`. So the client cuts a range `(key, range_end)` into one part per
//! region itself. etcd's rules for `range_end`: empty = the single key `key`; `"\0"` =
//! every key ≥ `key`; otherwise `[key, range_end)`, which is empty when
//! `range_end <= key`.

use crate::proto::metapb;
use crate::region_cache::before_end;

/// The end of a span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanEnd {
    /// No end: every key from the start on (etcd's `range_end = "\0"`).
    Unbounded,
    /// Every key before this one (exclusive).
    Before(Vec<u8>),
}

/// What an etcd `(key, range_end)` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpan {
    /// One key (empty `range_end`): handled by one region.
    Single,
    /// No key at all (`range_end <= key`): any one region answers with nothing.
    Empty,
    /// `[key, end)`, possibly across several regions.
    Range(SpanEnd),
}

impl KeySpan {
    /// Decodes etcd's `range_end` for `key`.
    pub fn of(key: &[u8], range_end: &[u8]) -> KeySpan {
        if range_end.is_empty() {
            KeySpan::Single
        } else if range_end == [0] {
            KeySpan::Range(SpanEnd::Unbounded)
        } else if range_end <= key {
            KeySpan::Empty
        } else {
            KeySpan::Range(SpanEnd::Before(range_end.to_vec()))
        }
    }
}

/// The part of `[pos, end)` inside `region`, as an etcd `(key, range_end)` pair, for a
/// `region` that contains `pos`.
///
/// The part's start is `pos`. Its end is the smaller of `end` and the region's end, where
/// either may be unbounded; an unbounded part is written `"\0"`. A region ending at the
/// key `"\0"` holds only the empty key below it: that part is written as the single key
/// `""` (an end of `"\0"` would read as unbounded).
pub fn clip(pos: &[u8], end: &SpanEnd, region: &metapb::Region) -> (Vec<u8>, Vec<u8>) {
    let region_end = &region.end_key;
    let part_end = match end {
        _ if region_end.is_empty() => end.clone(),
        SpanEnd::Unbounded => SpanEnd::Before(region_end.clone()),
        SpanEnd::Before(e) => SpanEnd::Before(e.min(region_end).clone()),
    };
    let range_end = match part_end {
        SpanEnd::Unbounded => vec![0],
        SpanEnd::Before(e) if e == [0] => Vec::new(),
        SpanEnd::Before(e) => e,
    };
    (pos.to_vec(), range_end)
}

/// Where the walk over `[_, end)` continues after `region`: its end key, or `None` when the
/// region reaches the end of the span (or of the key space).
pub fn next_start(region: &metapb::Region, end: &SpanEnd) -> Option<Vec<u8>> {
    let region_end = &region.end_key;
    if region_end.is_empty() {
        return None;
    }
    match end {
        SpanEnd::Unbounded => Some(region_end.clone()),
        SpanEnd::Before(e) if before_end(region_end, e) => Some(region_end.clone()),
        SpanEnd::Before(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &[u8], end: &[u8]) -> metapb::Region {
        metapb::Region {
            id: 1,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        }
    }

    fn before(k: &[u8]) -> SpanEnd {
        SpanEnd::Before(k.to_vec())
    }

    #[test]
    fn etcd_range_ends() {
        assert_eq!(KeySpan::of(b"a", b""), KeySpan::Single);
        assert_eq!(KeySpan::of(b"a", b"\0"), KeySpan::Range(SpanEnd::Unbounded));
        assert_eq!(
            KeySpan::of(b"\0", b"\0"),
            KeySpan::Range(SpanEnd::Unbounded)
        );
        assert_eq!(KeySpan::of(b"a", b"c"), KeySpan::Range(before(b"c")));
        assert_eq!(KeySpan::of(b"c", b"a"), KeySpan::Empty);
        assert_eq!(KeySpan::of(b"c", b"c"), KeySpan::Empty);
    }

    #[test]
    fn parts_are_clipped_to_the_region() {
        let mid = region(b"g", b"p");
        let last = region(b"p", b"");
        // A bounded span ending inside, at, or beyond the region's end.
        assert_eq!(
            clip(b"h", &before(b"k"), &mid),
            (b"h".to_vec(), b"k".to_vec())
        );
        assert_eq!(
            clip(b"g", &before(b"p"), &mid),
            (b"g".to_vec(), b"p".to_vec())
        );
        assert_eq!(
            clip(b"g", &before(b"z"), &mid),
            (b"g".to_vec(), b"p".to_vec())
        );
        // Unbounded span, bounded region; bounded span, unbounded region; both unbounded.
        assert_eq!(
            clip(b"h", &SpanEnd::Unbounded, &mid),
            (b"h".to_vec(), b"p".to_vec())
        );
        assert_eq!(
            clip(b"q", &before(b"z"), &last),
            (b"q".to_vec(), b"z".to_vec())
        );
        assert_eq!(
            clip(b"p", &SpanEnd::Unbounded, &last),
            (b"p".to_vec(), vec![0])
        );
        // A region ending at "\0" holds only the empty key.
        let tiny = region(b"", b"\0");
        assert_eq!(
            clip(b"", &SpanEnd::Unbounded, &tiny),
            (Vec::new(), Vec::new())
        );
    }

    #[test]
    fn walks_stop_at_the_span_or_key_space_end() {
        let mid = region(b"g", b"p");
        assert_eq!(next_start(&mid, &before(b"z")), Some(b"p".to_vec()));
        assert_eq!(next_start(&mid, &SpanEnd::Unbounded), Some(b"p".to_vec()));
        assert_eq!(next_start(&mid, &before(b"p")), None);
        assert_eq!(next_start(&mid, &before(b"k")), None);
        assert_eq!(next_start(&region(b"p", b""), &SpanEnd::Unbounded), None);
    }
}
