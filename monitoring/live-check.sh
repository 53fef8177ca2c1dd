#!/usr/bin/env bash
# A real Prometheus scraping the running cluster shape: starts the cluster demo
# (accel-demo --topology cluster; PostgreSQL on 127.0.0.1:5432 and Redis on :6379), sends it
# traffic, starts Prometheus with monitoring/prometheus.yml and alerts.yml (1 s scrapes), and
# queries its HTTP API for the hit rate and P95 recording rules: each must answer with a
# number. Fails loudly otherwise. Used by .ci/run.
#
#   monitoring/live-check.sh [path/to/accel-demo]    (default: target/debug/accel-demo)
set -euo pipefail
cd "$(dirname "$0")/.."

demo=${1:-target/debug/accel-demo}
prometheus_port=${PROMETHEUS_PORT:-19090}
deadline=90   # seconds for each wait: only a broken setup reaches it

fail() { echo "live-check: FAILED: $*" >&2; exit 1; }
command -v prometheus >/dev/null || fail "prometheus is not installed (Debian package prometheus)"
[ -x "$demo" ] || fail "$demo not found: cargo build -p accel-demo"
for port in 8080 8081 8082 8083 8001 8002 8003 9901 9911 9912 9913 "$prometheus_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port is in use: stop what listens there (another demo?)"
  fi
done

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# until DESCRIPTION COMMAND...: retries COMMAND every half second up to the deadline.
until_ok() {
  local what=$1; shift
  local end=$((SECONDS + deadline))
  until "$@"; do
    [ "$SECONDS" -lt "$end" ] || fail "$what (waited ${deadline}s)"
    sleep 0.5
  done
}

echo "live-check: starting the cluster demo"
"$demo" --topology cluster >"$work/demo.log" 2>&1 &
pids+=($!)
until_ok "the demo printed its token" grep -q '^  export TOKEN=' "$work/demo.log"
token=$(sed -n 's/^  export TOKEN=\([^ ]*\).*/\1/p' "$work/demo.log")
until_ok "the edge answers" curl -fsS -o /dev/null "http://127.0.0.1:8080/health"

# Traffic for as long as the check runs: cached reads on every sidecar and through the edge,
# and golden-lead detection (uncached, rate limited).
body='{"email_opens":12,"email_clicks":4,"page_views":40,"pricing_page_views":5,"demo_requested":true,"trial_active":false,"company_size":150,"annual_budget":50000,"days_since_last_activity":3,"support_tickets":1,"industry":"software"}'
(
  while true; do
    for port in 8080 8081 8082 8083; do
      for path in /api/predictions/42 /api/golden-leads/7 "/api/pricing/7?location=berlin"; do
        curl -s -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$port$path" || true
      done
    done
    curl -s -o /dev/null -X POST -H "Authorization: Bearer $token" -H 'content-type: application/json' \
      -d "$body" http://127.0.0.1:8080/api/golden-leads/detect || true
    sleep 0.2
  done
) &
pids+=($!)

echo "live-check: starting prometheus on 127.0.0.1:$prometheus_port"
sed -e 's/scrape_interval: 15s/scrape_interval: 1s/' -e 's/evaluation_interval: 15s/evaluation_interval: 1s/' \
  monitoring/prometheus.yml >"$work/prometheus.yml"
cp monitoring/alerts.yml "$work/alerts.yml"
promtool check config "$work/prometheus.yml" >/dev/null || fail "promtool check config"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prometheus_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)

# query EXPR: the JSON answer of an instant query.
query() {
  curl -fsS --get "http://127.0.0.1:$prometheus_port/api/v1/query" --data-urlencode "query=$1"
}
# numeric EXPR: true when the answer has a sample with a finite value (a route without
# traffic in the window answers NaN, 0 / 0).
numeric() {
  query "$1" 2>/dev/null | python3 -c '
import json, math, sys
result = json.load(sys.stdin)["data"]["result"]
values = [float(r["value"][1]) for r in result]
sys.exit(0 if any(math.isfinite(v) for v in values) else 1)'
}

until_ok "prometheus scrapes every target (7 up)" \
  sh -c "curl -fsS --get http://127.0.0.1:$prometheus_port/api/v1/query --data-urlencode 'query=count(up == 1) == 7' 2>/dev/null | grep -q '\"result\":\[{'"
for expr in \
  'job:accel_cache_hit_ratio:rate5m{job="accel"}' \
  'route:accel_cache_hit_ratio:rate5m' \
  'route:accel_request_duration_seconds:p95_5m{route="edge"}' \
  'route:accel_request_duration_seconds:p95_5m{route="predictions"}' \
  'route:accel_request_duration_seconds:p95_5m{route="golden-leads-detect"}'; do
  until_ok "a number for $expr" numeric "$expr"
  echo "live-check: $expr"
  query "$expr" | python3 -c '
import json, sys
for r in json.load(sys.stdin)["data"]["result"]:
    labels = ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items()) if k != "__name__")
    value = float(r["value"][1])
    print(f"    {{{labels}}} {value:.4f}")'
done
# Every dashboard panel's expression parses and evaluates on the live data.
python3 -c '
import json
for panel in json.load(open("monitoring/grafana-dashboard.json"))["panels"]:
    for target in panel.get("targets", []):
        print(target["expr"])' >"$work/panels.txt"
while IFS= read -r expr; do
  answer=$(query "$expr") || fail "the dashboard expression does not evaluate: $expr"
  echo "$answer" | grep -q '"status":"success"' || fail "the dashboard expression fails: $expr: $answer"
done <"$work/panels.txt"
echo "live-check: $(wc -l <"$work/panels.txt") dashboard expressions evaluate"
echo "live-check: ok"
