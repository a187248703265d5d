#!/usr/bin/env bash
# Put throughput of a local 3-store cluster split into R regions (issue 6's benchmark).
#
#   scripts/bench-regions.sh [REGIONS...]     default: 1 16 64 256
#
# For each R: a fresh cluster (scripts/local-cluster.sh, data under
# ${PONTOON_CLUSTER_DIR:-./data/bench-regions}), `pontoon-bench split --regions R`, then
# ${TOTAL:-100000} puts from 256 clients over a 100,000-key space; prints ops/s and the
# stores' CPU per put (user + system of the three processes over the run, from /proc).
# SETTLE=N waits N seconds after the split (leader balance) before measuring.
# Needs a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
export PONTOON_CLUSTER_DIR=${PONTOON_CLUSTER_DIR:-./data/bench-regions}
EP=127.0.0.1:2479,127.0.0.1:2489,127.0.0.1:2499
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
for R in "${@:-1 16 64 256}"; do
    for r in $R; do
        scripts/local-cluster.sh stop >/dev/null 2>&1 || true
        rm -rf "$PONTOON_CLUSTER_DIR"
        scripts/local-cluster.sh start 3 >/dev/null
        sleep 2
        if [ "$r" -gt 1 ]; then
            "${CARGO_TARGET_DIR:-./target}"/release/pontoon-bench --endpoints $EP split --regions "$r" --key-size 8 --key-space-size 100000 >/dev/null
        fi
        # The placement spreads the new regions' leaderships over the stores within seconds;
        # SETTLE=N waits N seconds for that before measuring (default 0: measure at once).
        sleep "${SETTLE:-0}"
        pids=$(cat "$PONTOON_CLUSTER_DIR"/s*/pid)
        before=$(ticks $pids)
        out=$("${CARGO_TARGET_DIR:-./target}"/release/pontoon-bench --endpoints $EP --clients 256 --conns 32 --json \
            put --total "${TOTAL:-100000}" --key-size 8 --val-size 256 --sequential-keys --key-space-size 100000)
        after=$(ticks $pids)
        ops=$(echo "$out" | sed -n 's/.*"requests_per_sec":\([0-9.]*\).*/\1/p')
        hz=$(getconf CLK_TCK)
        # Which stores lead the regions after the run (the placement moves leaders over time).
        leaders=$("${CARGO_TARGET_DIR:-./target}"/release/pontoonctl --endpoints $EP region list -w json 2>/dev/null |
            python3 -c 'import collections, json, sys; c = collections.Counter(str(r.get("leader_store_id", 0)) for r in json.load(sys.stdin)["regions"]); print(",".join(f"s{k}:{v}" for k, v in sorted(c.items())))' 2>/dev/null || echo "?")
        [ -n "${VERBOSE:-}" ] && echo "$out"
        echo "regions=$r ops/s=${ops%.*} store_cpu_us_per_put=$(( (after - before) * 1000000 / hz / ${TOTAL:-100000} )) leaders=$leaders"
    done
done
scripts/local-cluster.sh stop >/dev/null 2>&1 || true
