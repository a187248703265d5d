//! Loads keys into an engine in `./data` (or the directory given as the first argument),
//! flushes and compacts, reads everything back, and prints what it did.
//!
//! `cargo run --release -p pontoon-engine --example demo [DIR] [KEYS]`

use std::time::Instant;

use pontoon_engine::{Engine, IterOptions, Options, WriteBatch};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "./data".to_string());
    let keys: u64 = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|e| format!("KEYS must be a number: {e}"))?,
        None => 200_000,
    };
    let engine = Engine::open(&dir, Options::default())?;
    println!("opened {dir}: column families {:?}", engine.cf_names());

    let start = Instant::now();
    let mut batch = WriteBatch::new();
    for i in 0..keys {
        batch.put("default", format!("key{i:012}").as_bytes(), &[b'v'; 100]);
        if batch.len() == 1000 {
            engine.write(&batch)?;
            batch.clear();
        }
    }
    engine.write(&batch)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "wrote {keys} keys (16-byte keys, 100-byte values) in {secs:.2}s: {:.0} keys/s",
        keys as f64 / secs
    );

    let start = Instant::now();
    let flushed = engine.flush()?;
    engine.compact_all()?;
    println!(
        "flushed up to sequence {flushed} and compacted in {:.2}s",
        start.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let mut found = 0u64;
    for i in (0..keys).step_by(97) {
        if engine
            .get("default", format!("key{i:012}").as_bytes())?
            .is_some()
        {
            found += 1;
        }
    }
    let n = engine.iter("default", IterOptions::default())?.count();
    println!(
        "read back: {found} point lookups hit, a full scan saw {n} keys ({:.2}s)",
        start.elapsed().as_secs_f64()
    );
    let stats = engine.stats();
    println!("levels (files): {:?}", stats.level_files);
    println!("levels (bytes): {:?}", stats.level_bytes);
    engine.close()?;
    println!("closed cleanly");
    Ok(())
}
