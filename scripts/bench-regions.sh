#!/usr/bin/env bash
# Put throughput of a local 3-store cluster split into R regions (issue 6's benchmark).
#
#   scripts/bench-regions.sh [REGIONS...]     default: 1 16 64 256
#
# For each R: a fresh cluster (scripts/local-cluster.sh, data under
# ${PONTOON_CLUSTER_DIR:-./data/bench-regions}), `pontoon-bench split --regions R`, then
# ${TOTAL:-100000} puts from 256 clients over ${CONNS:-32} client instances (each holds one
# connection per store it talks to) on a 100,000-key space; prints ops/s, the stores' CPU
# per put (user + system of the three processes over the run, from /proc), TCP segments
# per put on this machine (from `nstat`, when installed: every request, answer and raft
# message batch is at least one), the share of all CPU time the hypervisor gave to other
# guests during the run (`steal`, from /proc/stat: on a shared VM it is a large part of
# why the same build runs a third slower from one minute to the next; compare runs of
# similar steal) and which stores lead the regions afterwards.
#
# After the split the script waits (up to BALANCE_WAIT seconds, default 120) until the
# placement has evened out the leaderships (counts at most one apart: a split leaves every
# new region led by the splitting store, and a run measured before the balance is done
# measures one busy store), then SETTLE more seconds (default 0).
# REPEAT=N runs the whole list N times in rotation and ends with the median ops/s of each
# R and its ratio to the first R given, and the median of the ratios within each
# repetition: this machine's speed drifts by a third within minutes, so compare
# interleaved runs, never two runs apart in time.
# Needs a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
export PONTOON_CLUSTER_DIR=${PONTOON_CLUSTER_DIR:-./data/bench-regions}
EP=127.0.0.1:2479,127.0.0.1:2489,127.0.0.1:2499
BIN=${CARGO_TARGET_DIR:-./target}/release
TOTAL=${TOTAL:-100000}
CONNS=${CONNS:-32}
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
# "steal ticks total ticks" of all CPUs (/proc/stat): time the hypervisor gave to others.
cpu_stat() { awk '$1 == "cpu" {t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t}' /proc/stat; }
segments() { if command -v nstat >/dev/null; then nstat -a 2>/dev/null | awk '$1 == "TcpOutSegs" {print $2}'; fi; }
# shellcheck source=scripts/leader-spread.sh
source scripts/leader-spread.sh
results=$(mktemp)
trap 'rm -f "$results"; scripts/local-cluster.sh stop >/dev/null 2>&1 || true' EXIT
regions=(${@:-1 16 64 256})
for rep in $(seq "${REPEAT:-1}"); do
    for r in "${regions[@]}"; do
        scripts/local-cluster.sh stop >/dev/null 2>&1 || true
        rm -rf "$PONTOON_CLUSTER_DIR"
        scripts/local-cluster.sh start 3 >/dev/null
        sleep 2
        if [ "$r" -gt 1 ]; then
            "$BIN"/pontoon-bench --endpoints $EP split --regions "$r" --key-size 8 --key-space-size 100000 >/dev/null
        fi
        # Wait for the placement to spread the new regions' leaderships.
        waited=0
        while [ "$r" -gt 1 ] && [ "$waited" -lt "${BALANCE_WAIT:-120}" ]; do
            spread=$(leader_spread "$BIN" "$EP")
            [ -n "$spread" ] && [ "$spread" -le 1 ] && break
            sleep 1
            waited=$((waited + 1))
        done
        sleep "${SETTLE:-0}"
        pids=$(cat "$PONTOON_CLUSTER_DIR"/s*/pid)
        before=$(ticks $pids)
        segs_before=$(segments)
        read -r steal_before all_before < <(cpu_stat)
        out=$("$BIN"/pontoon-bench --endpoints $EP --clients 256 --conns "$CONNS" --json \
            put --total "$TOTAL" --key-size 8 --val-size 256 --sequential-keys --key-space-size 100000)
        after=$(ticks $pids)
        segs_after=$(segments)
        read -r steal_after all_after < <(cpu_stat)
        steal=$(( (steal_after - steal_before) * 100 / (all_after - all_before + 1) ))
        ops=$(echo "$out" | sed -n 's/.*"requests_per_sec":\([0-9.]*\).*/\1/p')
        hz=$(getconf CLK_TCK)
        segs="?"
        if [ -n "$segs_before" ] && [ -n "$segs_after" ]; then
            segs=$(awk -v a="$segs_before" -v b="$segs_after" -v t="$TOTAL" 'BEGIN {printf "%.2f", (b - a) / t}')
        fi
        # Which stores lead the regions after the run (the placement moves leaders over time).
        leaders=$("$BIN"/pontoonctl --endpoints $EP region list -w json 2>/dev/null |
            python3 -c 'import collections, json, sys; c = collections.Counter(str(r.get("leader_store_id", 0)) for r in json.load(sys.stdin)["regions"]); print(",".join(f"s{k}:{v}" for k, v in sorted(c.items())))' 2>/dev/null || echo "?")
        [ -n "${VERBOSE:-}" ] && echo "$out"
        echo "regions=$r conns=$CONNS waited_for_balance=${waited}s ops/s=${ops%.*} store_cpu_us_per_put=$(( (after - before) * 1000000 / hz / TOTAL )) tcp_segments_per_put=$segs steal=${steal}% leaders=$leaders"
        echo "$r ${ops%.*}" >> "$results"
    done
done
if [ "${REPEAT:-1}" -gt 1 ]; then
    python3 - "$results" "${regions[0]}" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    r, ops = line.split()
    runs.setdefault(r, []).append(int(ops))
first = runs[sys.argv[2]]
base = statistics.median(first)
for r, v in runs.items():
    m = statistics.median(v)
    line = f"regions={r} median ops/s={m:.0f} ({len(v)} runs: {' / '.join(map(str, v))}) vs {sys.argv[2]} region(s): {m / base:.2f}x"
    if r != sys.argv[2]:
        # Each repetition's runs follow each other within a minute or two; the machine's
        # speed drifts over longer spans, so the ratios within repetitions scatter less.
        pairs = [x / y for x, y in zip(v, first)]
        line += f"; per repetition {' / '.join(f'{p:.2f}' for p in pairs)}, median {statistics.median(pairs):.2f}x"
    print(line)
PY
fi
