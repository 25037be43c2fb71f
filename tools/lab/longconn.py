#!/usr/bin/env python3
"""Long-lived TCP connections through a VIP, each sending a line every INTERVAL and
reading the echo back (tools/lab/tcp_echo.py answers "NAME <line>"): what a director
failover does to established connections.

Usage: longconn.py HOST PORT --conns N --interval S --duration S [--mark-file F]
                   [--stop-file F] [--ready-file F] --out F.json

Runs for DURATION seconds once every connection is open, or until --stop-file appears. Each connection records when
each answer came; the gap of a connection is the longest time between two consecutive
answers (ms). A connection is broken when it was reset or closed, or when no answer came
within --broken-after seconds before the end. If --mark-file is given, the time (same
clock) at which that file first appears is recorded as the event (a failover) and each
connection's gap is measured across it. The JSON written to --out holds every
connection's gap, its real server before and after, and the summary.
"""
import argparse
import asyncio
import json
import os
import sys
import time


def now():
    return time.monotonic()


class Conn:
    def __init__(self, i):
        self.i = i
        self.answers = []  # (time, server)
        self.error = None
        self.opened = None

    def summary(self, end, event, broken_after):
        times = [t for t, _ in self.answers]
        gap = 0.0
        gap_at = None
        for a, b in zip(times, times[1:]):
            if b - a > gap:
                gap, gap_at = b - a, a
        last = times[-1] if times else self.opened
        # An unanswered tail counts as a gap too (the connection never recovered).
        if end - last > gap:
            gap, gap_at = end - last, last
        broken = self.error is not None or end - last > broken_after
        before = [s for t, s in self.answers if event is None or t < event]
        after = [s for t, s in self.answers if event is not None and t >= event]
        return {
            "id": self.i,
            "answers": len(times),
            "gap_ms": round(gap * 1000, 1),
            "gap_at_s": None if gap_at is None else round(gap_at - (event or 0), 3),
            "broken": broken,
            "error": self.error,
            "server_before": before[-1] if before else None,
            "server_after": after[-1] if after else None,
        }


async def run_conn(c, host, port, interval, stop, started):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    except (OSError, asyncio.TimeoutError) as e:
        c.error = f"connect: {e!r}"
        started.set_result_one()
        return
    c.opened = now()
    started.set_result_one()

    async def reader_loop():
        while True:
            line = await reader.readline()
            if not line:
                c.error = c.error or "closed by peer"
                return
            c.answers.append((now(), line.split(b" ", 1)[0].decode(errors="replace")))

    rl = asyncio.ensure_future(reader_loop())
    seq = 0
    try:
        while not stop.is_set() and not rl.done():
            writer.write(f"conn {c.i} seq {seq}\n".encode())
            seq += 1
            try:
                await asyncio.wait_for(writer.drain(), interval)
            except asyncio.TimeoutError:
                pass
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass
    except OSError as e:
        c.error = f"send: {e!r}"
    if rl.done() and rl.exception() is not None and c.error is None:
        c.error = f"recv: {rl.exception()!r}"
    rl.cancel()
    writer.close()


class Counter:
    def __init__(self, n):
        self.n = n
        self.done = asyncio.Event()

    def set_result_one(self):
        self.n -= 1
        if self.n <= 0:
            self.done.set()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--broken-after", type=float, default=5.0)
    ap.add_argument("--mark-file")
    ap.add_argument("--ready-file", help="created once every connection is open")
    ap.add_argument("--stop-file", help="ends the run when it appears")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    conns = [Conn(i) for i in range(a.conns)]
    stop = asyncio.Event()
    started = Counter(a.conns)
    tasks = []
    for c in conns:
        tasks.append(asyncio.ensure_future(run_conn(c, a.host, a.port, a.interval, stop, started)))
        await asyncio.sleep(0.005)
    await asyncio.wait_for(started.done.wait(), 60)
    t0 = now()
    if a.ready_file:
        open(a.ready_file, "w").close()
    event = None
    while now() - t0 < a.duration:
        if a.stop_file and os.path.exists(a.stop_file):
            break
        if a.mark_file and event is None and os.path.exists(a.mark_file):
            event = now()
        await asyncio.sleep(0.02)
    end = now()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    rows = [c.summary(end, event, a.broken_after) for c in conns]
    gaps = sorted(r["gap_ms"] for r in rows if not r["broken"])
    out = {
        "conns": a.conns,
        "interval_s": a.interval,
        "duration_s": a.duration,
        "event_seen": event is not None,
        "broken": sum(r["broken"] for r in rows),
        "gap_ms_max": max(gaps) if gaps else None,
        "gap_ms_median": gaps[len(gaps) // 2] if gaps else None,
        "connections": rows,
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(
        f"{a.conns} connections: {out['broken']} broken; gap of the others "
        f"median {out['gap_ms_median']} ms, max {out['gap_ms_max']} ms"
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
