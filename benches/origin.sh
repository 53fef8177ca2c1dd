#!/usr/bin/env bash
# The origin benchmark: p50/p95 latency of every read and compute endpoint of accel-origin on
# PostgreSQL at the benchmark seed size (100k leads, ~1M usage and activity rows), each at the
# same fixed concurrency, one endpoint at a time, directly (no proxy). The platform team's
# targets: database query P95 under 50 ms, golden-lead detection under 50 ms.
#
# The database (default `accel_bench` on 127.0.0.1:5432) is created when missing and seeded
# once with a fixed "now", which the origin then serves as its own "now" (so every time
# window covers the same rows on every run); later runs reuse it (--reseed starts it over). Writes (pricing PUT,
# material upload/delete) are left out: they change the data set the next run measures.
#
# Pinning (2 cores): the load generator on core 0, the origin on core 1; PostgreSQL runs where
# the kernel puts it, as in production.
#
# Usage: benches/origin.sh [--database-url postgres://postgres@127.0.0.1:5432/accel_bench]
#                          [--concurrency 8] [--duration 5s] [--warmup 1s] [--size bench]
#                          [--reseed] [--no-build]
# Output: a table on stdout, target/bench/origin-report.json, target/bench/origin/*.json.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RELEASE="$ROOT/target/release"
OUT_DIR="$ROOT/target/bench"

DATABASE_URL=postgres://postgres@127.0.0.1:5432/accel_bench
CONCURRENCY=8
DURATION=5s
WARMUP=1s
SIZE=bench
RESEED=0
BUILD=1
# The data set's "now" (2026-01-01T00:00:00Z): the same rows on every machine and every run.
SEED_NOW=1767225600

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

while (($#)); do
    case "$1" in
        --database-url) DATABASE_URL=${2:?--database-url needs a value}; shift 2 ;;
        --concurrency) CONCURRENCY=${2:?--concurrency needs a value}; shift 2 ;;
        --duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
        --warmup) WARMUP=${2:?--warmup needs a value}; shift 2 ;;
        --size) SIZE=${2:?--size needs a value}; shift 2 ;;
        --reseed) RESEED=1; shift ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "origin.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
    esac
done

if (($(nproc) >= 2)); then LOAD_CORE=0; SERVER_CORE=1; else LOAD_CORE=0; SERVER_CORE=0; fi

WORK=$(mktemp -d /tmp/accel-origin-bench.XXXXXX)
ORIGIN_PID=""
cleanup() {
    if [[ -n "$ORIGIN_PID" ]]; then
        kill "$ORIGIN_PID" 2>/dev/null || true
        wait "$ORIGIN_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "== $*" >&2; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# psql_on DATABASE ARGS...: psql with the bench URL's host, port and user.
psql_on() {
    local database=$1 rest=${DATABASE_URL#postgres://} userinfo hostport
    shift
    userinfo=${rest%%@*}
    hostport=${rest#*@}
    hostport=${hostport%%/*}
    psql -X -q -v ON_ERROR_STOP=1 -h "${hostport%%:*}" -p "${hostport##*:}" -U "${userinfo%%:*}" -d "$database" "$@"
}

database_name() {
    local name=${DATABASE_URL##*/}
    echo "${name%%\?*}"
}

prepare_database() {
    local name
    name=$(database_name)
    if ((RESEED)); then
        log "dropping database $name"
        psql_on postgres -c "DROP DATABASE IF EXISTS \"$name\""
    fi
    if [[ -z $(psql_on postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'") ]]; then
        log "creating database $name"
        psql_on postgres -c "CREATE DATABASE \"$name\""
    fi
    local leads
    leads=$(psql_on "$name" -tAc "SELECT count(*) FROM golden_leads" 2>/dev/null || echo 0)
    if [[ "$leads" == 0 ]]; then
        log "seeding $name at size $SIZE (once; --reseed starts over)"
        "$RELEASE/accel-origin" --database-url "$DATABASE_URL" seed --size "$SIZE" --now "$SEED_NOW" >&2
    else
        log "database $name already seeded ($leads leads)"
    fi
    # Fresh statistics and a visibility map (index-only scans), as autovacuum leaves a
    # settled production database.
    "$RELEASE/accel-origin" --database-url "$DATABASE_URL" migrate >&2
    psql_on "$name" -c "VACUUM (ANALYZE)" >/dev/null
}

start_origin() {
    ORIGIN_PORT=$(free_port)
    taskset -c "$SERVER_CORE" "$RELEASE/accel-origin" --database-url "$DATABASE_URL" serve \
        --listen "127.0.0.1:$ORIGIN_PORT" --now "$SEED_NOW" >"$WORK/origin.log" 2>&1 &
    ORIGIN_PID=$!
    local i
    for i in $(seq 100); do
        if curl -sf "http://127.0.0.1:$ORIGIN_PORT/health" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "origin.sh: accel-origin did not become healthy; its log:" >&2
    cat "$WORK/origin.log" >&2
    exit 1
}

REPORTS=()
# measure LABEL PATH [ACCEL-LOAD OPTIONS...]: one endpoint at the fixed concurrency.
measure() {
    local label=$1 path=$2 file
    shift 2
    file="$OUT_DIR/origin/$(printf '%02d' "${#REPORTS[@]}")-$label.json"
    log "$label: $CONCURRENCY connections, $WARMUP warm-up + $DURATION"
    if taskset -c "$LOAD_CORE" "$RELEASE/accel-load" --url "http://127.0.0.1:$ORIGIN_PORT$path" \
        --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" --json --label "$label" \
        "$@" >"$file"; then
        REPORTS+=("$file")
    else
        log "$label: no answer received; left out of the report"
        rm -f "$file"
    fi
}

main() {
    for tool in psql curl python3 taskset; do
        command -v "$tool" >/dev/null || { echo "origin.sh: $tool is required" >&2; exit 1; }
    done
    if ((BUILD)); then
        cargo build --release -p accel-origin -p accel-benches --manifest-path "$ROOT/Cargo.toml" >&2
    fi
    prepare_database
    start_origin
    mkdir -p "$OUT_DIR/origin"
    rm -f "$OUT_DIR"/origin/*.json

    # A token reaches only its tenant's data: measure as a user of lead 4242's tenant, on a
    # contact of that tenant. Tokens are stored hashed, so a fresh one is issued per run.
    local token tenant user contact json='content-type: application/json'
    tenant=$(psql_on "$(database_name)" -tAc "SELECT tenant_id FROM golden_leads WHERE id = 4242")
    user=$(psql_on "$(database_name)" -tAc "SELECT min(id) FROM users WHERE tenant_id = $tenant")
    contact=$(psql_on "$(database_name)" -tAc "SELECT min(id) FROM contacts WHERE tenant_id = $tenant AND id >= 777")
    token=$("$RELEASE/accel-origin" --database-url "$DATABASE_URL" token issue --user "$user" --label bench)
    local auth="authorization: Bearer $token"
    cat >"$WORK/detect.json" <<'EOF'
{"email_opens":12,"email_clicks":4,"page_views":40,"pricing_page_views":5,"demo_requested":true,"trial_active":false,"company_size":150,"annual_budget":50000,"days_since_last_activity":3,"support_tickets":1,"industry":"software"}
EOF
    echo '{"query":"photosynthesis and the light reactions","k":5}' >"$WORK/retrieval.json"

    measure health /health
    measure golden-leads-list "/api/golden-leads?tier=gold&min_probability=0.7&limit=50" -H "$auth"
    measure golden-lead /api/golden-leads/4242 -H "$auth"
    measure golden-leads-detect /api/golden-leads/detect -m POST -H "$auth" -H "$json" --body-file "$WORK/detect.json"
    measure predictions /api/predictions/4242 -H "$auth"
    measure pricing "/api/pricing/$contact?location=berlin" -H "$auth"
    measure pricing-analytics /api/pricing/analytics -H "$auth"
    measure tenant-usage "/api/tenants/$tenant/usage" -H "$auth"
    measure materials /api/materials -H "$auth"
    measure retrieval /api/retrieval/query -m POST -H "$auth" -H "$json" --body-file "$WORK/retrieval.json"
    measure learning-overview "/api/learning/overview?days=30" -H "$auth"
    measure learning-heatmap /api/learning/heatmap -H "$auth"
    measure learning-xp /api/learning/xp -H "$auth"

    if ((${#REPORTS[@]} == 0)); then
        echo "origin.sh: no endpoint produced a report" >&2
        exit 1
    fi
    echo
    "$RELEASE/load-report" --out "$OUT_DIR/origin-report.json" \
        --param database=postgresql --param size="$SIZE" --param concurrency="$CONCURRENCY" \
        --param duration="$DURATION" --param warmup="$WARMUP" \
        --param pinning="load generator on core $LOAD_CORE; origin on core $SERVER_CORE" \
        "${REPORTS[@]}"
    echo
    echo "report: $OUT_DIR/origin-report.json"
}

main
