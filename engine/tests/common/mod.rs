//! Helpers shared by the engine's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use pontoon_engine::io::FaultFs;
use pontoon_engine::{Engine, IterOptions, Options};

pub const DIR: &str = "/db";

/// Options that make every mechanism run on tiny data.
pub fn small_options() -> Options {
    Options {
        write_buffer_size: 4 << 10,
        max_immutable_memtables: 2,
        l0_compaction_trigger: 2,
        l0_slowdown_trigger: 1000,
        l0_stop_trigger: 2000,
        max_bytes_for_level_base: 16 << 10,
        level_multiplier: 4,
        num_levels: 4,
        target_file_size: 4 << 10,
        block_size: 256,
        auto_compaction: false,
        ..Options::default()
    }
}

pub fn open(fs: &FaultFs, opts: Options) -> Engine {
    Engine::open_with_fs(Path::new(DIR), opts, Arc::new(fs.clone())).unwrap()
}

/// Everything in `cf`, forward.
pub fn scan(engine: &Engine, cf: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    engine
        .iter(cf, IterOptions::default())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// The model's view of `cf` as pairs.
pub fn model_pairs(m: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
