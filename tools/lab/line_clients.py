#!/usr/bin/python3
"""Long-lived connections for the ecmp lab: N connections to each HOST:PORT, each sending a
line every INTERVAL seconds and expecting its echo ("SERVER LINE") within TIMEOUT seconds.

Usage: line_clients.py --conns N --interval 0.1 --timeout 5 --stop FILE --out FILE HOST:PORT...

Runs until FILE exists, then writes JSON to --out: per target, how many connections opened,
how many broke (reset, closed, no echo in time, or an echo from another real server than
the first one) and when (CLOCK_BOOTTIME milliseconds, the clock of /proc/uptime), and the
real servers seen. While running it writes progress lines
(`ready` once every connection has had its first echo) to standard output.
"""
import argparse
import asyncio
import json
import os
import time


class Conn:
    def __init__(self):
        self.server = None
        self.broken = None
        self.lines = 0
        self.broken_at = None


async def run_conn(host, port, conn, args, stop, ready):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), args.timeout)
    except (OSError, asyncio.TimeoutError) as e:
        conn.broken = f"connect: {e!r}"
        ready.release()
        return
    n = 0
    first = True
    try:
        while not stop.is_set():
            n += 1
            writer.write(f"{n}\n".encode())
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), args.timeout)
            if not line:
                conn.broken = f"closed after {n - 1} lines"
                break
            server, _, echoed = line.decode().strip().partition(" ")
            if echoed != str(n):
                conn.broken = f"bad echo {line!r}"
                break
            if conn.server is None:
                conn.server = server
            elif conn.server != server:
                conn.broken = f"moved from {conn.server} to {server}"
                break
            conn.lines = n
            if first:
                first = False
                ready.release()
            await asyncio.sleep(args.interval)
    except (OSError, asyncio.TimeoutError, ConnectionError) as e:
        conn.broken = f"after {n - 1} lines: {e!r}"
    finally:
        if conn.broken:
            conn.broken_at = int(time.clock_gettime(time.CLOCK_BOOTTIME) * 1000)
        if first:
            ready.release()
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=200)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--stop", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("targets", nargs="+")
    args = ap.parse_args()
    stop = asyncio.Event()
    ready = asyncio.Semaphore(0)
    conns, tasks = {}, []
    for t in args.targets:
        host, port = t.rsplit(":", 1)
        conns[t] = [Conn() for _ in range(args.conns)]
        for c in conns[t]:
            tasks.append(asyncio.create_task(run_conn(host, int(port), c, args, stop, ready)))
            await asyncio.sleep(0.002)
    for _ in tasks:
        await ready.acquire()
    print("ready", flush=True)
    while not os.path.exists(args.stop):
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*tasks)
    out = {}
    for t, cs in conns.items():
        broken = [c.broken for c in cs if c.broken]
        servers = {}
        for c in cs:
            servers[c.server] = servers.get(c.server, 0) + 1
        out[t] = {"conns": len(cs), "broken": len(broken), "reasons": broken[:5],
                  "broken_at_ms": sorted(c.broken_at for c in cs if c.broken_at),
                  "servers": servers, "min_lines": min(c.lines for c in cs)}
    with open(args.out + ".new", "w") as f:
        json.dump(out, f)
    os.rename(args.out + ".new", args.out)


asyncio.run(main())
