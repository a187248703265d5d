#!/usr/bin/env bash
# Runs every fuzz target for a short, bounded time (FUZZ_SECONDS, default 20) on the stable
# toolchain. Installs cargo-fuzz if it is missing. Long campaigns: raise FUZZ_SECONDS or run
# `cargo fuzz run --sanitizer none TARGET` from fuzz/ yourself.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
seconds="${FUZZ_SECONDS:-20}"
# The targets are the [[bin]]s of fuzz/Cargo.toml, as `cargo fuzz list` reports them:
# sst_decode, manifest_decode, engine_ops, raftlog_recovery, frame_decode, request_handling,
# snapshot_decode, chunk_assembly, raftlog_ops, raft_codec. A new target only needs its
# [[bin]] entry.
for target in $(cargo fuzz list); do
  echo "fuzz smoke: $target for ${seconds}s"
  cargo fuzz run --sanitizer none "$target" -- -max_total_time="$seconds" -rss_limit_mb=4096
done
