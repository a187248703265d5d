//! Compiles `proto/*.proto` to Rust with `protox` (a protobuf compiler written in Rust) and
//! `prost-build`, so building the crate needs no system `protoc`.

use std::path::PathBuf;

/// The files of `proto/`, in no particular order; imports are resolved by protox.
const PROTOS: &[&str] = &[
    "metapb.proto",
    "errorpb.proto",
    "raft_serverpb.proto",
    "raft_cmdpb.proto",
    "pontoonpb.proto",
    "framepb.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", dir.display());
    for file in PROTOS {
        println!("cargo:rerun-if-changed={}", dir.join(file).display());
    }
    let fds = protox::compile(PROTOS, [&dir])?;
    prost_build::Config::new()
        // A raft message's payload stays a slice of the frame it arrived in (no copy per
        // message); raft-rs's entries parsed from it slice it again.
        .bytes([".raft_serverpb.RaftMessage.message"])
        .compile_fds(fds)?;
    Ok(())
}
