#!/usr/bin/python3
"""Plot of a director pair's failovers (tests/e2e/ha_failover.sh with FLB_HA_RESULTS=DIR):
per mode (DR, NAT) and scenario, each long-lived connection's longest silence across the
failover and the iperf3 stream's stall (bars; a broken one in red, drawn to the top), and
the time until new connections flowed through the new master (black tick).

matplotlib (Debian's python3-matplotlib). Usage: tools/lab/plot-failover.py [DIR] [OUT]
(default bench-results/ha and DIR/failover.svg; the extension picks the format).
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent
ORDER = ["kill", "failback", "stop"]
TITLES = {
    "kill": "master dies\n(link down, kill -9)",
    "failback": "master comes back\n(preempts)",
    "stop": "master stops\n(SIGTERM)",
}


def load(src: Path, mode: str) -> list:
    runs = []
    for name in ORDER:
        p = src / f"{mode}-{name}.json"
        if p.exists():
            runs.append(json.loads(p.read_text()))
    return runs


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench-results" / "ha"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else src / "failover.svg"
    modes = [(m, load(src, m)) for m in ["dr", "nat"]]
    modes = [(m, r) for m, r in modes if r]
    if not modes:
        sys.exit(f"no dr-*.json or nat-*.json in {src}")
    top = 0.0
    for _, runs in modes:
        for r in runs:
            top = max(top, r["new_connection_gap_ms"])
            top = max([top] + [c["gap_ms"] for c in r["connections"]])
            if "iperf3" in r:
                top = max(top, r["iperf3"]["gap_ms"])
    top = top * 1.15 / 1000 or 1
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.5), squeeze=False)
    for ax, (mode, runs) in zip(axes[0], modes):
        for k, r in enumerate(runs):
            gaps = [(c["gap_ms"], c["broken"]) for c in r["connections"]]
            if "iperf3" in r:
                gaps.append((r["iperf3"]["gap_ms"], r["iperf3"]["broken"]))
            n = len(gaps)
            w = 0.8 / n
            for j, (g, broken) in enumerate(gaps):
                iperf = "iperf3" in r and j == n - 1
                ax.bar(
                    k - 0.4 + w * (j + 0.5),
                    top if broken else g / 1000,
                    width=w * 0.9,
                    color="#d62728" if broken else ("#ff7f0e" if iperf else "#2ca02c"),
                )
            ax.hlines(
                r["new_connection_gap_ms"] / 1000,
                k - 0.45,
                k + 0.45,
                colors="black",
                linewidth=2,
            )
            broken = r.get("broken_total", r["broken"])
            ax.text(k, top * 0.97, f"{broken} broken", ha="center", va="top", fontsize=9)
        ax.set_xticks(range(len(runs)))
        ax.set_xticklabels([TITLES.get(r["scenario"], r["scenario"]) for r in runs], fontsize=9)
        ax.set_ylim(0, top)
        ax.set_ylabel("seconds")
        conns = runs[0]["conns"]
        ax.set_title(
            f"{mode.upper()}: {conns} TCP connections (a line every "
            f"{int(runs[0]['interval_s'] * 1000)} ms) + iperf3",
            fontsize=10,
        )
        ax.grid(axis="y", color="#ddd")
        ax.set_axisbelow(True)
    handles = [
        plt.Rectangle((0, 0), 1, 1, color="#2ca02c"),
        plt.Rectangle((0, 0), 1, 1, color="#ff7f0e"),
        plt.Rectangle((0, 0), 1, 1, color="#d62728"),
        plt.Line2D([0], [0], color="black", linewidth=2),
    ]
    fig.legend(
        handles,
        [
            "a connection's longest silence",
            "iperf3's longest stall",
            "broken",
            "new connections flow again",
        ],
        loc="lower center",
        ncol=4,
        fontsize=9,
    )
    fig.suptitle("Director pair failover: fastlb + keepalived VRRP, connection sync on")
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
