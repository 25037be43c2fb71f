#!/usr/bin/python3
"""Comparison of SYN flood runs at one generator rate (tools/lab/synflood-bench.sh
--compare): for each defence (no defence, drop_packet, secure_tcp, drop_entry) the
established connections' longest and median stall, the share of new legitimate connections
that succeeded, the table's entries after the flood, its evictions, the new connections
drop_packet refused and the entries drop_entry ended. Writes compare.json (the figures) and
compare.svg in the directory given.

matplotlib (Debian's python3-matplotlib). Usage: tools/lab/plot-synflood-compare.py DIR
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RUNS = ["none", "drop_packet", "secure_tcp", "drop_entry"]
KEYS = [
    "generator_rate", "flood_pps", "flood_syns_sent", "table_capacity", "table_entries_after",
    "evictions", "inserts_refused", "refused_by_drop_packet", "ended_by_drop_entry",
    "long_broken", "long_stall_ms_median", "long_stall_ms_max", "iperf3_mbits",
    "iperf3_stall_s", "new_connections", "new_succeeded", "new_success_share",
]


def main():
    d = Path(sys.argv[1])
    rows = {}
    for run in RUNS:
        f = d / run / "results.json"
        if f.exists():
            r = json.loads(f.read_text())
            rows[run] = {k: r.get(k) for k in KEYS}
    (d / "compare.json").write_text(json.dumps(rows, indent=1) + "\n")
    names = list(rows)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [
        ("Established connections: stall (s)", [
            ("median", [(rows[n]["long_stall_ms_median"] or 0) / 1000 for n in names]),
            ("max", [(rows[n]["long_stall_ms_max"] or 0) / 1000 for n in names]),
        ]),
        ("New legitimate connections that succeeded (%)", [
            ("share", [100 * (rows[n]["new_success_share"] or 0) for n in names]),
        ]),
        ("Connection table after the flood (entries)", [
            ("entries", [rows[n]["table_entries_after"] or 0 for n in names]),
        ]),
        ("Per flood (thousands)", [
            ("evictions", [(rows[n]["evictions"] or 0) / 1000 for n in names]),
            ("refused by drop_packet", [(rows[n]["refused_by_drop_packet"] or 0) / 1000 for n in names]),
            ("ended by drop_entry", [(rows[n]["ended_by_drop_entry"] or 0) / 1000 for n in names]),
        ]),
    ]
    for ax, (title, series) in zip(axes.flat, panels):
        width = 0.8 / len(series)
        for i, (label, vals) in enumerate(series):
            xs = [j + i * width for j in range(len(names))]
            ax.bar(xs, vals, width, label=label)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
        ax.set_xticklabels(names)
        ax.set_title(title, fontsize=10)
        if len(series) > 1:
            ax.legend(fontsize=8)
    rate = next(iter(rows.values()))["generator_rate"] if rows else 0
    fig.suptitle(f"SYN flood at {rate:,} SYNs/s, one run per defence (tools/lab/synflood-bench.sh --compare)")
    fig.tight_layout()
    fig.savefig(d / "compare.svg")


if __name__ == "__main__":
    main()
