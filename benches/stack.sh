# Sourced by the scripts that measure the included origin behind the sidecar (platform.sh,
# query.sh): build the binaries, a work directory and processes cleaned up on exit, free
# ports, waiting for a server, and a freshly seeded origin.
#
# The sourcing script sets ROOT, PROFILE (release or debug), BUILD (0 or 1) and NAME (its
# name, for messages), then calls `stack_build BIN...`, `stack_start` and `start_origin`.

# Builds the named binaries of accel, accel-origin and accel-benches unless BUILD=0.
stack_build() {
  BIN="$ROOT/target/$PROFILE"
  ((BUILD)) || return 0
  local flag=() bins=()
  [ "$PROFILE" = release ] && flag=(--release)
  for bin in "$@"; do bins+=(--bin "$bin"); done
  cargo build "${flag[@]}" -p accel -p accel-origin -p accel-benches "${bins[@]}" \
    --manifest-path "$ROOT/Cargo.toml" >&2
}

# A work directory; every process in PIDS is killed, and the directory removed, on exit.
stack_start() {
  WORK="$(mktemp -d "/tmp/accel-$NAME.XXXXXX")"
  PIDS=()
  trap stack_cleanup EXIT
}

stack_cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # URL WHAT LOG
  for _ in $(seq 1 600); do
    curl -sf "$1" >/dev/null && return 0
    sleep 0.1
  done
  echo "$NAME.sh: $2 did not start" >&2
  cat "$3" >&2
  exit 1
}

# Seeds a fresh SQLite demo data set in WORK and serves it: sets DATABASE_URL, TOKEN (the
# seed's demo token, user 1) and ORIGIN_PORT.
start_origin() {
  ORIGIN_PORT=$(free_port)
  export DATABASE_URL="sqlite://$WORK/origin.db?mode=rwc"
  "$BIN/accel-origin" seed >"$WORK/seed.log" 2>&1
  TOKEN=$(sed -n 's/^demo token (user 1): //p' "$WORK/seed.log")
  [ -n "$TOKEN" ] || { echo "$NAME.sh: the seed printed no demo token" >&2; cat "$WORK/seed.log" >&2; exit 1; }
  "$BIN/accel-origin" serve --listen "127.0.0.1:$ORIGIN_PORT" >"$WORK/origin.log" 2>&1 &
  PIDS+=($!)
  wait_for "http://127.0.0.1:$ORIGIN_PORT/health" "the origin" "$WORK/origin.log"
}
