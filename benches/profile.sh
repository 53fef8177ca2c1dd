#!/usr/bin/env bash
# Instructions per request: accel under callgrind (valgrind) in front of fast-origin, for a
# route of each kind asked for, under the same small closed-loop load. Instruction counts do
# not move with the machine's load the way req/s does, so two builds or two route kinds can
# be compared on a busy machine; the callgrind files show where the instructions go.
#
#   pass     forwarding every request (no cache, no limit)
#   bare     as pass, without request ids and Via (`[forwarded] request_id = false`, `via = ""`)
#   limited  a per-client rate limit that the load never reaches
#   cache    a 5-minute cache rule: after the first request, every request is a hit
#   nginx    nginx as load.sh's `nginx` case (plain keep-alive reverse proxy), for comparison
#   nginx-fwd  nginx as load.sh's `nginx-fwd` case: adding the fields accel adds by default
#
# For nginx the figure is every instruction of its one process (no master) over the requests
# accel-load counted (it is started without a warm-up); compare it with accel's line, which
# also counts everything. nginx's binary has no symbols: its callgrind file shows only totals.
#
# The count includes start-up and shutdown spread over the requests (a few hundred
# instructions per request at the default duration): compare runs of the same duration.
#
# Usage: benches/profile.sh [--kinds pass,bare,limited,cache,nginx,nginx-fwd] [--duration 10s] [--size 2048]
#                           [--keys 1] [--binary target/release/accel] [--no-build]
# --keys N requests N distinct paths round-robin (N cache entries for the cache kind).
# Output: one line per kind; target/bench/callgrind/KIND.out for callgrind_annotate.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/nginx-config.sh
source "$ROOT/benches/nginx-config.sh"
RELEASE="$ROOT/target/release"
OUT_DIR="$ROOT/target/bench/callgrind"

KINDS=pass,limited,cache
DURATION=10s
SIZE=2048
KEYS=1
BINARY="$RELEASE/accel"
BUILD=1

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

while (($#)); do
    case "$1" in
        --kinds) KINDS=${2:?--kinds needs a value}; shift 2 ;;
        --duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
        --size) SIZE=${2:?--size needs a value}; shift 2 ;;
        --keys) KEYS=${2:?--keys needs a value}; shift 2 ;;
        --binary) BINARY=${2:?--binary needs a path}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "profile.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
    esac
done

WORK=$(mktemp -d /tmp/accel-profile.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {
    local url=$1 i
    for i in $(seq 300); do
        if curl -sf -o /dev/null "$url"; then return 0; fi
        sleep 0.1
    done
    echo "profile.sh: $url did not answer" >&2
    return 1
}

route_fields() {
    case "$1" in
        pass | bare) echo "" ;;
        limited) echo 'rate_limit = { rate = "1000000/s", key = "client_ip" }' ;;
        cache) echo 'cache = { ttl = "5m" }' ;;
        *) echo "profile.sh: unknown kind $1" >&2; exit 64 ;;
    esac
}

# report KIND PID SIGNAL ANSWERED REQUESTS: stops the server under callgrind with SIGNAL (its
# file is written as it exits) and prints its instructions over REQUESTS; fails when the load
# got no answer (ANSWERED is 0).
report() {
    local kind=$1 pid=$2 signal=$3 answered=$4 requests=$5 total
    kill "-$signal" "$pid"
    wait "$pid" 2>/dev/null || true
    total=$(callgrind_annotate "$OUT_DIR/$kind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    if ((answered == 0)); then
        echo "profile.sh: $kind: no request answered" >&2
        return 1
    fi
    printf '%-10s %10d requests %14d instructions %8d per request\n' "$kind" "$requests" "$total" $((total / requests))
}

# load_targets PORT DIR: sets TARGETS to accel-load's URL options for the server on PORT: one
# URL, or --keys distinct ones from a file in DIR.
load_targets() {
    local port=$1 dir=$2 i
    TARGETS=(--url "http://127.0.0.1:$port/bench")
    if ((KEYS > 1)); then
        for i in $(seq "$KEYS"); do echo "http://127.0.0.1:$port/bench/key-$i"; done >"$dir/urls.txt"
        TARGETS=(--urls-file "$dir/urls.txt")
    fi
}

# accel_settings KIND: sections of accel.toml the kind adds.
accel_settings() {
    if [[ $1 == bare ]]; then printf '[forwarded]\nrequest_id = false\nvia = ""\n'; fi
}

# profile KIND: one callgrind run; prints instructions per request.
profile() {
    local kind=$1 port admin dir="$WORK/$1" pid requests
    port=$(free_port)
    admin=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/accel.toml" <<EOF
[listen]
http = "127.0.0.1:$port"
[admin]
addr = "127.0.0.1:$admin"
[runtime]
worker_threads = 1
[log]
access = false
[upstreams.origin]
endpoints = ["127.0.0.1:$ORIGIN_PORT"]
[rules]
files = ["$dir/rules.toml"]
$(accel_settings "$kind")
EOF
    cat >"$dir/rules.toml" <<EOF
[[route]]
name = "all"
match = { path_prefix = "/" }
upstream = "origin"
$(route_fields "$kind")
EOF
    valgrind --tool=callgrind --callgrind-out-file="$OUT_DIR/$kind.out" \
        "$BINARY" run --config "$dir/accel.toml" >"$dir/accel.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_for "http://127.0.0.1:$admin/healthz"
    load_targets "$port" "$dir"
    "$RELEASE/accel-load" "${TARGETS[@]}" --concurrency 8 --duration "$DURATION" --warmup 1s >"$dir/load.txt"
    requests=$(curl -s "http://127.0.0.1:$admin/metrics" | awk '/^accel_requests_total/ { s += $2 } END { print s + 0 }')
    report "$kind" "$pid" INT "$requests" "$requests"
}

# profile_nginx KIND: nginx (fwd: with the forwarding fields) under callgrind; prints
# instructions per request.
profile_nginx() {
    local kind=$1 port dir="$WORK/$1" pid answered fwd=0
    if [[ $kind == nginx-fwd ]]; then fwd=1; fi
    port=$(free_port)
    nginx_config "$dir" "$port" "$ORIGIN_PORT" 0 0 "$fwd" 1
    valgrind --tool=callgrind --callgrind-out-file="$OUT_DIR/$kind.out" \
        nginx -p "$dir" -c "$dir/nginx.conf" -e stderr >"$dir/nginx.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_for "http://127.0.0.1:$port/bench"
    load_targets "$port" "$dir"
    # No warm-up: every request nginx answered is counted (and the one of wait_for).
    "$RELEASE/accel-load" "${TARGETS[@]}" --concurrency 8 --duration "$DURATION" --warmup 0s --json >"$dir/load.json"
    answered=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["requests"])' "$dir/load.json")
    # QUIT: nginx's graceful stop, after which callgrind writes its file.
    report "$kind" "$pid" QUIT "$answered" $((answered + 1))
}

main() {
    for tool in valgrind callgrind_annotate curl python3; do
        command -v "$tool" >/dev/null || { echo "profile.sh: $tool is required (apt-get install -y valgrind)" >&2; exit 1; }
    done
    if ((BUILD)); then
        cargo build --release -p accel -p accel-benches --manifest-path "$ROOT/Cargo.toml" >&2
    fi
    mkdir -p "$OUT_DIR"
    ORIGIN_PORT=$(free_port)
    "$RELEASE/fast-origin" --listen "127.0.0.1:$ORIGIN_PORT" --size "$SIZE" >"$WORK/origin.log" 2>&1 &
    PIDS+=("$!")
    wait_for "http://127.0.0.1:$ORIGIN_PORT/"
    local kind
    IFS=, read -ra kinds <<<"$KINDS"
    # Every kind is known, and nginx is here when asked for, before the first run starts.
    for kind in "${kinds[@]}"; do
        case "$kind" in
            pass | bare | limited | cache) ;;
            nginx | nginx-fwd)
                command -v nginx >/dev/null || { echo "profile.sh: $kind needs nginx (apt-get install -y nginx)" >&2; exit 1; } ;;
            *) echo "profile.sh: unknown kind $kind" >&2; exit 64 ;;
        esac
    done
    for kind in "${kinds[@]}"; do
        case "$kind" in
            nginx | nginx-fwd) profile_nginx "$kind" ;;
            *) profile "$kind" ;;
        esac
    done
    echo "callgrind files: $OUT_DIR (callgrind_annotate --inclusive=yes FILE)"
}

main
