#!/usr/bin/python3
"""Plot of a SYN flood run (tests/e2e/syn_flood.sh with a RESULTS_JSON argument; the bench
wrapper is tools/lab/synflood-bench.sh): the connection table's entries and evictions over
time against its capacity, the iperf3 stream's throughput per 100 ms, and each long-lived
connection's longest stall (a broken one in red, drawn to the top); the flood's window
shaded.

matplotlib (Debian's python3-matplotlib). Usage: tools/lab/plot-synflood.py [JSON] [OUT]
(default bench-results/synflood/results.json and results.svg beside it).
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent


def main():
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench-results/synflood/results.json"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else src.with_suffix(".svg")
    r = json.loads(src.read_text())
    w0, w1 = r["flood_window_s"]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(9, 9))

    t = [s[0] for s in r["table_series"]]
    ax1.plot(t, [s[1] for s in r["table_series"]], label="entries")
    ax1.plot(t, [s[2] for s in r["table_series"]], label="evictions (cumulative)")
    ax1.axhline(r["table_capacity"], color="grey", linestyle=":", label="capacity")
    ax1.set_ylabel("connection table")
    ax1.set_title(
        f"spoofed SYN flood, {r['flood_pps']:,} SYN/s for {r['flood_seconds']} s "
        f"(shaded); {r['new_succeeded']}/{r['new_connections']} new connections succeeded"
    )
    ax1.legend(loc="upper left", fontsize="small")

    it = r["iperf3_series"]
    ax2.plot([p[0] for p in it], [p[1] for p in it], color="tab:green")
    ax2.set_ylabel("iperf3, Mbit/s per 100 ms")
    ax2.set_xlabel("seconds from the flood's start")
    for ax in (ax1, ax2):
        ax.axvspan(w0, w1, color="tab:red", alpha=0.1)
        ax.set_xlim(min(t + [p[0] for p in it] + [w0]), max(t + [p[0] for p in it] + [w1]))

    stalls = r["long_connection_stalls"]
    top = max([c["gap_ms"] for c in stalls if not c["broken"]] + [100]) * 1.2
    heights = [top if c["broken"] else c["gap_ms"] for c in stalls]
    colors = ["tab:red" if c["broken"] else "tab:blue" for c in stalls]
    ax3.bar(range(1, len(stalls) + 1), heights, color=colors)
    ax3.axhline(100, color="grey", linestyle=":")
    ax3.set_ylabel("longest stall, ms")
    ax3.set_xlabel(f"long-lived connection ({r['long_broken']} broken; dotted: the 100 ms send interval)")

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
