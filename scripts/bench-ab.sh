#!/usr/bin/env bash
# Compares two builds side by side: two 3-store clusters on this machine at the same time,
# one per build, each split into REGIONS regions and loaded by its own pontoon-bench for
# the same DURATION seconds.
#
#   scripts/bench-ab.sh DIR_A DIR_B [RUNS]     DIR_*: directories holding a release build's
#                                              pontoon, pontoon-bench and pontoonctl
#                                              (default RUNS: 4)
#
# e.g. to compare the working tree with HEAD:
#   git stash && cargo build --release && mkdir -p /tmp/a && cp target/release/pontoon{,-bench,ctl} /tmp/a
#   git stash pop && cargo build --release && scripts/bench-ab.sh /tmp/a target/release
#
# Why side by side: this machine's speed drifts by a third within minutes, so two builds
# measured one after the other differ by ±15% for no reason of their own. Run together,
# both see the same drift; when both are CPU-bound (64 regions are, see README) the
# machine's cores are shared between them and the build that needs less CPU per put
# completes more puts. Measured with the same build on both sides, the ratio stays within
# ±3%. It says which build is more efficient under load, not what either does alone (a
# latency-bound setup, e.g. one region, leaves CPU to the other side; compare like with
# like, and a change that makes a store wait more, e.g. for its own disk writes, loses
# here even where it saves CPU). Runs alternate which build gets the first ports and
# starts first.
#
# Env: REGIONS (64), DURATION (15 s), CLIENTS (256), CONNS (1), SETTLE (5 s after the
# leaders are balanced), PONTOON_AB_DIR (data, default ./data/bench-ab).
# Prints each run's ops/s of A and B and B/A, then the median B/A.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    sed -n 2,27p "$0"
    exit 2
fi
A=$(cd "$1" && pwd)
B=$(cd "$2" && pwd)
RUNS=${3:-4}
for d in "$A" "$B"; do
    for b in pontoon pontoon-bench pontoonctl; do
        [ -x "$d/$b" ] || { echo "no $d/$b" >&2; exit 2; }
    done
done
REGIONS=${REGIONS:-64}
DURATION=${DURATION:-15}
root=${PONTOON_AB_DIR:-./data/bench-ab}
pids=()
stop_all() {
    [ ${#pids[@]} -eq 0 ] && return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 50); do
        local left=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left=1; done
        [ "$left" = 0 ] && break
        sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
}

endpoints() { echo "127.0.0.1:$(($1 + 10)),127.0.0.1:$(($1 + 20)),127.0.0.1:$(($1 + 30))"; }

# start_cluster NAME BIN_DIR BASE: stores on client ports BASE+10i, peer ports BASE+10i+1.
start_cluster() {
    local name=$1 bin=$2 base=$3 cluster="" i
    for i in 1 2 3; do cluster+="${cluster:+,}$i=127.0.0.1:$((base + 10 * i + 1))"; done
    for i in 1 2 3; do
        mkdir -p "$root/$name/s$i"
        RUST_LOG=${RUST_LOG:-warn} "$bin/pontoon" --store-id "$i" --data-dir "$root/$name/s$i/data" \
            --client-addr "127.0.0.1:$((base + 10 * i))" --peer-addr "127.0.0.1:$((base + 10 * i + 1))" \
            --initial-cluster "$cluster" >"$root/$name/s$i/log" 2>&1 &
        pids+=($!)
    done
}

# shellcheck source=scripts/leader-spread.sh
source scripts/leader-spread.sh

# Waits (up to 120 s) until no store leads more than one region more than another.
wait_balanced() {
    local spread
    for _ in $(seq 1 120); do
        spread=$(leader_spread "$1" "$2")
        [ -n "$spread" ] && [ "$spread" -le 1 ] && return 0
        sleep 1
    done
    echo "warning: leaders of $2 not balanced after 120 s" >&2
}

ratios=$(mktemp)
trap 'rm -f "$ratios"; stop_all' EXIT
for run in $(seq "$RUNS"); do
    # Odd runs: A on the first ports, started first; even runs: B.
    if [ $((run % 2)) = 1 ]; then first=$A; second=$B; else first=$B; second=$A; fi
    rm -rf "$root"
    start_cluster one "$first" 3469
    start_cluster two "$second" 4469
    sleep 2
    if [ "$REGIONS" -gt 1 ]; then
        "$first/pontoon-bench" --endpoints "$(endpoints 3469)" split --regions "$REGIONS" \
            --key-size 8 --key-space-size 100000 >/dev/null 2>&1 &
        split_pid=$!
        "$second/pontoon-bench" --endpoints "$(endpoints 4469)" split --regions "$REGIONS" \
            --key-size 8 --key-space-size 100000 >/dev/null 2>&1
        wait "$split_pid"
        wait_balanced "$first" "$(endpoints 3469)"
        wait_balanced "$second" "$(endpoints 4469)"
    fi
    sleep "${SETTLE:-5}"
    load() {
        "$1/pontoon-bench" --endpoints "$(endpoints "$2")" --clients "${CLIENTS:-256}" \
            --conns "${CONNS:-1}" --json --duration "$DURATION" put --total 1000000000 \
            --key-size 8 --val-size 256 --sequential-keys --key-space-size 100000 |
            sed -n 's/.*"requests_per_sec":\([0-9.]*\).*/\1/p'
    }
    load "$first" 3469 >"$root/one.ops" &
    load_pid=$!
    load "$second" 4469 >"$root/two.ops"
    wait "$load_pid"
    if [ "$first" = "$A" ]; then a=$(cat "$root/one.ops"); b=$(cat "$root/two.ops"); else a=$(cat "$root/two.ops"); b=$(cat "$root/one.ops"); fi
    stop_all
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b / a}')
    echo "run $run: A ${a%.*} ops/s, B ${b%.*} ops/s, B/A $ratio"
    echo "$ratio" >>"$ratios"
done
echo "median B/A over $RUNS runs: $(sort -n "$ratios" | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')"
rm -rf "$root"
