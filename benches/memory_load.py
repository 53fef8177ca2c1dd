#!/usr/bin/env python3
"""The client side of benches/memory.sh: drives one running server through the memory phases
and reads its resident set size (VmRSS in /proc/PID/status) after each.

Phases, in order:
  start     one request (it fills the cache when the route caches), then RSS
  idle      N keep-alive connections, each after one request, held open: RSS, and the cost of
            one idle connection ((idle - start) / N); then they are closed
  storm k   STORMS times: STORM_CONNECTIONS short connections (one request each, then the
            client closes), CONCURRENCY of them in flight at once; the peak RSS while it runs
            (sampled every 20 ms) and the RSS one second after its last connection closed
  settled   RSS after SETTLE more seconds with nothing open

Writes one JSON object on stdout (sizes in KiB). Only the standard library: python3 >= 3.8.
"""

import argparse
import asyncio
import json
import os
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Client:
    def __init__(self, host, port, path):
        self.host, self.port = host, port
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: memory-bench\r\n\r\n".encode()
        self.errors = {}

    def failed(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def exchange(self, reader, writer):
        """One request on an open connection; its status (a whole answer was read)."""
        writer.write(self.request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length:
            await reader.readexactly(length)
        return status

    async def connect(self):
        return await asyncio.open_connection(self.host, self.port)

    async def short(self):
        """A short connection: connect, one request, close."""
        try:
            reader, writer = await self.connect()
            try:
                status = await self.exchange(reader, writer)
                if not 200 <= status < 300:
                    self.failed(str(status))
            finally:
                writer.close()
                try:
                    await writer.wait_closed()
                except OSError:
                    pass
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            self.failed(type(e).__name__)


async def sample_peak(pid, done, interval=0.02):
    peak = 0
    while not done.is_set():
        peak = max(peak, rss_kib(pid))
        try:
            await asyncio.wait_for(done.wait(), interval)
        except asyncio.TimeoutError:
            pass
    return max(peak, rss_kib(pid))


async def storm(client, pid, connections, concurrency):
    """`connections` short connections, `concurrency` at a time; the peak RSS meanwhile."""
    done = asyncio.Event()
    sampler = asyncio.create_task(sample_peak(pid, done))
    queue = iter(range(connections))

    async def worker():
        for _ in queue:
            await client.short()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    done.set()
    return await sampler, elapsed


async def run(args):
    pid = args.pid
    client = Client(args.host, args.port, args.path)
    report = {"phases": []}

    def phase(name, **extra):
        entry = {"phase": name, "rss_kib": rss_kib(pid), "fds": open_fds(pid), **extra}
        report["phases"].append(entry)
        print(f"  {name}: {entry['rss_kib'] / 1024:.1f} MiB", file=sys.stderr)
        return entry

    await client.short()
    await asyncio.sleep(1)
    start = phase("start")

    held = []
    for _ in range(args.idle):
        reader, writer = await client.connect()
        status = await client.exchange(reader, writer)
        if not 200 <= status < 300:
            client.failed(str(status))
        held.append(writer)
    await asyncio.sleep(1)
    idle = phase("idle", connections=args.idle)
    if args.idle:
        report["per_idle_connection_bytes"] = round((idle["rss_kib"] - start["rss_kib"]) * 1024 / args.idle)
    for writer in held:
        writer.close()
    await asyncio.sleep(1)

    for k in range(1, args.storms + 1):
        peak, elapsed = await storm(client, pid, args.storm_connections, args.concurrency)
        await asyncio.sleep(1)
        phase(f"storm{k}", peak_kib=peak, seconds=round(elapsed, 2))

    await asyncio.sleep(args.settle)
    phase("settled")
    report["errors"] = client.errors
    json.dump(report, sys.stdout)
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pid", type=int, required=True, help="the server whose RSS is read")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/bench")
    parser.add_argument("--idle", type=int, default=1000, help="idle keep-alive connections held open")
    parser.add_argument("--storms", type=int, default=3)
    parser.add_argument("--storm-connections", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=200, help="storm connections in flight at once")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds of quiet before the last reading")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
