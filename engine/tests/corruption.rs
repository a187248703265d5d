//! Damaged files: every on-disk structure the engine reads (CURRENT, manifest, SSTables)
//! either opens to exactly the right data or fails with a typed error naming the file.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pontoon_engine::io::{FaultFs, FileSystem};
use pontoon_engine::{Engine, Error};

use common::*;

fn populated() -> FaultFs {
    let fs = FaultFs::new();
    let engine = open(&fs, small_options());
    for i in 0..300u32 {
        engine
            .put("default", &i.to_be_bytes(), format!("value-{i}").as_bytes())
            .unwrap();
    }
    engine.compact_all().unwrap();
    engine.close().unwrap();
    // A second open removes (durably) the files compaction made obsolete, so every table
    // left is live.
    let fs = fs.crash();
    open(&fs, small_options()).close().unwrap();
    fs.crash()
}

fn files(fs: &FaultFs, suffix: &str) -> Vec<PathBuf> {
    fs.list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(suffix) || n.starts_with(suffix))
        .map(|n| Path::new(DIR).join(n))
        .collect()
}

fn names_file(err: &Error, file: &Path) -> bool {
    match err {
        Error::Corruption { file: f, .. } | Error::ChecksumMismatch { file: f, .. } => f == file,
        Error::Io { path, .. } => path == file,
        _ => false,
    }
}

/// Opens and reads everything; Ok(data) or the first error.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn read_all(fs: &FaultFs) -> Result<Pairs, Error> {
    let engine = Engine::open_with_fs(DIR, small_options(), Arc::new(fs.clone()))?;
    let mut out = Vec::new();
    for r in engine.iter("default", Default::default())? {
        out.push(r?);
    }
    for i in (0..300u32).step_by(7) {
        let got = engine.get("default", &i.to_be_bytes())?;
        assert_eq!(
            got,
            Some(format!("value-{i}").into_bytes()),
            "a point read returned wrong data"
        );
    }
    Ok(out)
}

#[test]
fn flipped_bytes_in_sstables_are_detected() {
    let good = read_all(&populated()).unwrap();
    assert_eq!(good.len(), 300);
    let base = populated();
    let sst = files(&base, ".sst")[0].clone();
    let len = base.file_len(&sst).unwrap();
    for offset in (0..len).step_by(13) {
        let fs = populated();
        let b = fs.state_byte(&sst, offset);
        fs.poke(&sst, offset, b ^ 0x5A);
        match read_all(&fs) {
            Ok(data) => assert!(data == good, "flip at {offset} returned wrong data"),
            Err(e) => assert!(names_file(&e, &sst), "flip at {offset}: {e}"),
        }
    }
}

#[test]
fn truncated_sstables_are_detected() {
    let base = populated();
    let sst = files(&base, ".sst")[0].clone();
    let len = base.file_len(&sst).unwrap();
    for cut in [0, 1, len / 3, len / 2, len - 1] {
        let fs = populated();
        fs.truncate(&sst, cut);
        let Err(err) = read_all(&fs) else {
            panic!("a table cut at {cut} of {len} bytes opened");
        };
        assert!(names_file(&err, &sst), "cut at {cut}: {err}");
    }
}

#[test]
fn damaged_manifest_or_current_is_reported() {
    let base = populated();
    let manifest = files(&base, "MANIFEST-")[0].clone();
    let len = base.file_len(&manifest).unwrap();
    // A flip inside the only record: the manifest's last record, so the torn-tail rule
    // applies only when the damage is in the final record; either way no wrong data.
    for offset in 0..len.min(12) {
        let fs = populated();
        let b = fs.state_byte(&manifest, offset);
        fs.poke(&manifest, offset, b ^ 0xFF);
        let Err(err) = read_all(&fs) else {
            panic!("manifest with byte {offset} flipped opened");
        };
        assert!(names_file(&err, &manifest), "flip at {offset}: {err}");
    }
    let fs = populated();
    fs.truncate(&Path::new(DIR).join("CURRENT"), 3);
    let Err(err) = read_all(&fs) else {
        panic!("opened with a damaged CURRENT");
    };
    assert!(names_file(&err, &Path::new(DIR).join("CURRENT")), "{err}");
    // CURRENT naming a missing manifest.
    let fs = populated();
    fs.remove(&manifest).unwrap();
    let Err(err) = read_all(&fs) else {
        panic!("opened with the manifest missing");
    };
    assert!(names_file(&err, &manifest), "{err}");
}

#[test]
fn missing_sstable_is_reported() {
    let fs = populated();
    let sst = files(&fs, ".sst")[0].clone();
    fs.remove(&sst).unwrap();
    let Err(err) = read_all(&fs) else {
        panic!("opened with {} missing", sst.display());
    };
    assert!(names_file(&err, &sst), "{err}");
}
