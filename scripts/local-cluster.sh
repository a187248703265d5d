#!/usr/bin/env bash
# Runs a local Pontoon cluster of N stores (default 3) on loopback.
#
#   scripts/local-cluster.sh start [N]   build (release) and start N stores in the background
#   scripts/local-cluster.sh stop        stop them (SIGTERM, then SIGKILL after 10 s)
#   scripts/local-cluster.sh status      pontoonctl endpoint status of every store
#
# Store i listens for clients on 127.0.0.1:(2469 + 10*i) and for peers on
# 127.0.0.1:(2470 + 10*i): store 1 on 2479/2480, store 2 on 2489/2490, store 3 on
# 2499/2500. Data and logs go to ${PONTOON_CLUSTER_DIR:-./data/local-cluster}/s<i>.
# PONTOON_CONFIG=FILE passes --config FILE (a TOML file of settings) to every store.
set -euo pipefail

cd "$(dirname "$0")/.."
dir=${PONTOON_CLUSTER_DIR:-./data/local-cluster}
n=${2:-3}

# True while process $1 runs: exists and is not a zombie (a store killed with SIGKILL stays
# a zombie until its parent reaps it, and `kill -0` succeeds on one).
alive() {
    local state
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

client_port() { echo $((2469 + 10 * $1)); }
peer_port() { echo $((2470 + 10 * $1)); }

endpoints() {
    local eps=() i
    for pidfile in "$dir"/s*/pid; do
        [ -e "$pidfile" ] || continue
        i=$(basename "$(dirname "$pidfile")"); i=${i#s}
        eps+=("127.0.0.1:$(client_port "$i")")
    done
    (IFS=,; echo "${eps[*]}")
}

case "${1:-}" in
start)
    cargo build --release -q -p pontoon-server -p pontoon-client
    cluster=""
    for i in $(seq 1 "$n"); do
        cluster+="${cluster:+,}$i=127.0.0.1:$(peer_port "$i")"
    done
    for i in $(seq 1 "$n"); do
        mkdir -p "$dir/s$i"
        if [ -e "$dir/s$i/pid" ] && alive "$(cat "$dir/s$i/pid")"; then
            echo "store $i is already running (pid $(cat "$dir/s$i/pid"))"
            continue
        fi
        RUST_LOG=${RUST_LOG:-info} "${CARGO_TARGET_DIR:-./target}"/release/pontoon \
            --store-id "$i" \
            --data-dir "$dir/s$i/data" \
            --client-addr "127.0.0.1:$(client_port "$i")" \
            --peer-addr "127.0.0.1:$(peer_port "$i")" \
            --initial-cluster "$cluster" \
            ${PONTOON_CONFIG:+--config "$PONTOON_CONFIG"} \
            >"$dir/s$i/log" 2>&1 &
        echo $! >"$dir/s$i/pid"
        echo "store $i: pid $!, clients on 127.0.0.1:$(client_port "$i"), log $dir/s$i/log"
    done
    echo "try: ${CARGO_TARGET_DIR:-./target}/release/pontoonctl --endpoints $(endpoints) put foo bar"
    ;;
stop)
    for pidfile in "$dir"/s*/pid; do
        [ -e "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if alive "$pid"; then
            kill -TERM "$pid"
            for _ in $(seq 1 100); do
                alive "$pid" || break
                sleep 0.1
            done
            alive "$pid" && kill -KILL "$pid"
            echo "stopped pid $pid"
        fi
        rm -f "$pidfile"
    done
    ;;
status)
    "${CARGO_TARGET_DIR:-./target}"/release/pontoonctl --endpoints "$(endpoints)" endpoint status -w table 2>/dev/null ||
        "${CARGO_TARGET_DIR:-./target}"/release/pontoonctl --endpoints "$(endpoints)" endpoint status
    ;;
*)
    sed -n 2,11p "$0"
    exit 2
    ;;
esac
