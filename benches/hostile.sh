#!/usr/bin/env bash
# Hostile request shapes against Accel and nginx side by side, each proxying to the same
# trivial origin: the status each answers, whether it closed the connection, and whether the
# origin saw the request.
#
#   bash benches/hostile.sh            # needs nginx (Debian: apt-get install nginx-light)
#   ACCEL=target/release/accel bash benches/hostile.sh
#
# Both proxies get a 1 MiB body limit (nginx `client_max_body_size 1m`, Accel
# `limits.max_body_size = "1MiB"`); everything else is each one's default.
set -euo pipefail

cd "$(dirname "$0")/.."
ACCEL=${ACCEL:-target/debug/accel}
if [[ ! -x $ACCEL ]]; then
  cargo build -q -p accel --bin accel
fi
NGINX=${NGINX:-$(command -v nginx || true)}
[[ -n $NGINX ]] || { echo "nginx not found: apt-get install nginx-light" >&2; exit 1; }

dir=$(mktemp -d)
chmod 755 "$dir" # nginx workers run as another user
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN_PORT=$(free_port)
NGINX_PORT=$(free_port)
ACCEL_PORT=$(free_port)
ADMIN_PORT=$(free_port)

# The origin: answers 200 "ok" to anything and logs one line per request it read whole.
cat > "$dir/origin.py" <<'EOF'
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
log = open(sys.argv[2], "a", buffering=1)
class Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        # Logged once the body is read whole: a request whose body broke off is no hit.
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            elif "chunked" in (self.headers.get("Transfer-Encoding") or ""):
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    self.rfile.read(size + 2)
                    if size == 0:
                        break
        except ValueError:
            self.close_connection = True
            return
        log.write(f"{self.command} {self.path}\n")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    do_GET = do_POST = do_PUT = answer
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Origin).serve_forever()
EOF
touch "$dir/origin.log"
python3 "$dir/origin.py" "$ORIGIN_PORT" "$dir/origin.log" & pids+=($!)

cat > "$dir/nginx.conf" <<EOF
daemon off;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events {}
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  client_max_body_size 1m;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://127.0.0.1:$ORIGIN_PORT;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
"$NGINX" -c "$dir/nginx.conf" -p "$dir" & pids+=($!)

mkdir -p "$dir/rules"
cat > "$dir/accel.toml" <<EOF
[listen]
http = "127.0.0.1:$ACCEL_PORT"
[admin]
addr = "127.0.0.1:$ADMIN_PORT"
[log]
access = false
level = "error"
[limits]
max_body_size = "1MiB"
[upstreams.api]
endpoints = ["127.0.0.1:$ORIGIN_PORT"]
[rules]
files = ["rules/*.toml"]
EOF
printf '[[route]]\nname = "all"\nupstream = "api"\n' > "$dir/rules/all.toml"
"$ACCEL" run --config "$dir/accel.toml" > "$dir/accel.log" 2>&1 & pids+=($!)

python3 - "$NGINX_PORT" "$ACCEL_PORT" "$dir/origin.log" <<'EOF'
import re, socket, sys, time

nginx_port, accel_port, origin_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def wait(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on {port}")

def big(n):
    return b"a" * n

chunk = b"10000\r\n" + b"z" * 0x10000 + b"\r\n"
SHAPES = [
    ("CL then TE", b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE then CL", b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
    ("TE chunked, gzip", b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
    ("TE gzip, chunked", b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("two differing CLs", b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("invalid CL +5", b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"),
    ("obs-fold", b"GET /s HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n"),
    ("space before colon", b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello"),
    ("bare LF hides a field", b"POST /s HTTP/1.1\r\nHost: x\r\nX-A: 1\nContent-Length: 5\r\n\r\nhello"),
    ("NUL in a value", b"GET /s HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
    ("ESC in a value", b"GET /s HTTP/1.1\r\nHost: x\r\nX-A: a\x1bb\r\n\r\n"),
    ("64 KiB header", b"GET /s HTTP/1.1\r\nHost: x\r\nX-Big: " + big(64 * 1024) + b"\r\n\r\n"),
    ("101 headers", b"GET /s HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n"),
    ("9 KiB target", b"GET /" + big(9 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("CL over the body limit", b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 104857601\r\n\r\n"),
    ("chunked over the body limit", b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 32),
    ("absolute-form target", b"GET http://other.example/s HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("valid pipelined pair", b"GET /s HTTP/1.1\r\nHost: x\r\n\r\nGET /s HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("valid chunked upload", b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
]

def origin_hits():
    with open(origin_log) as f:
        return sum(1 for _ in f)

def send(port, request):
    """Statuses answered, whether the connection was closed within 2 s, origin hits."""
    before = origin_hits()
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        s.sendall(request)
    except OSError:
        pass
    data, closed = b"", False
    try:
        while True:
            part = s.recv(65536)
            if not part:
                closed = True
                break
            data += part
    except (socket.timeout, ConnectionResetError):
        closed = closed or False
    s.close()
    time.sleep(0.2)
    statuses = [m.decode() for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", data)]
    return "+".join(statuses) or "-", closed, origin_hits() - before

wait(nginx_port)
wait(accel_port)
# "origin N": requests the origin read whole. The origin (Python's http.server) refuses more
# than 100 header fields with 431 itself: nginx has no field count limit and passes that on.
print(f"| shape | nginx 1.22 | Accel |")
print(f"|---|---|---|")
for name, request in SHAPES:
    cells = []
    for port in (nginx_port, accel_port):
        status, closed, hits = send(port, request)
        cells.append(f"{status}{' closed' if closed else ''}, origin {hits}")
    print(f"| {name} | {cells[0]} | {cells[1]} |")
EOF
