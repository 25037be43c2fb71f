#!/usr/bin/python3
"""Plot of a sync-rate run (tools/lab/sync-rate-bench.sh): over time, the connections the
master holds, the entries it has sent, and what the backup received and installed; below,
the same as rates per sampling interval. The generator's window shaded.

matplotlib (Debian's python3-matplotlib). Usage: tools/lab/plot-sync-rate.py [JSON] [OUT]
(default bench-results/ha/sync-rate-tcp3.json; the plot beside it, .svg).
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent


def rate(series, key):
    """(time, per-second rate) between consecutive samples of a cumulative counter."""
    out = []
    for a, b in zip(series, series[1:]):
        dt = b["t_s"] - a["t_s"]
        if dt > 0:
            out.append((b["t_s"], (b.get(key, 0) - a.get(key, 0)) / dt))
    return out


def main():
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench-results/ha/sync-rate-tcp3.json"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else src.with_suffix(".svg")
    r = json.loads(src.read_text())
    m, b = r["master_series"], r["backup_series"]
    w0, w1 = r["generator_window_s"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 8), sharex=True)

    ax1.plot([s["t_s"] for s in m], [s["entries"] for s in m], label="master: table entries")
    ax1.plot([s["t_s"] for s in m], [s.get("sent_conns", 0) for s in m],
             label="master: entries sent")
    ax1.plot([s["t_s"] for s in b], [s.get("created", 0) + s.get("updated", 0) for s in b],
             label="backup: installed", linestyle="--")
    ax1.plot([s["t_s"] for s in b], [s["entries"] for s in b], label="backup: table entries",
             linestyle=":")
    ax1.set_ylabel("connections")
    ax1.set_title(
        f"sync pair: {r['conns_per_s']:,} new {r['protocol'].upper()} connections/s offered "
        f"({r['packets_per_connection']} packets each) for {r['seconds']} s (shaded)\n"
        f"master created {r['master_table_entries']:,}, sent {r['master_sent_conns']:,}; "
        f"{r['connections_missing_at_backup']:,} missing at the backup",
        fontsize="medium",
    )
    ax1.legend(loc="upper left", fontsize="small")

    for series, key, label in ((m, "sent_conns", "master: entries sent/s"),
                               (b, "created", "backup: installed/s")):
        pts = rate(series, key)
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], label=label)
    ax2.axhline(r["target_conns_per_s"], color="grey", linestyle=":", label="target rate")
    ax2.set_ylabel("per second")
    ax2.set_xlabel("seconds from the start of sampling")
    ax2.legend(loc="upper right", fontsize="small")
    for ax in (ax1, ax2):
        ax.axvspan(w0, w1, color="tab:red", alpha=0.1)

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
