#!/usr/bin/env python3
"""Turns the raw case files of tools/bench/harness.sh into results.json, SVG plots and
summary.md. Standard library only.

Usage: report.py OUT_DIR DURATION SIZE   (OUT_DIR holds raw/ and machine.json; an optional
OUT_DIR/notes.md, written by a person after looking at the run, is appended to the summary)
"""
import glob
import json
import math
import os
import sys

OUT, DUR, SIZE = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
RAW = os.path.join(OUT, "raw")

# Targets the summary checks (fastlb against its baselines, same run, same CPU budget):
# (ratio, ">=" or "<=", bound).
TARGETS = [
    ("fastlb_dr_1k_1w_over_ceiling_ratio", ">=", 0.9),
    ("fastlb_nat_1k_1w_over_ceiling_ratio", ">=", 0.9),
    ("fastlb_tun_1k_1w_over_ceiling_ratio", ">=", 0.9),
    ("fastlb_over_kernel_ratio", ">=", 1.5),
    ("fastlb_over_dpdk_ratio", ">=", 1.0),
    ("fastlb_p99_half_load_over_ceiling_ratio", "<=", 1.2),
    ("fastlb_syn_over_established_ratio", ">=", 0.5),
]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


cases = []
for meta_path in sorted(glob.glob(os.path.join(RAW, "*.meta.json"))):
    meta = load(meta_path)
    if meta is None:
        continue
    name = meta["name"]
    case = {"name": name, "group": meta.get("group"), "kind": meta.get("kind")}
    if "skipped" in meta:
        case["skipped"] = meta["skipped"]
        cases.append(case)
        continue
    r = load(os.path.join(RAW, name + ".json"))
    if r is None:
        case["skipped"] = "pktgen wrote no result"
        cases.append(case)
        continue
    lat = r.get("latency_ns") or {}
    us = lambda k: round(lat[k] / 1e3, 1) if k in lat else None
    pps = r["rx_pps"]
    win = meta.get("window_s", 0)
    pkts_in_window = pps * win
    case.update({
        "pps": round(pps),
        "gbps": round(r["gbps"], 4),
        "offered_pps": round(r["tx_pps"]),
        "rate_target": r["rate_target"],
        "sent": r["sent"],
        "received": r["received"],
        "loss": round(r["loss"], 5),
        "p50_us": us("p50"),
        "p99_us": us("p99"),
        "p999_us": us("p999"),
        "max_us": us("max"),
        "flows": r["flows"],
        "pattern": r["pattern"],
        "proto": r["proto"],
        "queues": meta.get("queues"),
        "fwd_cpus": meta.get("fwd_cpus"),
        "latency_cdf": r.get("latency_cdf", []),
        "cpu_pressure_pct": meta.get("cpu_pressure_pct"),
        "fwd_run_delay_ms": meta.get("fwd_run_delay_ms"),
        "pktgen_run_delay_ms": meta.get("pktgen_run_delay_ms"),
        "loadavg_1m": meta.get("loadavg_1m"),
    })
    # Forwarding CPU busy time (every context: process, softirq) per forwarded packet.
    if pkts_in_window > 0 and meta.get("fwd_cpu_busy_s") is not None:
        case["fwd_cpu_ns_per_packet"] = round(meta["fwd_cpu_busy_s"] * 1e9 / pkts_in_window)
    if pkts_in_window > 0 and meta.get("perf_task_clock"):
        case["process_cpu_ns_per_packet"] = round(meta["perf_task_clock"] * 1e6 / pkts_in_window)
    if pkts_in_window > 0 and meta.get("perf_cycles"):
        case["cycles_per_packet"] = round(meta["perf_cycles"] / pkts_in_window)
    cases.append(case)

# Repetitions NAME~1, NAME~2, ...: the best run (highest pps; for the half-load rows, which
# all deliver the offered rate, the lowest p99) stands for the case; all are kept.
grouped = {}
for c in cases:
    grouped.setdefault(c["name"].split("~")[0], []).append(c)
cases = []
for base, runs in grouped.items():
    ok = [c for c in runs if "skipped" not in c]
    if not ok:
        best = dict(runs[0])
    elif base.startswith("half-"):
        best = dict(min(ok, key=lambda c: (-(c["pps"] >= 0.95 * c["offered_pps"]), c["p99_us"] or 1e18)))
    else:
        best = dict(max(ok, key=lambda c: c["pps"]))
    best["name"] = base
    best["runs_pps"] = [c.get("pps") for c in runs]
    best["runs_p99_us"] = [c.get("p99_us") for c in runs]
    cases.append(best)
by = {c["name"]: c for c in cases}


def val(name, key="pps"):
    c = by.get(name)
    return None if c is None or "skipped" in c else c.get(key)


def ratio(a, b):
    return None if a in (None, 0) or b in (None, 0) else round(a / b, 3)


ratios = {
    "fastlb_over_ceiling_ratio": ratio(val("fastlb-dr-1k-1w"), val("xdp-fwd")),
    "fastlb_over_kernel_ratio": ratio(val("fastlb-nat-1k-1w"), val("kernel-nat")),
    "fastlb_over_dpdk_ratio": ratio(val("fastlb-dr-1k-1w"), val("dpdk")),
    "kernel_over_ceiling_ratio": ratio(val("kernel-nat"), val("xdp-fwd")),
    "dpdk_over_ceiling_ratio": ratio(val("dpdk"), val("xdp-fwd")),
    "fastlb_p99_half_load_over_ceiling_ratio": ratio(val("half-fastlb-dr", "p99_us"), val("half-xdp-fwd", "p99_us")),
    "fastlb_p99_half_load_over_kernel_ratio": ratio(val("half-fastlb-dr", "p99_us"), val("half-kernel-nat", "p99_us")),
    "fastlb_p99_half_load_over_dpdk_ratio": ratio(val("half-fastlb-dr", "p99_us"), val("half-dpdk", "p99_us")),
    "kernel_p99_half_load_over_ceiling_ratio": ratio(val("half-kernel-nat", "p99_us"), val("half-xdp-fwd", "p99_us")),
    "dpdk_p99_half_load_over_ceiling_ratio": ratio(val("half-dpdk", "p99_us"), val("half-xdp-fwd", "p99_us")),
    # New connections per second (TCP SYN, each packet a new connection) against the
    # established forwarding rate (UDP, 1 k flows), both DR with one worker.
    "fastlb_syn_over_established_ratio": ratio(val("fastlb-syn-dr-1w"), val("fastlb-dr-1k-1w")),
}
for m in ("dr", "nat", "tun"):
    for fl in ("1k", "1m"):
        for w in ("1w", "2w"):
            ratios[f"fastlb_{m}_{fl}_{w}_over_ceiling_ratio"] = ratio(val(f"fastlb-{m}-{fl}-{w}"), val("xdp-fwd"))

def verdict(k, op, t):
    v = ratios.get(k)
    if v is None:
        return {"ratio": k, "op": op, "bound": t, "value": None, "met": None}
    return {"ratio": k, "op": op, "bound": t, "value": v, "met": v >= t if op == ">=" else v <= t}


machine = load(os.path.join(OUT, "machine.json")) or {}
results = {
    "machine": machine,
    "duration_s": DUR,
    "frame_size": SIZE,
    "placement": {
        "generator_and_sink": "CPU 0 (one pktgen process, one thread)",
        "forwarding": "CPU 1 (two-worker fastlb: CPUs 0 and 1)",
        "director_receive_softirq": "CPU 0 (veth NAPI runs on the sender's CPU); kernel path: RPS to CPU 1",
        "sink_receive_softirq": "CPU 1 (the forwarder's transmit CPU)",
    },
    "ratios": ratios,
    "targets": [verdict(*t) for t in TARGETS],
    "cases": [{k: v for k, v in c.items() if k != "latency_cdf"} for c in cases],
}
with open(os.path.join(OUT, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
    f.write("\n")

# ---- plots ---------------------------------------------------------------------------------
COLORS = {"xdp-fwd": "#555555", "xsk-fwd": "#27ae60", "kernel": "#c0392b", "dpdk": "#8e44ad", "fastlb": "#2471a3"}


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;")


def bar_svg(path):
    rows = [c for c in cases if "skipped" not in c and not c["name"].startswith("half-")]
    if not rows:
        return
    w, lh, left = 760, 22, 190
    h = 40 + lh * len(rows) + 30
    top = max(c["pps"] for c in rows) or 1
    scale = (w - left - 90) / top
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="14">Forwarded packets per second, {SIZE}-byte frames (one run)</text>']
    for i, c in enumerate(rows):
        y = 35 + i * lh
        bw = c["pps"] * scale
        col = COLORS.get(c["kind"], "#888")
        out.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{esc(c["name"])}</text>')
        out.append(f'<rect x="{left}" y="{y + 3}" width="{bw:.1f}" height="{lh - 6}" fill="{col}"/>')
        out.append(f'<text x="{left + bw + 4:.1f}" y="{y + 14}">{c["pps"] / 1e3:.0f} kpps</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def cdf_svg(path):
    rows = [c for c in cases if "skipped" not in c and c["name"].startswith("half-") and c["latency_cdf"]]
    if not rows:
        return
    w, h, l, r, t, b = 760, 420, 60, 170, 30, 50
    xs = [p[0] for c in rows for p in c["latency_cdf"] if p[0] > 0]
    lo, hi = math.log10(max(min(xs), 1)), math.log10(max(xs))
    if hi <= lo:
        hi = lo + 1
    X = lambda ns: l + (math.log10(max(ns, 1)) - lo) / (hi - lo) * (w - l - r)
    Y = lambda q: t + (1 - q) * (h - t - b)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<text x="10" y="18" font-size="14">One-way latency CDF at half of the ceiling rate</text>',
           f'<line x1="{l}" y1="{Y(0)}" x2="{w - r}" y2="{Y(0)}" stroke="black"/>',
           f'<line x1="{l}" y1="{Y(0)}" x2="{l}" y2="{Y(1)}" stroke="black"/>']
    for q in (0, 0.5, 0.9, 0.99, 1):
        out.append(f'<text x="{l - 5}" y="{Y(q) + 4}" text-anchor="end">{q}</text>')
    d = math.floor(lo)
    while d <= hi:
        for m in (1, 2, 5):
            v = m * 10 ** d
            if lo <= math.log10(v) <= hi:
                out.append(f'<line x1="{X(v):.1f}" y1="{Y(0)}" x2="{X(v):.1f}" y2="{Y(0) + 4}" stroke="black"/>')
                out.append(f'<text x="{X(v):.1f}" y="{Y(0) + 16}" text-anchor="middle">{v / 1e3:g}</text>')
        d += 1
    out.append(f'<text x="{(l + w - r) / 2}" y="{h - 10}" text-anchor="middle">microseconds (log scale)</text>')
    for i, c in enumerate(rows):
        col = COLORS.get(c["kind"], "#888")
        pts = " ".join(f"{X(ns):.1f},{Y(q):.1f}" for ns, q in c["latency_cdf"])
        out.append(f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="2"/>')
        out.append(f'<rect x="{w - r + 10}" y="{t + i * 18}" width="12" height="3" fill="{col}"/>')
        out.append(f'<text x="{w - r + 28}" y="{t + i * 18 + 5}">{esc(c["name"][5:])}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


bar_svg(os.path.join(OUT, "pps.svg"))
cdf_svg(os.path.join(OUT, "latency-cdf.svg"))

# ---- summary -------------------------------------------------------------------------------
fmt = lambda v, f="{:.0f}": "-" if v is None else f.format(v)
L = ["# Live benchmark: fastlb against its baselines", "",
     "Generated by `tools/bench/harness.sh` (one command, one run; every number below comes",
     "from the same run, so compare rows with each other, not with other runs: run-to-run",
     "noise on this machine is about 15 %).", "",
     "## Machine", ""]
for k in ("cpu", "cpus", "memory", "virtualization", "os", "kernel", "rustc", "dpdk", "perf_cycles"):
    if machine.get(k):
        L.append(f"- {k}: {machine[k]}")
L += ["", "## Setup", "",
      f"- {SIZE}-byte UDP frames (TCP SYN for the `syn` rows) from `pktgen` (AF_XDP, copy mode) on",
      "  veth `g0` to the director's `d0`; the director forwards out of `d1` to `s0`, where the",
      "  same pktgen process counts and timestamps what arrives. Measurement window "
      f"{DUR:g} s per case.",
      "- CPU 0: pktgen (generator and sink, one thread) and the director's veth receive softirq",
      "  (veth NAPI runs on the sending CPU). CPU 1: the forwarder (xdp-fwd, testpmd's forwarding",
      "  lcore, fastlb's worker) and the sink's receive softirq. Kernel path: RPS steers `d0`'s",
      "  receive processing (forwarding, conntrack, DNAT) to CPU 1. Two-worker fastlb rows use",
      "  both CPUs (the machine has two), sharing CPU 0 with the generator.",
      "- Gbit/s counts Ethernet frame bytes without FCS, preamble or gap.",
      "- `fwd CPU ns/pkt` is CPU 1's busy time (all contexts, from /proc/stat) per forwarded",
      "  packet; `proc ns/pkt` is the forwarding process's task-clock (perf) per packet;",
      "  cycles come from `perf stat -e cycles` where the CPU exposes them.",
      "- Latency is one-way, generator stamp to sink receipt (same CLOCK_MONOTONIC). At full",
      "  load it is dominated by full rings; compare latency in the half-load rows.",
      "- The harness runs in a session of its own with autogroup nice -20 (the machine is",
      "  shared with other work). What contention was left: `stall %` is the share of the",
      "  window in which some task waited for a CPU (/proc/pressure/cpu), `fwd wait ms` the",
      "  time the forwarder's threads waited on a run queue (schedstat), `load` the 1-minute",
      "  load average at the end of the window.", "",
      "## Results", "",
      "| case | pps | Gbit/s | offered pps | loss | p50 us | p99 us | p99.9 us | fwd CPU ns/pkt | proc ns/pkt | cycles/pkt | stall % | fwd wait ms | load | pps of each run |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
for c in cases:
    if "skipped" in c:
        continue
    L.append(f"| {c['name']} | {c['pps']} | {c['gbps']:.3f} | {c['offered_pps']} | {c['loss'] * 100:.2f} % | "
             f"{fmt(c['p50_us'], '{:.1f}')} | {fmt(c['p99_us'], '{:.1f}')} | {fmt(c['p999_us'], '{:.1f}')} | "
             f"{fmt(c.get('fwd_cpu_ns_per_packet'))} | {fmt(c.get('process_cpu_ns_per_packet'))} | "
             f"{fmt(c.get('cycles_per_packet'))} | {fmt(c.get('cpu_pressure_pct'), '{:.1f}')} | "
             f"{fmt(c.get('fwd_run_delay_ms'), '{:.1f}')} | {fmt(c.get('loadavg_1m'), '{:.2f}')} | "
             f"{', '.join(fmt(v) for v in c['runs_pps'])} |")
skipped = [c for c in cases if "skipped" in c]
if skipped:
    L += ["", "## Skipped", ""]
    for c in skipped:
        L.append(f"- {c['name']}: {c['skipped'].strip()}")
L += ["", "## Ratios", "", "| ratio | value |", "|---|---:|"]
for k, v in ratios.items():
    L.append(f"| {k} | {fmt(v, '{:.3f}')} |")
L += ["", "## Targets", ""]
for k, op, t in TARGETS:
    v = ratios.get(k)
    ok = v is not None and (v >= t if op == ">=" else v <= t)
    verdict = "not measured" if v is None else ("met" if ok else "missed")
    L.append(f"- {k} {op} {t}: {fmt(v, '{:.3f}')} ({verdict})")
L += ["", "Plots: [pps.svg](pps.svg), [latency-cdf.svg](latency-cdf.svg). Raw per-case JSON,",
      "pktgen progress logs and forwarder output: [raw/](raw/)."]
notes = os.path.join(OUT, "notes.md")
if os.path.exists(notes):
    L += ["", open(notes).read().rstrip()]
with open(os.path.join(OUT, "summary.md"), "w") as f:
    f.write("\n".join(L) + "\n")
print(f"report: {len(cases)} cases, {len(skipped)} skipped -> {OUT}/results.json, summary.md")
