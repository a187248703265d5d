# Sourced by the benchmark scripts (not run on its own).
#
# leader_spread BIN_DIR ENDPOINTS: the largest minus the smallest number of regions led by
# one of stores 1-3 of a 3-store cluster (99 while a region has no leader; empty if the
# cluster cannot be asked). A split leaves every new region led by the splitting store and
# the placement spreads them (half the excess a second: ~4 s for 64 regions, ~7 s for 256);
# the benchmarks wait for a spread of at most 1.
leader_spread() {
    "$1"/pontoonctl --endpoints "$2" region list -w json 2>/dev/null |
        python3 -c 'import collections, json, sys; c = collections.Counter(r.get("leader_store_id", 0) for r in json.load(sys.stdin)["regions"]); v = [c.get(s, 0) for s in (1, 2, 3)]; print(max(v) - min(v) if 0 not in c else 99)' 2>/dev/null || true
}
