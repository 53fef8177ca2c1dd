#!/usr/bin/env bash
# The scale benchmark: N sidecars (separate `accel run` processes, one worker thread each) in
# front of one counting origin, on a private `redis-server` and then on a private six-node
# Redis Cluster (three masters, three replicas), all on free loopback ports; the machine's
# shared Redis on 6379 is never touched. On each Redis, in turn:
#   storm    cold-key storms: --storm-requests concurrent requests per sidecar for one new key,
#            --storms times: origin fetches per storm, follower latency
#   purge    purges by tag, back to back for --purge-duration under load: until every sidecar
#            stops serving the purged answer (p50 / p99 / max)
#   limit    a `scope = "cluster"` rate limit under load from every sidecar: admitted against
#            the limit
#   outage   the redis-server (or the master of the tier's {meta} slot) killed under load:
#            failed requests, time until Redis is back and until the tier is whole again
#
# Usage: benches/scale.sh [--sidecars 3] [--redis single,cluster] [--no-build] [ACCEL-SCALE OPTIONS...]
# Other options go to accel-scale (target/release/accel-scale --help): --storm-requests 200,
# --storms 5, --purge-duration 15s, --connections 4, --limit-rate 200, --limit-duration 10s,
# --down-for 3s, --outage-duration 20s, --origin-latency 50ms, --lock 10s, --cool-down 1s.
# Output: a table on stdout and target/bench/scale-report.json. Exit status 1 when a target
# is missed. Every process it starts (the benchmark, its sidecars and Redis servers) is
# stopped on exit, Ctrl-C included.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RELEASE="$ROOT/target/release"
BUILD=1
ARGS=()

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

while (($#)); do
    case "$1" in
        --no-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done

log() { echo "scale.sh: $*" >&2; }

for tool in redis-server redis-cli; do
    if ! command -v "$tool" >/dev/null; then
        log "$tool is missing (apt-get install -y redis-server)"
        exit 1
    fi
done

if ((BUILD)); then
    log "building the release binaries"
    (cd "$ROOT" && cargo build --release -p accel -p accel-benches)
fi
for binary in accel accel-scale; do
    if [[ ! -x "$RELEASE/$binary" ]]; then
        log "$RELEASE/$binary is not built (run without --no-build)"
        exit 1
    fi
done

# Five sidecars x 200 storm connections, both ends in this machine's processes.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true

# The benchmark leads its own process group, which its sidecars and Redis servers join: one
# kill of the group stops everything it started, whatever state it is in.
BENCH_PID=""
cleanup() {
    if [[ -n "$BENCH_PID" ]]; then
        kill -TERM -- "-$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$ROOT"
setsid "$RELEASE/accel-scale" --accel "$RELEASE/accel" --out "$ROOT/target/bench/scale-report.json" \
    ${ARGS[@]+"${ARGS[@]}"} &
BENCH_PID=$!
status=0
wait "$BENCH_PID" || status=$?
# cleanup (on exit) still stops anything of the group left behind.
exit "$status"
