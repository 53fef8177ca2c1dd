#!/usr/bin/env bash
# The proxy load benchmark: the same closed-loop keep-alive load, in one run, against
#   direct   fast-origin alone (the ceiling: what the origin serves without a proxy)
#   accel    accel in front of fast-origin (forwarding every request, no cache)
#   nginx    nginx 1.22 as a plain keep-alive reverse proxy in front of fast-origin
# and, when asked with --cases,
#   nginx-fwd   nginx adding what accel adds by default: X-Forwarded-For/-Proto/-Host, Via and
#               X-Request-Id upstream, Via and X-Request-Id on the answer (the same exchange
#               as `accel`)
#   accel-bare  accel without request ids and Via (X-Forwarded-For/-Proto/-Host only)
# and, when asked with --cases, the cache-hit cases
#   accel-cache  accel with a 5-minute cache rule: every measured request is a hit
#   accel-limited  accel with a per-client rate limit that the load never reaches: the
#                  cost of a limit check (compare with `accel` in the same run)
#   nginx-cache  nginx with proxy_cache: every measured request is a hit
# and the compression cases (the client sends Accept-Encoding; every answer is compressed)
#   accel-gzip   accel compressing with gzip level 6 as the answer streams
#   accel-br     accel compressing with brotli at its streamed default (quality 4)
#   nginx-gzip   nginx with `gzip on` at gzip_comp_level 6
# and, with --baseline BIN, the same pass-through as `accel` served by another build of accel
#   accel-baseline  e.g. main's binary, to compare a change with it in one run
#
# Pinning (2 cores): the load generator (accel-load, one thread) has core 0 to itself in
# every case; everything that answers — fast-origin (one thread), and the proxy under test
# (one worker thread / one worker process) — shares core 1. Each case therefore gets exactly
# one core for "origin + proxy", so the proxy cases are compared like for like, and "direct"
# shows what that core does with no proxy at all. One server runs at a time: each case's
# proxy is stopped before the next one starts. With fewer than 2 cores everything shares
# core 0 and the figures only compare cases with each other.
#
# Keep-alive on both sides: accel-load keeps its connections open; nginx keeps up to 64 idle
# upstream connections and, like accel, does not close busy ones (keepalive_requests raised
# from its default of 1000, which would otherwise add a reconnect every 1000 requests).
#
# Usage: benches/load.sh [--duration 10s] [--warmup 2s] [--concurrency 32] [--size 2048[,102400]]
#                        [--keys 1[,2000]] [--cases direct,accel,nginx[,nginx-fwd,accel-bare,accel-cache,nginx-cache,accel-limited]]
#                        [--cases accel-gzip,accel-br,nginx-gzip,accel-cache-br,accel-cache-identity]
#                        [--baseline path/to/accel] [--rounds 1] [--no-build]
# --rounds N runs the whole list of cases N times in turn (labels end in r1, r2, …), so that
# drift in the machine's speed shows as spread between rounds instead of between cases; each
# round starts one case further into the list (round 2 with the second case, …), so that no
# case always runs at the same point of a round. The output then ends with each case's
# median over its rounds.
# Output: a table on stdout, target/bench/load-report.json (all cases), target/bench/cases/*.json
# (one accel-load report per case). Besides req/s and latency, each row gives `cpu µs/req`: the
# CPU time (user + system, all threads and worker processes) the server under test spent per
# request over the measured phase — the proxy alone in the proxy cases, the origin in `direct`.
# When a server answers faster than the one-core load generator can ask, req/s shows the
# generator's limit while cpu µs/req still shows the server's cost, and it moves less with
# other work on the machine.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/nginx-config.sh
source "$ROOT/benches/nginx-config.sh"
RELEASE="$ROOT/target/release"
OUT_DIR="$ROOT/target/bench"

DURATION=10s
WARMUP=2s
CONCURRENCY=32
SIZES=2048
KEY_SPREADS=1  # comma-separated: every size is measured at each key spread
KEYS=1
CASES=direct,accel,nginx
BUILD=1
BASELINE=""
ROUNDS=1
ACCEL_SETTINGS=""  # sections added to accel.toml by a case (accel-bare)

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

while (($#)); do
    case "$1" in
        --duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
        --warmup) WARMUP=${2:?--warmup needs a value}; shift 2 ;;
        --concurrency) CONCURRENCY=${2:?--concurrency needs a value}; shift 2 ;;
        --size) SIZES=${2:?--size needs a value}; shift 2 ;;
        --keys) KEY_SPREADS=${2:?--keys needs a value}; shift 2 ;;
        --cases) CASES=${2:?--cases needs a value}; shift 2 ;;
        --rounds) ROUNDS=${2:?--rounds needs a value}; shift 2 ;;
        --baseline) BASELINE=${2:?--baseline needs a path}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "load.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
    esac
done

if (($(nproc) >= 2)); then
    LOAD_CORE=0
    SERVER_CORE=1
else
    echo "load.sh: fewer than 2 cores: everything shares core 0" >&2
    LOAD_CORE=0
    SERVER_CORE=0
fi

WORK=$(mktemp -d /tmp/accel-bench.XXXXXX)
STARTED=()  # pids of every process this script started

cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "== $*" >&2; }

# --- setup -------------------------------------------------------------------------------

ensure_tools() {
    if ! command -v taskset >/dev/null; then
        apt-get install -y util-linux >/dev/null || { apt-get update >/dev/null && apt-get install -y util-linux >/dev/null; }
    fi
    if [[ ",$CASES," == *,nginx* ]] && ! command -v nginx >/dev/null; then
        log "installing nginx"
        apt-get install -y nginx >/dev/null || { apt-get update >/dev/null && apt-get install -y nginx >/dev/null; }
    fi
}

build() {
    ((BUILD)) || return 0
    log "building release binaries"
    if ! (cd "$ROOT" && cargo build --release -p accel -p accel-benches); then
        log "accel does not build: building the benchmark tools only (the accel cases will be skipped)"
        (cd "$ROOT" && cargo build --release -p accel-benches)
    fi
}

# --- processes ---------------------------------------------------------------------------

# A TCP port nothing listens on right now, below the kernel's ephemeral range (32768 and up by
# default), where the benchmark's own client connections would otherwise take it first.
free_port() {
    local port
    while :; do
        port=$((10000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}

# wait_port PORT PID: until something accepts on PORT (5 s at most) while PID lives.
wait_port() {
    local port=$1 pid=$2 tries
    for tries in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# start_server NAME PORT COMMAND...: starts COMMAND on the server core, logging to
# $WORK/NAME.log, and waits until it listens on PORT; sets SERVER_PID. Fails if it does not.
start_server() {
    local name=$1 port=$2
    shift 2
    taskset -c "$SERVER_CORE" "$@" >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    STARTED+=("$SERVER_PID")
    if ! wait_port "$port" "$SERVER_PID"; then
        log "$name did not start listening on port $port; its log:"
        tail -n 20 "$WORK/$name.log" >&2 || true
        stop_server "$SERVER_PID"
        return 1
    fi
}

stop_server() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# --- load --------------------------------------------------------------------------------

REPORTS=()

# run_load LABEL BASE_URL [ACCEL-LOAD OPTIONS...]: the measured load against BASE_URL, on the
# load core; further options (such as -H 'Accept-Encoding: gzip') go to accel-load. The CPU
# time of the server started last (SERVER_PID: the proxy, or the origin for `direct`) over the
# measured phase is reported per request.
run_load() {
    local label=$1 base=$2 file
    shift 2
    file="$OUT_DIR/cases/$(printf '%02d' "${#REPORTS[@]}")-${label// /_}.json"
    local targets=(--url "$base/bench")
    if ((KEYS > 1)); then
        # KEYS distinct paths, requested round-robin: a spread over many cache keys.
        local i
        for i in $(seq "$KEYS"); do echo "$base/bench/key-$i"; done >"$WORK/urls.txt"
        targets=(--urls-file "$WORK/urls.txt")
    fi
    log "$label: $CONCURRENCY connections, $WARMUP warm-up + $DURATION"
    if taskset -c "$LOAD_CORE" "$RELEASE/accel-load" "${targets[@]}" --concurrency "$CONCURRENCY" \
        --duration "$DURATION" --warmup "$WARMUP" --threads 1 --json --label "$label" \
        --server-pid "$SERVER_PID" "$@" >"$file"; then
        REPORTS+=("$file")
    else
        log "$label: no answer received; left out of the report"
        rm -f "$file"
    fi
}

# --- cases -------------------------------------------------------------------------------
# Each case_* function takes the label suffix and measures one case against $ORIGIN_PORT.
# To add a case: write case_NAME (start its server with start_server, run_load, stop it)
# and name it in --cases.

case_direct() {
    SERVER_PID=$ORIGIN_PID
    run_load "direct$1" "http://127.0.0.1:$ORIGIN_PORT"
}

# write_accel_config DIR CACHE_RULE: accel.toml and rules.toml for a proxy in front of the
# origin, with $ACCEL_SETTINGS (sections of accel.toml) when set; sets ACCEL_PORT.
write_accel_config() {
    local dir=$1 cache_rule=$2 admin_port
    mkdir -p "$dir"
    ACCEL_PORT=$(free_port)
    admin_port=$(free_port)
    cat >"$dir/accel.toml" <<EOF
[listen]
http = "127.0.0.1:$ACCEL_PORT"
[admin]
addr = "127.0.0.1:$admin_port"
[runtime]
worker_threads = 1
[log]
access = false
[upstreams.origin]
endpoints = ["127.0.0.1:$ORIGIN_PORT"]
[rules]
files = ["$dir/rules.toml"]
$ACCEL_SETTINGS
EOF
    cat >"$dir/rules.toml" <<EOF
[[route]]
name = "all"
match = { path_prefix = "/" }
upstream = "origin"
$cache_rule
EOF
}

# run_accel LABEL ROUTE_FIELDS [ACCEL-LOAD OPTIONS...]: one accel case; skipped when accel is
# missing or does not start.
run_accel() {
    local label=$1 cache_rule=$2 dir="$WORK/accel-${1// /_}" binary=${ACCEL_BINARY:-$RELEASE/accel}
    shift 2
    if [[ ! -x "$binary" ]]; then
        log "$label: skipped: $binary is not built"
        return 0
    fi
    write_accel_config "$dir" "$cache_rule"
    if ! start_server "${label// /_}" "$ACCEL_PORT" "$binary" run --config "$dir/accel.toml"; then
        log "$label: skipped: accel did not start"
        return 0
    fi
    local pid=$SERVER_PID
    run_load "$label" "http://127.0.0.1:$ACCEL_PORT" "$@"
    stop_server "$pid"
}

case_accel() {
    run_accel "accel$1" ""
}

# The pass-through of `accel`, served by the --baseline binary.
case_accel_baseline() {
    if [[ -z "$BASELINE" ]]; then
        log "accel-baseline$1: skipped: no --baseline binary given"
        return 0
    fi
    ACCEL_BINARY=$BASELINE run_accel "accel-baseline$1" ""
}

# Pass-through without the request id and Via (only X-Forwarded-For/-Proto/-Host are added).
case_accel_bare() {
    # Set for this case's config only (not exported: accel reads ACCEL_* variables).
    ACCEL_SETTINGS=$'[forwarded]\nrequest_id = false\nvia = ""'
    run_accel "accel-bare$1" ""
    ACCEL_SETTINGS=""
}

# Every measured request is a cache hit: the warm-up fills the cache (one miss per key).
case_accel_cache() {
    run_accel "accel-cache$1" 'cache = { ttl = "5m" }'
}

# A per-client limit far above what the load sends: every request is checked and passes.
case_accel_limited() {
    run_accel "accel-limited$1" 'rate_limit = { rate = "1000000/s", key = "client_ip" }'
}

# run_nginx LABEL CACHE GZIP FWD [ACCEL-LOAD OPTIONS...]: one nginx case.
run_nginx() {
    local label=$1 cache=$2 gzip=$3 fwd=$4 dir="$WORK/nginx-${1// /_}"
    shift 4
    NGINX_PORT=$(free_port)
    nginx_config "$dir" "$NGINX_PORT" "$ORIGIN_PORT" "$cache" "$gzip" "$fwd"
    if ! start_server "${label// /_}" "$NGINX_PORT" nginx -p "$dir" -c "$dir/nginx.conf" -e stderr; then
        log "$label: skipped: nginx did not start"
        return 0
    fi
    local pid=$SERVER_PID
    run_load "$label" "http://127.0.0.1:$NGINX_PORT" "$@"
    stop_server "$pid"
}

case_nginx() {
    run_nginx "nginx$1" 0 0 0
}

# nginx doing what accel does by default to each exchange: the same fields upstream and back.
case_nginx_fwd() {
    run_nginx "nginx-fwd$1" 0 0 1
}

case_nginx_cache() {
    run_nginx "nginx-cache$1" 1 0 0
}

# Compression: every answer compressed on the way out, at the same gzip level as nginx's case.
case_accel_gzip() {
    run_accel "accel-gzip$1" 'compress = { encodings = ["gzip"], level = { gzip = 6 } }' -H 'Accept-Encoding: gzip'
}

case_accel_br() {
    run_accel "accel-br$1" 'compress = { encodings = ["br"] }' -H 'Accept-Encoding: br'
}

# Cached answers with compression on the route: every hit with `Accept-Encoding: br` is served
# from the entry's brotli variant (made once), compared with identity hits of the same entry.
case_accel_cache_br() {
    run_accel "accel-cache-br$1" $'cache = { ttl = "5m" }\ncompress = { encodings = ["br"] }' -H 'Accept-Encoding: br'
}

case_accel_cache_identity() {
    run_accel "accel-cache-identity$1" $'cache = { ttl = "5m" }\ncompress = { encodings = ["br"] }'
}

case_nginx_gzip() {
    run_nginx "nginx-gzip$1" 0 1 0 -H 'Accept-Encoding: gzip'
}

# run_suite SIZE SUFFIX [SHIFT]: starts a fast-origin answering SIZE bytes and runs every case,
# starting SHIFT cases into the list and going round (round r starts r - 1 cases in, so that
# over as many rounds as cases each case runs once in every place of a round).
run_suite() {
    local size=$1 suffix=$2 shift_by=${3:-0} name
    ORIGIN_PORT=$(free_port)
    start_server "origin-$size" "$ORIGIN_PORT" "$RELEASE/fast-origin" --listen "127.0.0.1:$ORIGIN_PORT" \
        --size "$size" --threads 1
    ORIGIN_PID=$SERVER_PID
    IFS=, read -ra names <<<"$CASES"
    shift_by=$((shift_by % ${#names[@]}))
    names=("${names[@]:shift_by}" "${names[@]:0:shift_by}")
    for name in "${names[@]}"; do
        case "$name" in
            direct | accel | accel-baseline | accel-bare | nginx | nginx-fwd | accel-cache | nginx-cache | accel-limited | accel-gzip | accel-br | nginx-gzip | accel-cache-br | accel-cache-identity)
                "case_${name//-/_}" "$suffix" ;;
            *) echo "load.sh: unknown case $name" >&2; exit 64 ;;
        esac
    done
    stop_server "$ORIGIN_PID"
}

# --- main --------------------------------------------------------------------------------

main() {
    ensure_tools
    build
    mkdir -p "$OUT_DIR/cases"
    # Other work on the machine skews every figure: the report keeps the 1-minute load average.
    LOADAVG_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
    rm -f "$OUT_DIR"/cases/*.json
    IFS=, read -ra sizes <<<"$SIZES"
    IFS=, read -ra spreads <<<"$KEY_SPREADS"
    local size suffix round
    for round in $(seq "$ROUNDS"); do
        for size in "${sizes[@]}"; do
            for KEYS in "${spreads[@]}"; do
                suffix=""
                # Labels name the size and key spread whenever they are not the plain 2 KB, one key.
                if ((${#sizes[@]} > 1 || ${#spreads[@]} > 1 || size != 2048 || KEYS > 1)); then
                    suffix=" $((size / 1024))KB"
                    ((size % 1024 == 0)) || suffix=" ${size}B"
                    ((KEYS == 1)) || suffix+=" k$KEYS"
                fi
                ((ROUNDS == 1)) || suffix+=" r$round"
                run_suite "$size" "$suffix" $((round - 1))
            done
        done
    done
    if ((${#REPORTS[@]} == 0)); then
        echo "load.sh: no case produced a report" >&2
        exit 1
    fi
    echo
    "$RELEASE/load-report" --out "$OUT_DIR/load-report.json" \
        --param duration="$DURATION" --param warmup="$WARMUP" --param concurrency="$CONCURRENCY" \
        --param sizes="[$SIZES]" --param keys="[$KEY_SPREADS]" --param loadavg_before="$LOADAVG_BEFORE" \
        --param pinning="load generator on core $LOAD_CORE; origin and proxy on core $SERVER_CORE" \
        "${REPORTS[@]}"
    echo
    echo "report: $OUT_DIR/load-report.json"
}

main
