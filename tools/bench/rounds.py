#!/usr/bin/env python3
"""Puts several whole runs of tools/bench/harness.sh side by side: for every ratio of
results.json (each computed inside one run, against that run's own baselines), the value of
each round, the median and the spread; the targets checked on the median, with how many
rounds met each. Standard library only.

Usage: rounds.py OUT_DIR RUN_DIR RUN_DIR [RUN_DIR...]
  RUN_DIR: a harness --out directory (results.json, summary.md).
  Writes OUT_DIR/{rounds.json,summary.md,ratios.svg} and copies each round's results.json
  and summary.md to OUT_DIR/round-N/.
"""
import json
import os
import shutil
import statistics
import sys

# What each target of report.py says, for the summary; the targets themselves (ratio, op,
# bound) are read from the rounds' results.json, as report.py checked them.
WHAT = {
    "fastlb_dr_1k_1w_over_ceiling_ratio": "DR 1k flows / bare forwarder",
    "fastlb_nat_1k_1w_over_ceiling_ratio": "NAT 1k flows / bare forwarder",
    "fastlb_tun_1k_1w_over_ceiling_ratio": "TUN 1k flows / bare forwarder",
    "fastlb_over_dpdk_ratio": "DR 1k flows / DPDK testpmd",
    "fastlb_over_kernel_ratio": "NAT 1k flows / kernel DNAT",
    "fastlb_p99_half_load_over_ceiling_ratio": "p99 at half load / bare forwarder's",
    "fastlb_syn_over_established_ratio": "new connections / established (DR)",
}


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    out, runs = sys.argv[1], sys.argv[2:]
    os.makedirs(out, exist_ok=True)
    rounds = []
    for i, d in enumerate(runs, 1):
        with open(os.path.join(d, "results.json")) as f:
            rounds.append(json.load(f))
        dest = os.path.join(out, f"round-{i}")
        os.makedirs(dest, exist_ok=True)
        for name in ("results.json", "summary.md"):
            if os.path.exists(os.path.join(d, name)):
                shutil.copy(os.path.join(d, name), dest)

    keys = sorted({k for r in rounds for k in r.get("ratios", {})})
    ratios = {}
    for k in keys:
        vals = [r["ratios"].get(k) for r in rounds]
        got = [v for v in vals if v is not None]
        med = statistics.median(got) if got else None
        ratios[k] = {
            "rounds": vals,
            "median": round(med, 3) if med is not None else None,
            "min": min(got) if got else None,
            "max": max(got) if got else None,
            "spread_pct": round(100 * (max(got) - min(got)) / med, 1) if got and med else None,
        }

    def met(v, op, bound):
        return None if v is None else (v >= bound if op == ">=" else v <= bound)

    checked = {}
    for r in rounds:
        for t in r.get("targets", []):
            checked.setdefault(t["ratio"], (t["op"], t["bound"]))
    targets = []
    for k, (op, bound) in checked.items():
        what = WHAT.get(k, k)
        r = ratios.get(k, {"rounds": [None] * len(rounds), "median": None})
        targets.append({
            "ratio": k, "what": what, "op": op, "bound": bound,
            "median": r["median"], "rounds": r["rounds"],
            "met_on_median": met(r["median"], op, bound),
            "rounds_met": sum(1 for v in r["rounds"] if met(v, op, bound)),
        })

    ceilings = [next((c.get("pps") for c in r.get("cases", []) if c.get("name") == "xdp-fwd"), None)
                for r in rounds]
    doc = {
        "rounds": len(rounds),
        "machine": rounds[0].get("machine", {}),
        "duration_s": rounds[0].get("duration_s"),
        "ceiling_pps": ceilings,
        "ratios": ratios,
        "targets": targets,
    }
    with open(os.path.join(out, "rounds.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")

    n = len(rounds)
    md = [f"# Live ratios over {n} whole runs of `tools/bench/harness.sh`", "",
          f"Each ratio is computed inside one run, against that run's own baselines; the {n} runs",
          "were made one after the other (`rounds.py` puts them side by side). Median and spread",
          "(max - min, as a share of the median) over the runs.", "",
          "Bare forwarder (xdp-fwd) per round: "
          + ", ".join(f"{c / 1e3:.0f} kpps" if c else "-" for c in ceilings) + ".", "",
          "## Targets (issue 12)", "",
          "| what | target | rounds | median | spread | met (median) | rounds met |",
          "|---|---|---|---:|---:|---|---:|"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    for t in targets:
        r = ratios.get(t["ratio"], {})
        m = t["met_on_median"]
        md.append(f"| {t['what']} | {t['op']} {t['bound']} | {', '.join(fmt(v) for v in t['rounds'])} | "
                  f"{fmt(t['median'])} | {r.get('spread_pct', '-')} % | "
                  f"{'-' if m is None else ('yes' if m else 'no')} | {t['rounds_met']} of {n} |")
    md += ["", "## Every ratio", "", "| ratio | rounds | median | spread |", "|---|---|---:|---:|"]
    for k in keys:
        r = ratios[k]
        md.append(f"| `{k}` | {', '.join(fmt(v) for v in r['rounds'])} | {fmt(r['median'])} | "
                  f"{'-' if r['spread_pct'] is None else str(r['spread_pct']) + ' %'} |")
    notes = os.path.join(out, "notes.md")
    if os.path.exists(notes):
        md += ["", open(notes).read().rstrip()]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    strip_svg(os.path.join(out, "ratios.svg"), targets, n)


def strip_svg(path, targets, n):
    """One row per target: each round's ratio as a dot, the median as a bar, the bound as a
    red tick, on a common linear axis."""
    rows = [t for t in targets if any(v is not None for v in t["rounds"])]
    if not rows:
        return
    vals = [v for t in rows for v in t["rounds"] if v is not None] + [t["bound"] for t in rows]
    hi = max(vals) * 1.1
    w, lh, left, right = 780, 30, 260, 30
    x = lambda v: left + v / hi * (w - left - right)
    h = 50 + lh * len(rows) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="14">Live ratios, {n} runs: dots = rounds, bar = median, red = target</text>']
    for i, t in enumerate(rows):
        y = 40 + i * lh
        out.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{t["what"]}</text>')
        out.append(f'<line x1="{left}" y1="{y + 11}" x2="{w - right}" y2="{y + 11}" stroke="#ddd"/>')
        if t["median"] is not None:
            out.append(f'<rect x="{x(t["median"]) - 1.5:.1f}" y="{y + 1}" width="3" height="20" fill="#2471a3"/>')
        for v in t["rounds"]:
            if v is not None:
                out.append(f'<circle cx="{x(v):.1f}" cy="{y + 11}" r="4" fill="#2471a3" fill-opacity="0.5"/>')
        out.append(f'<rect x="{x(t["bound"]) - 1:.1f}" y="{y - 1}" width="2" height="24" fill="#c0392b"/>')
    ya = 40 + lh * len(rows) + 5
    for k in range(0, int(hi * 2) + 1):
        v = k / 2
        out.append(f'<line x1="{x(v):.1f}" y1="{ya}" x2="{x(v):.1f}" y2="{ya + 5}" stroke="#333"/>')
        out.append(f'<text x="{x(v):.1f}" y="{ya + 18}" text-anchor="middle">{v:g}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
