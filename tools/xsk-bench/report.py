#!/usr/bin/env python3
"""The own ring layer (xdp-fwd) against xsk-rs (xsk-fwd), from the raw files of one
`tools/bench/harness.sh --xsk-compare` run: per repetition and as median with spread (min to
max), full rate and half load, and each repetition's ratio xsk-fwd / xdp-fwd (the two ran
back to back, so a ratio shares that minute's load). Standard library only.

Usage: report.py OUT_DIR   (writes OUT_DIR/comparison.json and OUT_DIR/comparison.md)
"""
import glob
import json
import os
import statistics
import sys

OUT = sys.argv[1]
RAW = os.path.join(OUT, "raw")


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run(name):
    meta = load(os.path.join(RAW, name + ".meta.json"))
    r = load(os.path.join(RAW, name + ".json"))
    if meta is None or r is None or "skipped" in meta:
        return None
    win = meta.get("window_s") or 0
    pkts = r["rx_pps"] * win
    lat = r.get("latency_ns") or {}
    row = {
        "pps": round(r["rx_pps"]),
        "offered_pps": round(r["tx_pps"]),
        "loss": r["loss"],
        "p50_us": round(lat["p50"] / 1e3, 1) if "p50" in lat else None,
        "p99_us": round(lat["p99"] / 1e3, 1) if "p99" in lat else None,
        "cpu_pressure_pct": meta.get("cpu_pressure_pct"),
        "fwd_run_delay_ms": meta.get("fwd_run_delay_ms"),
    }
    # The forwarding CPU's busy time (process and softirq) and the forwarder process's own
    # CPU time (perf task-clock), per forwarded packet.
    if pkts > 0 and meta.get("fwd_cpu_busy_s") is not None:
        row["fwd_cpu_ns_per_packet"] = round(meta["fwd_cpu_busy_s"] * 1e9 / pkts)
    if pkts > 0 and meta.get("perf_task_clock"):
        row["process_cpu_ns_per_packet"] = round(meta["perf_task_clock"] * 1e6 / pkts)
    return row


def reps(base):
    out = []
    for path in sorted(glob.glob(os.path.join(RAW, base + "~*.meta.json"))):
        name = os.path.basename(path)[: -len(".meta.json")]
        out.append((int(name.split("~")[1]), run(name)))
    return [r for _, r in sorted(out, key=lambda x: x[0])]


def spread(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


KEYS = ["pps", "p50_us", "p99_us", "fwd_cpu_ns_per_packet", "process_cpu_ns_per_packet"]
result = {"cases": {}, "ratios": {}}
for load_name, prefix in (("full", ""), ("half", "half-")):
    own, xsk = reps(prefix + "xdp-fwd"), reps(prefix + "xsk-fwd")
    for label, rows in (("own", own), ("xsk-rs", xsk)):
        result["cases"][f"{load_name}/{label}"] = {
            "runs": rows,
            **{k: spread([r.get(k) if r else None for r in rows]) for k in KEYS},
        }
    for k in KEYS:
        pairs = [
            round(b[k] / a[k], 3)
            for a, b in zip(own, xsk)
            if a and b and a.get(k) and b.get(k)
        ]
        result["ratios"][f"{load_name}/{k}"] = {"per_run": pairs, **(spread(pairs) or {})}

with open(os.path.join(OUT, "comparison.json"), "w") as f:
    json.dump(result, f, indent=1)
    f.write("\n")


def fmt(s, scale=1.0, digits=0):
    if not s:
        return "-"
    f = lambda x: f"{x / scale:,.{digits}f}"
    return f"{f(s['median'])} ({f(s['min'])}-{f(s['max'])})"


lines = [
    "# Bare forwarder: fastlb's own ring layer (xdp-fwd) against xsk-rs (xsk-fwd)",
    "",
    "One `tools/xsk-bench/run.sh` run: both forwarders on the same topology, generator and",
    "CPU placement as `tools/bench/harness.sh`, alternating run by run. Median (min-max) over",
    "the repetitions; a ratio is xsk-fwd / xdp-fwd of the same repetition (back to back).",
    "",
    "| load | forwarder | kpps | p50 us | p99 us | fwd CPU ns/pkt | process CPU ns/pkt |",
    "|---|---|---:|---:|---:|---:|---:|",
]
for key, c in result["cases"].items():
    load_name, label = key.split("/")
    lines.append(
        f"| {load_name} | {label} | {fmt(c['pps'], 1e3)} | {fmt(c['p50_us'], 1, 1)} | "
        f"{fmt(c['p99_us'], 1, 1)} | {fmt(c['fwd_cpu_ns_per_packet'])} | "
        f"{fmt(c['process_cpu_ns_per_packet'])} |"
    )
lines += ["", "| ratio xsk-rs / own | per run | median |", "|---|---|---:|"]
for key, r in result["ratios"].items():
    if r.get("per_run"):
        lines.append(f"| {key} | {', '.join(str(x) for x in r['per_run'])} | {r['median']} |")
with open(os.path.join(OUT, "comparison.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
