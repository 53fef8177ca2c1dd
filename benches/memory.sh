#!/usr/bin/env bash
# The memory benchmark: accel's resident set size (VmRSS) in front of fast-origin,
#   start     idle after one request
#   idle      with --idle keep-alive connections open (and the cost of one)
#   storms    during (peak) and after each of --storms storms of --storm-connections short
#             connections (one request each), --concurrency of them in flight at once
#   settled   after --settle seconds with nothing open
# for every combination of
#   --binary [LABEL=]PATH   an accel build (repeatable; default target/release/accel)
#   --env 'VAR=V …'         an environment for it, e.g. MALLOC_ARENA_MAX=1 (repeatable; '-' is
#                           the plain environment, the default)
#   --threads 1,default     [runtime] worker_threads = 1, or the default (one per core)
#   --cases pass,cache      pass-through (no cache), or every request a cache hit
# so builds and allocator settings compare side by side in one run.
#
# Usage: benches/memory.sh [--binary [LABEL=]PATH]... [--env 'VAR=V']... [--threads 1,default]
#                          [--cases pass,cache] [--idle 1000] [--storms 3]
#                          [--storm-connections 2000] [--concurrency 200] [--settle 10]
#                          [--size 2048] [--no-build]
# Pinning as in load.sh: the client (benches/memory_load.py, python3) on core 0, fast-origin
# and accel on core 1. Output: a table on stdout (MiB unless said), and
# target/bench/memory-report.json (every run's phases, sizes in KiB).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RELEASE="$ROOT/target/release"
OUT_DIR="$ROOT/target/bench"

BINARIES=()
ENVS=()
THREADS=1,default
CASES=pass,cache
IDLE=1000
STORMS=3
STORM_CONNECTIONS=2000
CONCURRENCY=200
SETTLE=10
SIZE=2048
BUILD=1

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

while (($#)); do
    case "$1" in
        --binary) BINARIES+=("${2:?--binary needs a path}"); shift 2 ;;
        --env) ENVS+=("${2:?--env needs VAR=VALUE or -}"); shift 2 ;;
        --threads) THREADS=${2:?--threads needs a value}; shift 2 ;;
        --cases) CASES=${2:?--cases needs a value}; shift 2 ;;
        --idle) IDLE=${2:?--idle needs a value}; shift 2 ;;
        --storms) STORMS=${2:?--storms needs a value}; shift 2 ;;
        --storm-connections) STORM_CONNECTIONS=${2:?--storm-connections needs a value}; shift 2 ;;
        --concurrency) CONCURRENCY=${2:?--concurrency needs a value}; shift 2 ;;
        --settle) SETTLE=${2:?--settle needs a value}; shift 2 ;;
        --size) SIZE=${2:?--size needs a value}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "memory.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
    esac
done
((${#BINARIES[@]})) || BINARIES=("$RELEASE/accel")
((${#ENVS[@]})) || ENVS=(-)

if (($(nproc) >= 2)); then
    CLIENT_CORE=0
    SERVER_CORE=1
else
    CLIENT_CORE=0
    SERVER_CORE=0
fi

NAME=memory
# shellcheck source=benches/stack.sh
source "$ROOT/benches/stack.sh"
stack_start

log() { echo "== $*" >&2; }

# wait_port PORT PID: until something accepts on PORT (5 s at most) while PID lives.
wait_port() {
    local port=$1 pid=$2
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# Idle connections and a storm's in-flight ones need descriptors on both sides.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if ((BUILD)); then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -p accel -p accel-benches --bin accel --bin fast-origin)
fi
mkdir -p "$OUT_DIR"

ORIGIN_PORT=$(free_port)
taskset -c "$SERVER_CORE" "$RELEASE/fast-origin" --listen "127.0.0.1:$ORIGIN_PORT" --size "$SIZE" \
    >"$WORK/origin.log" 2>&1 &
ORIGIN_PID=$!
PIDS+=("$ORIGIN_PID")
wait_port "$ORIGIN_PORT" "$ORIGIN_PID" || { log "fast-origin did not start"; cat "$WORK/origin.log" >&2; exit 1; }

# run_one LABEL BINARY ENV THREADS CASE: one accel, the client's phases, one JSON line.
run_one() {
    local label=$1 binary=$2 env=$3 threads=$4 case=$5 dir port admin pid cache_rule="" runtime=""
    dir="$WORK/${label//[^A-Za-z0-9._-]/_}"
    mkdir -p "$dir"
    port=$(free_port)
    admin=$(free_port)
    [[ $threads == default ]] || runtime="[runtime]
worker_threads = $threads"
    [[ $case == cache ]] && cache_rule='cache = { ttl = "5m" }'
    cat >"$dir/accel.toml" <<EOF
[listen]
http = "127.0.0.1:$port"
[admin]
addr = "127.0.0.1:$admin"
$runtime
[log]
access = false
[upstreams.origin]
endpoints = ["127.0.0.1:$ORIGIN_PORT"]
[rules]
files = ["$dir/rules.toml"]
EOF
    cat >"$dir/rules.toml" <<EOF
[[route]]
name = "all"
match = { path_prefix = "/" }
upstream = "origin"
$cache_rule
EOF
    local vars=()
    [[ $env == - ]] || read -r -a vars <<<"$env"
    env "${vars[@]}" taskset -c "$SERVER_CORE" "$binary" run --config "$dir/accel.toml" >"$dir/accel.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    if ! wait_port "$port" "$pid"; then
        log "$label: skipped: accel did not start"
        tail -n 20 "$dir/accel.log" >&2 || true
        return 0
    fi
    log "$label"
    if taskset -c "$CLIENT_CORE" python3 "$ROOT/benches/memory_load.py" --pid "$pid" --port "$port" \
        --idle "$IDLE" --storms "$STORMS" --storm-connections "$STORM_CONNECTIONS" \
        --concurrency "$CONCURRENCY" --settle "$SETTLE" >"$dir/report.json"; then
        LABEL=$label python3 -c 'import json, os, sys
report = json.load(open(sys.argv[1]))
report["label"] = os.environ["LABEL"]
print(json.dumps(report))' "$dir/report.json" >>"$WORK/runs.jsonl"
    else
        log "$label: the client failed"
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

for binary in "${BINARIES[@]}"; do
    name=accel
    if [[ $binary == *=* ]]; then
        name=${binary%%=*}
        binary=${binary#*=}
    elif ((${#BINARIES[@]} > 1)); then
        name=$binary
    fi
    if [[ ! -x $binary ]]; then
        log "$binary: not built; skipped"
        continue
    fi
    for env in "${ENVS[@]}"; do
        for threads in ${THREADS//,/ }; do
            for case in ${CASES//,/ }; do
                label="$name $case threads=$threads"
                [[ $env == - ]] || label="$label $env"
                run_one "$label" "$binary" "$env" "$threads" "$case"
            done
        done
    done
done

[[ -s $WORK/runs.jsonl ]] || { log "no run finished"; exit 1; }
python3 - "$WORK/runs.jsonl" "$OUT_DIR/memory-report.json" "$IDLE" <<'EOF'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
json.dump({"runs": runs}, open(sys.argv[2], "w"), indent=2)
idle = sys.argv[3]
mib = lambda kib: f"{kib / 1024:.1f}"
columns = ["start", f"+{idle} idle", "B/idle conn"]
storms = [p for p in runs[0]["phases"] if p["phase"].startswith("storm")]
for p in storms:
    columns += [f"{p['phase']} peak", f"after {p['phase']}"]
columns += ["settled", "settled-start", "errors"]
rows = []
for run in runs:
    phases = {p["phase"]: p for p in run["phases"]}
    row = [mib(phases["start"]["rss_kib"]), mib(phases["idle"]["rss_kib"]), str(run.get("per_idle_connection_bytes", "-"))]
    for p in storms:
        row += [mib(phases[p["phase"]]["peak_kib"]), mib(phases[p["phase"]]["rss_kib"])]
    row += [mib(phases["settled"]["rss_kib"]), mib(phases["settled"]["rss_kib"] - phases["start"]["rss_kib"]), ",".join(f"{k}:{v}" for k, v in run["errors"].items()) or "0"]
    rows.append((run["label"], row))
width = max(len(label) for label, _ in rows)
print(f"{'RSS, MiB':<{width}}  " + "  ".join(f"{c:>{max(len(c), 6)}}" for c in columns))
for label, row in rows:
    print(f"{label:<{width}}  " + "  ".join(f"{v:>{max(len(c), 6)}}" for v, c in zip(row, columns)))
print(f"\n(written to {sys.argv[2]})")
EOF
