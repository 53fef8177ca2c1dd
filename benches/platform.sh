#!/usr/bin/env bash
# The platform's targets (benches/scenarios/platform.toml) measured through the sidecar in
# front of the included origin: seeds a fresh SQLite demo data set, starts one origin and
# `accel run` with the shipped rules on free ports, runs accel-bench against the sidecar and
# stops everything. Exits with accel-bench's status (1 when a target is missed).
#
#   benches/platform.sh                       # release binaries, the scenario's durations
#   benches/platform.sh --debug --duration 1s # what CI runs: debug binaries, short load
#   benches/platform.sh --no-build --out /tmp/report.json
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PROFILE=release
BUILD=1
DURATION=""
OUT="$ROOT/target/performance_benchmark_report.json"
CLIENT_CONCURRENCY=200

while (($#)); do
  case "$1" in
    --debug) PROFILE=debug ;;
    --no-build) BUILD=0 ;;
    --duration) DURATION="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --client-concurrency) CLIENT_CONCURRENCY="$2"; shift ;;
    *) echo "platform.sh: unknown option $1" >&2; exit 64 ;;
  esac
  shift
done

NAME=platform
# shellcheck source=benches/stack.sh
source "$ROOT/benches/stack.sh"
stack_build accel accel-origin accel-bench
stack_start
LISTEN_PORT=$(free_port)
ADMIN_PORT=$(free_port)
start_origin
read -r TENANT LEAD CONTACT < <(python3 - "$WORK/origin.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
one = lambda sql, p: db.execute(sql, (p,)).fetchone()[0]
tenant = one("SELECT tenant_id FROM users WHERE id = ?", 1)
print(tenant, one("SELECT min(id) FROM golden_leads WHERE tenant_id = ?", tenant),
      one("SELECT min(id) FROM contacts WHERE tenant_id = ?", tenant))
PY
)
sed -e "s#/api/golden-leads/42#/api/golden-leads/$LEAD#; s#/api/predictions/42#/api/predictions/$LEAD#" \
    -e "s#/api/pricing/7?#/api/pricing/$CONTACT?#; s#/api/tenants/3/usage#/api/tenants/$TENANT/usage#" \
    "$ROOT/benches/scenarios/platform.toml" >"$WORK/scenario.toml"

# The shipped rules without their per-client rate limits, and the per-client concurrency cap
# raised: the benchmark is one client with up to 100 connections, where production traffic
# is many clients; with the limits on, most of its requests would be refused (429).
cat >"$WORK/accel.toml" <<TOML
[listen]
http = "127.0.0.1:$LISTEN_PORT"
[admin]
addr = "127.0.0.1:$ADMIN_PORT"
[limits]
client_concurrency = $CLIENT_CONCURRENCY
[log]
access = false
[cache]
memory = "256MiB"
[upstreams.api]
endpoints = ["127.0.0.1:$ORIGIN_PORT"]
health = { path = "/health", interval = "5s" }
[rules]
files = ["$WORK/rules/*.toml"]
TOML
mkdir -p "$WORK/rules"
for rules in "$ROOT"/rules/*.toml; do
  grep -v '^rate_limit = ' "$rules" >"$WORK/rules/$(basename "$rules")"
done
"$BIN/accel" run --config "$WORK/accel.toml" >"$WORK/accel.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$ADMIN_PORT/readyz" "accel" "$WORK/accel.log"
echo "platform.sh: sidecar on 127.0.0.1:$LISTEN_PORT (status page http://127.0.0.1:$ADMIN_PORT/)" >&2

# Warm the cached endpoints of the scenario as an operator would before traffic: the hit-rate
# target, measured first, then counts from each URL's first request.
printf '%s\n' "/api/golden-leads/$LEAD" "/api/predictions/$LEAD" "/api/pricing/$CONTACT?location=berlin" \
  "/api/tenants/$TENANT/usage" |
  "$BIN/accel" warm --proxy "127.0.0.1:$LISTEN_PORT" --header "Authorization: Bearer $TOKEN" - >&2

args=(--base "http://127.0.0.1:$LISTEN_PORT" --scenario "$WORK/scenario.toml" --out "$OUT"
  --header "Authorization: Bearer $TOKEN")
[ -n "$DURATION" ] && args+=(--duration "$DURATION")
status=0
"$BIN/accel-bench" "${args[@]}" || status=$?
if [ -n "${PLATFORM_SCREENSHOT:-}" ] && command -v chromium >/dev/null; then
  chromium --headless --no-sandbox --disable-gpu --disable-background-networking --hide-scrollbars \
    --user-data-dir="$WORK/chromium" --virtual-time-budget=5000 --window-size=1400,1100 \
    --screenshot="$PLATFORM_SCREENSHOT" "http://127.0.0.1:$ADMIN_PORT/" >/dev/null 2>&1 || true
fi
exit "$status"
