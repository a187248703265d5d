//! Round-trip, property and corruption tests for tables.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;

use super::format;
use super::*;
use crate::error::Error;
use crate::io::{FaultFs, FileSystem};
use crate::key::{self, KIND_SEEK, MAX_SEQ};
use crate::range_del::RangeTombstone;

/// Model: `(user_key, Reverse(trailer))` orders exactly like `key::compare`.
type Model = BTreeMap<(Vec<u8>, Reverse<u64>), Vec<u8>>;

fn ikey_of(k: &(Vec<u8>, Reverse<u64>)) -> Vec<u8> {
    let t = k.1 .0;
    key::encode(&k.0, t >> 8, (t & 0xFF) as u8)
}

fn model_key(ikey: &[u8]) -> (Vec<u8>, Reverse<u64>) {
    let p = key::parse(ikey).unwrap();
    (
        p.user_key.to_vec(),
        Reverse(key::pack_trailer(p.seq, p.kind)),
    )
}

fn build_bytes(
    model: &Model,
    tombs: &[RangeTombstone],
    opts: TableOptions,
) -> (Vec<u8>, TableProperties) {
    let fs = FaultFs::new();
    let path = Path::new("/t/000001.sst");
    let file = fs.create(path).unwrap();
    let mut b = TableBuilder::new(file, path.to_path_buf(), opts);
    for (k, v) in model {
        b.add(&ikey_of(k), v).unwrap();
    }
    for t in tombs {
        b.add_range_tombstone(t.clone());
    }
    assert_eq!(b.num_entries(), (model.len() + tombs.len()) as u64);
    let props = b.finish().unwrap();
    let bytes = fs.read_all(path).unwrap();
    assert_eq!(props.file_size, bytes.len() as u64);
    (bytes, props)
}

fn open_bytes(bytes: Vec<u8>) -> crate::error::Result<Arc<Table>> {
    Table::open(Arc::new(BytesFile(bytes)), PathBuf::from("/t/000001.sst")).map(Arc::new)
}

fn model_get(model: &Model, uk: &[u8], seq: u64) -> Option<(u64, u8, Vec<u8>)> {
    let from = (uk.to_vec(), Reverse(key::pack_trailer(seq, KIND_SEEK)));
    model
        .range(from..)
        .next()
        .filter(|(k, _)| k.0 == uk)
        .map(|(k, v)| (k.1 .0 >> 8, (k.1 .0 & 0xFF) as u8, v.clone()))
}

fn collect_forward(it: &mut TableIter) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    it.seek_to_first().unwrap();
    while it.valid() {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.next().unwrap();
    }
    out
}

fn collect_backward(it: &mut TableIter) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    it.seek_to_last().unwrap();
    while it.valid() {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.prev().unwrap();
    }
    out
}

fn check_table(model: &Model, tombs: &[RangeTombstone], opts: TableOptions) {
    let (bytes, props) = build_bytes(model, tombs, opts);
    let t = open_bytes(bytes).unwrap();
    let mut read_props = t.properties().clone();
    assert_eq!(read_props, props);
    read_props.file_size = 0;
    assert_eq!(props.num_entries, model.len() as u64);
    assert_eq!(props.num_range_deletions, tombs.len() as u64);
    let seqs = model
        .keys()
        .map(|k| k.1 .0 >> 8)
        .chain(tombs.iter().map(|t| t.seq));
    assert_eq!(props.min_seq, seqs.clone().min().unwrap_or(0));
    assert_eq!(props.max_seq, seqs.max().unwrap_or(0));
    let dels = model.keys().filter(|k| k.1 .0 & 0xFF == 0).count();
    assert_eq!(props.num_deletions, dels as u64);
    let lo = model
        .keys()
        .map(|k| k.0.clone())
        .chain(tombs.iter().map(|t| t.start.clone()))
        .min();
    let hi = model
        .keys()
        .map(|k| k.0.clone())
        .chain(tombs.iter().map(|t| t.end.clone()))
        .max();
    assert_eq!(props.smallest_user_key, lo.unwrap_or_default());
    assert_eq!(props.largest_user_key, hi.unwrap_or_default());
    let mut got_t = t.range_tombstones().to_vec();
    let mut want_t = tombs.to_vec();
    got_t.sort_by(|a, b| (&a.start, &a.end, a.seq).cmp(&(&b.start, &b.end, b.seq)));
    want_t.sort_by(|a, b| (&a.start, &a.end, a.seq).cmp(&(&b.start, &b.end, b.seq)));
    assert_eq!(got_t, want_t);

    let expected: Vec<(Vec<u8>, Vec<u8>)> =
        model.iter().map(|(k, v)| (ikey_of(k), v.clone())).collect();
    let mut it = TableIter::new(t.clone());
    assert!(!it.valid());
    assert_eq!(collect_forward(&mut it), expected);
    let mut rev = expected.clone();
    rev.reverse();
    assert_eq!(collect_backward(&mut it), rev);

    let mut probes: Vec<Vec<u8>> = model.keys().map(|k| k.0.clone()).collect();
    probes.extend([vec![], vec![0], vec![9, 9, 9], vec![1, 2]]);
    probes.dedup();
    for uk in &probes {
        assert!(model_get(model, uk, MAX_SEQ).is_none() || t.may_contain(uk));
        for seq in [0, 1, 5, 10, 25, 49, MAX_SEQ, u64::MAX] {
            let s = seq.min(MAX_SEQ);
            assert_eq!(
                t.get(uk, seq).unwrap(),
                model_get(model, uk, s),
                "get {uk:?}@{seq}"
            );
            if ![0, 5, 25, MAX_SEQ].contains(&seq) {
                continue;
            }
            for kind in [0u8, KIND_SEEK] {
                let target = key::encode(uk, s, kind);
                let mk = model_key(&target);
                // seek
                let want: Vec<_> = model
                    .range(mk.clone()..)
                    .take(3)
                    .map(|(k, v)| (ikey_of(k), v.clone()))
                    .collect();
                it.seek(&target).unwrap();
                let mut got = Vec::new();
                while it.valid() && got.len() < 3 {
                    got.push((it.key().to_vec(), it.value().to_vec()));
                    it.next().unwrap();
                }
                assert_eq!(got, want, "seek {uk:?}@{s}/{kind}");
                // seek_for_prev
                let want: Vec<_> = model
                    .range(..=mk)
                    .rev()
                    .take(3)
                    .map(|(k, v)| (ikey_of(k), v.clone()))
                    .collect();
                it.seek_for_prev(&target).unwrap();
                let mut got = Vec::new();
                while it.valid() && got.len() < 3 {
                    got.push((it.key().to_vec(), it.value().to_vec()));
                    it.prev().unwrap();
                }
                assert_eq!(got, want, "seek_for_prev {uk:?}@{s}/{kind}");
            }
        }
    }
}

fn arb_opts() -> impl Strategy<Value = TableOptions> {
    (
        prop::sample::select(vec![1usize, 64, 200, 4096]),
        prop::sample::select(vec![1usize, 2, 3, 16]),
        prop::sample::select(vec![0u32, 10]),
        any::<bool>(),
    )
        .prop_map(
            |(block_size, restart_interval, bloom_bits_per_key, lz4)| TableOptions {
                block_size,
                restart_interval,
                bloom_bits_per_key,
                compression: if lz4 {
                    Compression::Lz4
                } else {
                    Compression::None
                },
            },
        )
}

fn arb_model() -> impl Strategy<Value = Model> {
    prop::collection::btree_map(
        (prop::collection::vec(0u8..4, 0..6), 1u64..50, 0u8..2)
            .prop_map(|(k, s, kind)| (k, Reverse(key::pack_trailer(s, kind)))),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..20),
            prop::collection::vec(0u8..2, 0..300),
        ],
        0..300,
    )
}

fn arb_tombs() -> impl Strategy<Value = Vec<RangeTombstone>> {
    prop::collection::vec(
        (
            prop::collection::vec(0u8..4, 0..4),
            prop::collection::vec(0u8..4, 0..4),
            1u64..60,
        )
            .prop_map(|(start, end, seq)| RangeTombstone { start, end, seq }),
        0..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn sstable_round_trip_matches_model(model in arb_model(), tombs in arb_tombs(), opts in arb_opts()) {
        check_table(&model, &tombs, opts);
    }
}

fn sample_model(n: usize) -> Model {
    let mut m = Model::new();
    for i in 0..n {
        let uk = format!("key-{:04}", i / 2).into_bytes();
        let seq = 100 - (i % 2) as u64 * 50 + i as u64;
        let kind = if i % 5 == 0 { 0 } else { 1 };
        let v = if kind == 0 {
            vec![]
        } else {
            format!("value-{i}-").repeat(i % 7 + 1).into_bytes()
        };
        m.insert((uk, Reverse(key::pack_trailer(seq, kind))), v);
    }
    m
}

#[test]
fn sstable_fixed_tables_round_trip() {
    let tombs = vec![
        RangeTombstone {
            start: b"key-0010".to_vec(),
            end: b"key-0020".to_vec(),
            seq: 500,
        },
        RangeTombstone {
            start: b"a".to_vec(),
            end: b"b".to_vec(),
            seq: 7,
        },
    ];
    for compression in [Compression::None, Compression::Lz4] {
        for block_size in [1, 100, 4096] {
            let opts = TableOptions {
                block_size,
                compression,
                ..TableOptions::default()
            };
            check_table(&sample_model(500), &tombs, opts);
        }
    }
}

#[test]
fn sstable_properties() {
    let model = sample_model(10);
    let tombs = vec![RangeTombstone {
        start: b"a".to_vec(),
        end: b"zz".to_vec(),
        seq: 3,
    }];
    let (_, p) = build_bytes(&model, &tombs, TableOptions::default());
    assert_eq!(p.smallest_user_key, b"a");
    assert_eq!(p.largest_user_key, b"zz");
    assert_eq!(p.num_entries, 10);
    assert_eq!(p.num_deletions, 2);
    assert_eq!(p.num_range_deletions, 1);
    assert_eq!(p.min_seq, 3);
    assert_eq!(p.max_seq, 108);
    assert_eq!(
        p.raw_key_bytes,
        model.keys().map(|k| k.0.len() as u64 + 8).sum::<u64>()
    );
    assert_eq!(
        p.raw_value_bytes,
        model.values().map(|v| v.len() as u64).sum::<u64>()
    );
    let (_, p) = build_bytes(&model, &[], TableOptions::default());
    assert_eq!(p.smallest_user_key, b"key-0000");
    assert_eq!(p.largest_user_key, b"key-0004");
    assert_eq!(p.min_seq, 50 + 1);
    // Empty and tombstone-only tables.
    let (bytes, p) = build_bytes(&Model::new(), &[], TableOptions::default());
    assert_eq!((p.num_entries, p.min_seq, p.max_seq), (0, 0, 0));
    let t = open_bytes(bytes).unwrap();
    assert_eq!(t.get(b"x", MAX_SEQ).unwrap(), None);
    let mut it = TableIter::new(t);
    it.seek_to_first().unwrap();
    assert!(!it.valid());
    it.seek_for_prev(b"zzzzzzzzzz").unwrap();
    assert!(!it.valid());
    let (_, p) = build_bytes(&Model::new(), &tombs, TableOptions::default());
    assert_eq!(
        (
            p.smallest_user_key.as_slice(),
            p.largest_user_key.as_slice()
        ),
        (&b"a"[..], &b"zz"[..])
    );
    assert_eq!((p.min_seq, p.max_seq), (3, 3));
}

#[test]
#[cfg_attr(debug_assertions, should_panic(expected = "out of order"))]
fn sstable_rejects_out_of_order_keys() {
    let fs = FaultFs::new();
    let path = Path::new("/t/x.sst");
    let mut b = TableBuilder::new(
        fs.create(path).unwrap(),
        path.to_path_buf(),
        TableOptions::default(),
    );
    b.add(&key::encode(b"b", 1, 1), b"").unwrap();
    let r = b.add(&key::encode(b"a", 1, 1), b"");
    assert!(matches!(r, Err(Error::InvalidArgument(_))));
    let r = b.add(&key::encode(b"b", 1, 1), b"");
    assert!(matches!(r, Err(Error::InvalidArgument(_))));
}

fn assert_typed(e: &Error) {
    match e {
        Error::Corruption { file, .. } | Error::ChecksumMismatch { file, .. } => {
            assert_eq!(file, Path::new("/t/000001.sst"))
        }
        other => panic!("untyped corruption error: {other:?}"),
    }
}

/// Reads everything from a possibly damaged table: every answer is an error naming the file
/// or exactly the right data.
fn check_damaged(bytes: Vec<u8>, model: &Model, props: &TableProperties, tombs: &[RangeTombstone]) {
    let t = match open_bytes(bytes) {
        Ok(t) => t,
        Err(e) => return assert_typed(&e),
    };
    let mut p = t.properties().clone();
    p.file_size = props.file_size;
    assert_eq!(&p, props);
    assert_eq!(t.range_tombstones().len(), tombs.len());
    for k in model.keys() {
        for seq in [k.1 .0 >> 8, MAX_SEQ] {
            match t.get(&k.0, seq) {
                Ok(v) => assert_eq!(v, model_get(model, &k.0, seq)),
                Err(e) => assert_typed(&e),
            }
        }
    }
    let expected: Vec<(Vec<u8>, Vec<u8>)> =
        model.iter().map(|(k, v)| (ikey_of(k), v.clone())).collect();
    for backward in [false, true] {
        let mut it = TableIter::new(t.clone());
        let mut got = Vec::new();
        let mut r = if backward {
            it.seek_to_last()
        } else {
            it.seek_to_first()
        };
        while r.is_ok() && it.valid() {
            got.push((it.key().to_vec(), it.value().to_vec()));
            r = if backward { it.prev() } else { it.next() };
        }
        if backward {
            got.reverse();
        }
        match r {
            Ok(()) => assert_eq!(got, expected),
            Err(e) => {
                assert_typed(&e);
                let tail = if backward {
                    &expected[expected.len() - got.len()..]
                } else {
                    &expected[..got.len()]
                };
                assert_eq!(got, tail);
            }
        }
    }
}

#[test]
fn sstable_corruption_is_detected() {
    let model = sample_model(60);
    let tombs = vec![RangeTombstone {
        start: b"key-0003".to_vec(),
        end: b"key-0007".to_vec(),
        seq: 77,
    }];
    for compression in [Compression::None, Compression::Lz4] {
        let opts = TableOptions {
            block_size: 128,
            restart_interval: 4,
            compression,
            ..TableOptions::default()
        };
        let (bytes, props) = build_bytes(&model, &tombs, opts);
        for off in 0..bytes.len() {
            for mask in [0x01u8, 0xFF] {
                let mut b = bytes.clone();
                b[off] ^= mask;
                check_damaged(b, &model, &props, &tombs);
            }
        }
        for len in 0..bytes.len() {
            check_damaged(bytes[..len].to_vec(), &model, &props, &tombs);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(open_bytes(longer).is_err());
    }
}

#[test]
fn sstable_corruption_via_fault_fs() {
    let fs = FaultFs::new();
    let path = Path::new("/t/000001.sst");
    let mut b = TableBuilder::new(
        fs.create(path).unwrap(),
        path.to_path_buf(),
        TableOptions::default(),
    );
    let model = sample_model(40);
    for (k, v) in &model {
        b.add(&ikey_of(k), v).unwrap();
    }
    b.finish().unwrap();
    assert!(fs.poke(path, 10, 0xEE));
    let t = Arc::new(Table::open(fs.open(path).unwrap(), path.to_path_buf()).unwrap());
    let e = t.get(b"key-0000", MAX_SEQ).unwrap_err();
    assert!(
        matches!(e, Error::ChecksumMismatch { offset: 0, .. }),
        "{e:?}"
    );
    let mut it = TableIter::new(t);
    assert!(it.seek_to_first().is_err());
    assert!(!it.valid());
    assert!(fs.truncate(path, 100));
    let e = Table::open(fs.open(path).unwrap(), path.to_path_buf()).unwrap_err();
    assert!(matches!(e, Error::Corruption { .. }), "{e:?}");
}

#[test]
fn sstable_lz4_shrinks_compressible_data() {
    let model = sample_model(300);
    let (plain, _) = build_bytes(&model, &[], TableOptions::default());
    let opts = TableOptions {
        compression: Compression::Lz4,
        ..TableOptions::default()
    };
    let (packed, _) = build_bytes(&model, &[], opts);
    assert!(
        packed.len() < plain.len() / 2,
        "{} vs {}",
        packed.len(),
        plain.len()
    );
}

/// What the fuzz target does: open, iterate both ways, look up; must never panic.
fn exercise(bytes: Vec<u8>) {
    let Ok(t) = open_bytes(bytes) else { return };
    let mut probes: Vec<Vec<u8>> = vec![vec![], b"key-0003".to_vec()];
    let mut it = TableIter::new(t.clone());
    let mut r = it.seek_to_first();
    while r.is_ok() && it.valid() {
        probes.push(key::user_key(it.key()).to_vec());
        let _ = it.value();
        r = it.next();
    }
    let mut r = it.seek_to_last();
    while r.is_ok() && it.valid() {
        let _ = (it.key(), it.value());
        r = it.prev();
    }
    for uk in probes.iter().take(20) {
        for seq in [0, 60, MAX_SEQ] {
            let _ = t.get(uk, seq);
            let target = key::encode(uk, seq, KIND_SEEK);
            if it.seek(&target).is_ok() && it.valid() {
                let _ = it.prev();
            }
            if it.seek_for_prev(&target).is_ok() && it.valid() {
                let _ = it.next();
            }
        }
    }
}

/// Damages blocks and then repairs their checksums, so the decoders behind the crc see
/// arbitrary bytes: they must report errors, not panic.
#[test]
fn sstable_decoders_survive_bytes_with_valid_checksums() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let model = sample_model(80);
    let tombs = vec![RangeTombstone {
        start: b"k".to_vec(),
        end: b"l".to_vec(),
        seq: 9,
    }];
    for compression in [Compression::None, Compression::Lz4] {
        let opts = TableOptions {
            block_size: 200,
            restart_interval: 3,
            compression,
            ..TableOptions::default()
        };
        let (bytes, _) = build_bytes(&model, &tombs, opts);
        let t = open_bytes(bytes.clone()).unwrap();
        let footer = format::Footer::decode(&bytes, Path::new("x")).unwrap();
        let mut handles = vec![
            footer.filter,
            footer.range_del,
            footer.properties,
            footer.index,
        ];
        handles.extend((0..t.index_len()).map(|i| t.index_entry(i).unwrap().handle));
        for _ in 0..1500 {
            let mut b = bytes.clone();
            let h = handles[rng.gen_range(0..handles.len())];
            let (start, end) = (h.offset as usize, (h.offset + h.size) as usize);
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(start..=end);
                b[at] = if rng.gen_bool(0.3) {
                    rng.gen_range(0..3)
                } else {
                    rng.gen()
                };
            }
            let crc = format::block_crc(&b[start..end], b[end]);
            b[end + 1..end + 5].copy_from_slice(&crc.to_le_bytes());
            exercise(b);
        }
        // Plain random garbage and a valid footer over garbage.
        for len in [0usize, 1, 79, 80, 81, 200, 1000] {
            let mut b: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            exercise(b.clone());
            if len >= 80 {
                let f = format::Footer {
                    filter: format::BlockHandle {
                        offset: rng.gen_range(0..len as u64),
                        size: 3,
                    },
                    ..footer
                };
                let n = b.len();
                b[n - 80..].copy_from_slice(&f.encode());
                exercise(b);
            }
        }
    }
}

#[test]
fn sstable_types_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Table>();
    send_sync::<TableIter>();
    send::<TableBuilder>();
}
