//! Shared helpers of the benchmarks (workloads live in `benches/`).
