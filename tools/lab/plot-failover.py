#!/usr/bin/env python3
"""Plot of a director pair's failovers (tests/e2e/ha_failover.sh with FLB_HA_RESULTS=DIR):
per mode (DR, NAT) and scenario, the time until new connections flowed through the new master (bar) and each
long-lived connection's longest silence (dots; a broken connection is drawn at the right
edge, in red), as a standalone SVG.

Standard library only. Usage: tools/lab/plot-failover.py [DIR] [OUT.svg]
(default bench-results/ha and DIR/failover.svg).
"""

import json
import sys
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent.parent
ORDER = ["kill", "failback", "stop"]
TITLES = {
    "kill": "master dies (link down, kill -9)",
    "failback": "master comes back (preempts)",
    "stop": "master stops gracefully (SIGTERM)",
}


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench-results" / "ha"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else src / "failover.svg"
    runs = []
    for mode in ["dr", "nat"]:
        for name in ORDER:
            p = src / f"{mode}-{name}.json"
            if p.exists():
                runs.append(json.loads(p.read_text()))
    if not runs:
        sys.exit(f"no dr-*.json or nat-*.json in {src}")
    top = max(
        [r["new_connection_gap_ms"] for r in runs]
        + [c["gap_ms"] for r in runs for c in r["connections"] if not c["broken"]]
    )
    axis = max(1000, int(top * 1.2 / 1000 + 1) * 1000)
    left, width, row, head = 290, 520, 70, 60
    height = head + row * len(runs) + 50
    x = lambda ms: left + width * min(ms, axis) / axis
    s = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 40}" '
        f'height="{height}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">Director pair failover '
        f'(fastlb + keepalived, {runs[0]["conns"]} TCP connections, a line every '
        f'{int(runs[0]["interval_s"] * 1000)} ms)</text>',
        '<text x="10" y="38" fill="#555">bar: until new connections flow through the new '
        'master; dots: each connection\'s longest silence (red at the edge: broken)</text>',
    ]
    for i in range(0, axis + 1, max(1000, axis // 10 // 1000 * 1000)):
        s.append(f'<line x1="{x(i)}" y1="{head}" x2="{x(i)}" y2="{height - 40}" stroke="#ddd"/>')
        s.append(f'<text x="{x(i)}" y="{height - 25}" text-anchor="middle">{i // 1000} s</text>')
    for k, r in enumerate(runs):
        y = head + k * row
        name = r["scenario"]
        title = f'{r.get("mode", "dr").upper()}: {TITLES.get(name, name)}'
        s.append(f'<text x="10" y="{y + 22}">{escape(title)}</text>')
        s.append(
            f'<text x="10" y="{y + 40}" fill="#555">{r["broken"]} of {r["conns"]} broken; '
            f'new after {r["new_connection_gap_ms"]} ms</text>'
        )
        gap = r["new_connection_gap_ms"]
        s.append(
            f'<rect x="{left}" y="{y + 10}" width="{max(1, x(gap) - left)}" height="18" '
            f'fill="#1f77b4"/>'
        )
        for j, c in enumerate(r["connections"]):
            cy = y + 36 + (j % 10) * 2
            if c["broken"]:
                s.append(f'<circle cx="{left + width + 8}" cy="{cy}" r="2" fill="#d62728"/>')
            else:
                s.append(f'<circle cx="{x(c["gap_ms"])}" cy="{cy}" r="2" fill="#2ca02c"/>')
    s.append("</svg>")
    out.write_text("\n".join(s) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
