#!/usr/bin/env bash
# Query caching: the latency of a repeated retrieval query (POST /api/retrieval/query) from
# the origin directly and through the sidecar with the shipped rules, in one run.
#
#   benches/query.sh                       # release build, 8 connections, 10 s each
#   benches/query.sh --duration 5s --concurrency 16 --no-build
#
# Seeds a fresh SQLite demo data set, starts one accel-origin and `accel run` with the
# shipped retrieval route (its rate limit removed: one client sends all the load), sends the
# same question with `accel-load -m POST --body-file` to the origin, then to the sidecar (whose
# first answer fills the cache during the warm-up), and prints both reports side by side.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PROFILE=release
BUILD=1
DURATION=10s
CONCURRENCY=8

while (($#)); do
  case "$1" in
    --debug) PROFILE=debug ;;
    --no-build) BUILD=0 ;;
    --duration) DURATION="$2"; shift ;;
    --concurrency) CONCURRENCY="$2"; shift ;;
    *) echo "query.sh: unknown option $1" >&2; exit 64 ;;
  esac
  shift
done

NAME=query
# shellcheck source=benches/stack.sh
source "$ROOT/benches/stack.sh"
stack_build accel accel-origin accel-load
stack_start
LISTEN_PORT=$(free_port)
ADMIN_PORT=$(free_port)
start_origin

mkdir -p "$WORK/rules"
# The shipped retrieval route, as it is but for its per-client rate limit.
python3 - "$ROOT/rules/platform.toml" >"$WORK/rules/retrieval.toml" <<'PY'
import sys
routes = open(sys.argv[1]).read().split("[[route]]")
route = next(r for r in routes if 'name = "retrieval"' in r)
print("[[route]]" + "\n".join(l for l in route.splitlines() if not l.startswith("rate_limit")))
PY
cat >"$WORK/accel.toml" <<TOML
[listen]
http = "127.0.0.1:$LISTEN_PORT"
[admin]
addr = "127.0.0.1:$ADMIN_PORT"
[runtime]
worker_threads = 1
[log]
access = false
[upstreams.api]
endpoints = ["127.0.0.1:$ORIGIN_PORT"]
[rules]
files = ["$WORK/rules/*.toml"]
TOML
"$BIN/accel" run --config "$WORK/accel.toml" >"$WORK/accel.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$ADMIN_PORT/readyz" "accel" "$WORK/accel.log"

printf '{"query": "how do cells turn glucose into energy", "k": 5}' >"$WORK/query.json"
query() { # BASE LABEL
  "$BIN/accel-load" --url "$1/api/retrieval/query" -m POST --body-file "$WORK/query.json" \
    -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
    --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 2s --json --label "$2"
}
first=$(curl -s -o /dev/null -w '%{http_code} %header{cache-status}' -X POST \
  -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
  --data-binary @"$WORK/query.json" "http://127.0.0.1:$LISTEN_PORT/api/retrieval/query")
echo "query.sh: first query through the sidecar: $first" >&2
query "http://127.0.0.1:$ORIGIN_PORT" origin >"$WORK/origin.json"
query "http://127.0.0.1:$LISTEN_PORT" sidecar >"$WORK/sidecar.json"
hits=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" |
  sed -n 's/^accel_cache_lookups_total{route="retrieval",result="hit"} //p')

python3 - "$WORK/origin.json" "$WORK/sidecar.json" "$hits" <<'PY'
import json, sys
rows = [json.load(open(path)) for path in sys.argv[1:3]]
print(f"{'':10} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}")
for r in rows:
    lat = r["latency_us"]
    errors = r["status_errors"] + r["transport_errors"]
    print(f"{r['label']:10} {r['requests_per_sec']:9.0f} {lat['p50']/1000:8.2f} {lat['p95']/1000:8.2f} "
          f"{lat['p99']/1000:8.2f} {errors:7}")
print(f"cache hits on the retrieval route: {sys.argv[3] or 0}")
PY
