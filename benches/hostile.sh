#!/usr/bin/env bash
# Hostile request shapes against Accel and nginx side by side, each proxying to the same
# trivial origin: the status each answers, whether it closed the connection, and whether the
# origin saw the request.
#
#   bash benches/hostile.sh            # needs nginx (Debian: apt-get install nginx-light)
#   ACCEL=target/release/accel bash benches/hostile.sh
#
# Both proxies get a 1 MiB body limit (nginx `client_max_body_size 1m`, Accel
# `limits.max_body_size = "1MiB"`); everything else is each one's default. A second table sends
# HTTP/2 frames by hand (h2c with prior knowledge: nginx `listen ... http2`, Accel's one
# listener), both bounded to 4 concurrent streams: what each answers (RST_STREAM by code,
# GOAWAY with its code and debug data, a response's status and stream), whether it closed the
# connection within 2 s, and the origin's hits.
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
NGINX_H2_PORT=$(free_port)
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
    listen 127.0.0.1:$NGINX_H2_PORT http2;
    http2_max_concurrent_streams 4;
    location / {
      proxy_pass http://127.0.0.1:$ORIGIN_PORT;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
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
h2_max_concurrent_streams = 4
[upstreams.api]
endpoints = ["127.0.0.1:$ORIGIN_PORT"]
[rules]
files = ["rules/*.toml"]
EOF
printf '[[route]]\nname = "all"\nupstream = "api"\n' > "$dir/rules/all.toml"
"$ACCEL" run --config "$dir/accel.toml" > "$dir/accel.log" 2>&1 & pids+=($!)

python3 - "$NGINX_PORT" "$ACCEL_PORT" "$dir/origin.log" "$NGINX_H2_PORT" <<'EOF'
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
wait(int(sys.argv[4]))
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

python3 - "$NGINX_H2_PORT" "$ACCEL_PORT" "$dir/origin.log" <<'EOF'
import socket, struct, sys, time

nginx_port, accel_port, origin_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

def string(b):  # an HPACK string literal, not Huffman coded
    n, out = len(b), bytearray()
    if n < 127:
        out.append(n)
    else:
        out.append(127)
        n -= 127
        while n >= 128:
            out.append(n % 128 | 0x80)
            n //= 128
        out.append(n)
    return bytes(out) + b

def literal(name, value):
    return b"\x00" + string(name.encode()) + string(value.encode())

def block(path, extra=()):
    fields = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", path), *extra]
    return b"".join(literal(n, v) for n, v in fields)

def get(stream, path):
    return frame(1, 0x5, stream, block(path))

def split(data, size, end_stream):
    """`data` as HEADERS then CONTINUATION frames of `size` bytes; END_HEADERS on the last when
    `end_stream` (a whole request), none otherwise (a block that never ends)."""
    parts = [data[i:i + size] for i in range(0, len(data), size)]
    flags = lambda i: ((0x4 if i == len(parts) - 1 else 0) | (0x1 if i == 0 else 0)) if end_stream else 0
    return [frame(1 if i == 0 else 9, flags(i), 1, p) for i, p in enumerate(parts)]

CODES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL", 9: "COMPRESSION_ERROR",
         11: "ENHANCE_YOUR_CALM"}
STATIC = {0x88: "200", 0x89: "204", 0x8a: "206", 0x8b: "304", 0x8c: "400", 0x8d: "404", 0x8e: "500"}
DIGITS = {"00000": "0", "00001": "1", "00010": "2", "011001": "3", "011010": "4", "011011": "5",
          "011100": "6", "011101": "7", "011110": "8", "011111": "9"}

def status(payload):
    """A response's :status: a static entry, or a literal (plain or Huffman-coded digits)."""
    if payload[0] in STATIC:
        return STATIC[payload[0]]
    if payload[0] & 0xf0 in (0x40, 0x00, 0x10) and len(payload) > 2:
        raw = payload[2:2 + (payload[1] & 0x7f)]
        if not payload[1] & 0x80:
            return raw.decode()
        out, code = "", ""
        for bit in "".join(f"{b:08b}" for b in raw):
            code += bit
            if code in DIGITS:
                out, code = out + DIGITS[code], ""
        return out
    return "?"

def shapes():
    pairs = [b"".join(get(i, "/r") + frame(3, 0, i, struct.pack(">I", 8)) for i in range(b * 100 + 1, b * 100 + 100, 2))
             for b in range(100)]
    small = [frame(1, 0, 1, block("/c"))] + [frame(9, 0, 1, literal(f"x-{i}", "v")) for i in range(10000)]
    large = [frame(1, 0, 1, block("/c"))] + [frame(9, 0, 1, literal(f"x-{i}", "v" * 16000)) for i in range(1000)]
    fields = [(f"x-{i}", "v" * 1000) for i in range(40)]
    grows = block("/big", fields) + literal("x-huge", "v" * 100000)
    return [
        ("6 streams at once, bound 4", [b"".join(get(1 + 2 * i, f"/s{i}") for i in range(6))]),
        ("rapid reset: 5,000 HEADERS + RST_STREAM", pairs),
        ("CONTINUATION flood, 10,000 small frames", small),
        ("CONTINUATION flood, 16 KB frames", large),
        ("header list of 40 x 1 KiB fields, then a GET", split(block("/big", fields), 16000, True) + [get(3, "/after")]),
        ("header block growing past 32 KiB undecoded", split(grows, 16384, False)),
    ]

def origin_hits():
    with open(origin_log) as f:
        return sum(1 for _ in f)

def send(port, chunks):
    """What the server sent (its SETTINGS left out), whether it closed within 2 s, origin hits."""
    before = origin_hits()
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(4, 1, 0))
    for chunk in chunks:
        try:
            s.sendall(chunk)
        except OSError:
            break
    data, closed = b"", False
    try:
        while True:
            part = s.recv(65536)
            if not part:
                closed = True
                break
            data += part
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    time.sleep(0.2)
    seen, resets = [], {}
    while len(data) >= 9:
        length, kind, stream = int.from_bytes(data[:3], "big"), data[3], int.from_bytes(data[5:9], "big")
        payload, data = data[9:9 + length], data[9 + length:]
        if kind == 1:
            seen.append(f"{status(payload)} on {stream}")
        elif kind == 3:
            code = CODES.get(int.from_bytes(payload[:4], "big"), "?")
            resets[code] = resets.get(code, 0) + 1
        elif kind == 7:
            debug = payload[8:].decode(errors="replace")
            seen.append(f"GOAWAY {CODES.get(int.from_bytes(payload[4:8], 'big'), '?')}" + (f" {debug}" if debug else ""))
    seen[:0] = [f"{n} RST_STREAM {code}" for code, n in resets.items()]
    return ", ".join(seen) or "-", closed, origin_hits() - before

print()
print("| HTTP/2 shape | nginx 1.22 | Accel |")
print("|---|---|---|")
for name, chunks in shapes():
    cells = []
    for port in (nginx_port, accel_port):
        answer, closed, hits = send(port, chunks)
        cells.append(f"{answer}{'; closed' if closed else ''}; origin {hits}")
    print(f"| {name} | {cells[0]} | {cells[1]} |")
EOF
