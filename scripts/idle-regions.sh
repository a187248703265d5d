#!/usr/bin/env bash
# CPU of a local 3-store cluster holding many idle regions (issue 6: idle regions must cost
# close to nothing).
#
#   scripts/idle-regions.sh [REGIONS] [SECONDS]     default: 10000 20
#
# Starts a fresh cluster (PONTOON_CONFIG is passed on, e.g. a file with
# `hibernate_regions = false` to compare), splits it into REGIONS regions, waits until the
# regions go quiet (every store holds them all and 99% hibernate; at most SETTLE_MAX s),
# then prints the stores' CPU over SECONDS and how many regions hibernate.
set -euo pipefail
cd "$(dirname "$0")/.."
export PONTOON_CLUSTER_DIR=${PONTOON_CLUSTER_DIR:-./data/idle-regions}
R=${1:-10000}
S=${2:-20}
EP=127.0.0.1:2479,127.0.0.1:2489,127.0.0.1:2499
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
scripts/local-cluster.sh stop >/dev/null 2>&1 || true
rm -rf "$PONTOON_CLUSTER_DIR"
scripts/local-cluster.sh start 3 >/dev/null
sleep 2
"${CARGO_TARGET_DIR:-./target}"/release/pontoon-bench --endpoints $EP split --regions "$R" --key-size 8 --key-space-size 1000000
# Wait (up to SETTLE_MAX seconds, default 180) until every store holds all REGIONS and at
# most 1% of them are awake: after a split this size the lagging store is still applying
# splits and the placement still moving leaders for a while.
status() {
    "${CARGO_TARGET_DIR:-./target}"/release/pontoonctl --endpoints $EP --command-timeout 5s endpoint status -w json 2>/dev/null |
        python3 -c 'import json, sys
print(" ".join("%d/%d" % (e["Status"].get("regions", 0), e["Status"].get("hibernatingRegions", 0)) for e in json.load(sys.stdin)))' 2>/dev/null
}
settled=""
for _ in $(seq 1 $(( ${SETTLE_MAX:-180} / 5 ))); do
    sleep 5
    st=$(status || true)
    if [ -n "$st" ] && python3 -c 'import sys; r=int(sys.argv[1]); p=[tuple(map(int, x.split("/"))) for x in sys.argv[2].split()]; sys.exit(0 if len(p) == 3 and all(n == r and h >= 0.99 * r for n, h in p) else 1)' "$R" "$st"; then
        settled=1
        break
    fi
done
[ -n "$settled" ] || echo "not settled after ${SETTLE_MAX:-180} s (regions/hibernating per store: ${st:-?}); measuring anyway"
pids=$(cat "$PONTOON_CLUSTER_DIR"/s*/pid)
before=$(ticks $pids)
sleep "$S"
after=$(ticks $pids)
hz=$(getconf CLK_TCK)
awk -v t=$((after - before)) -v hz="$hz" -v s="$S" -v r="$R" \
    'BEGIN { printf "%d regions: the 3 stores used %.0f ms of CPU in %d s (%.2f%% of one core per store)\n", r, t * 1000 / hz, s, t * 100 / hz / s / 3 }'
"${CARGO_TARGET_DIR:-./target}"/release/pontoonctl --endpoints $EP endpoint status -w json |
    python3 -c 'import json,sys; [print(e["Endpoint"], "regions", e["Status"].get("regions"), "hibernating", e["Status"].get("hibernatingRegions")) for e in json.load(sys.stdin)]'
scripts/local-cluster.sh stop >/dev/null 2>&1 || true
