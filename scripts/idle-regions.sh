#!/usr/bin/env bash
# CPU of a local 3-store cluster holding many idle regions (issue 6: idle regions must cost
# close to nothing).
#
#   scripts/idle-regions.sh [REGIONS] [SECONDS]     default: 10000 20
#
# Starts a fresh cluster (PONTOON_CONFIG is passed on, e.g. a file with
# `hibernate_regions = false` to compare), splits it into REGIONS regions, waits 10 s for them
# to go quiet, then prints the stores' CPU over SECONDS and how many regions hibernate.
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
sleep 10
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
