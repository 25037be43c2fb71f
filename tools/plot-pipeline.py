#!/usr/bin/env python3
"""Bar chart of bench-results/pipeline.json (Mpps per case) as a standalone SVG.

Standard library only. Usage: tools/plot-pipeline.py [IN.json] [OUT.svg]
Bars are coloured by group, the baselines are drawn too (the mac-swap bar is clipped at the
axis maximum and labelled with its value), and issue targets appear as dashed ticks.
"""

import json
import sys
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
COLOURS = {"baseline": "#9e9e9e", "established": "#1f77b4", "new_connection": "#d62728"}


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench-results" / "pipeline.json"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else src.with_suffix(".svg")
    data = json.loads(src.read_text())
    cases = data["cases"]
    # The bare mac-swap is an order of magnitude above everything else: scale the axis to
    # the pipeline cases and the targets, and clip it.
    scale_max = max(
        [c["mpps"] for c in cases if not c["name"].startswith("baseline_mac_swap")]
        + [c["target_mpps"] or 0 for c in cases]
    )
    axis_max = max(5.0, float(int(scale_max * 1.15) + 1))

    left, right, top, row, bar = 190, 150, 60, 24, 16
    plot_w = 520
    height = top + row * len(cases) + 60
    width = left + plot_w + right
    x = lambda v: left + plot_w * min(v, axis_max) / axis_max  # noqa: E731

    m = data["machine"]
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="15" font-weight="bold">fastlb pipeline, one core, '
        f"in process (Mpps, median of {data['method']['runs']})</text>",
        f'<text x="{left}" y="40" fill="#555">{escape(m["cpu"])}, {m["cpus"]} CPUs, '
        f'{escape(m["rustc"])}, {escape(m["date"])}</text>',
    ]
    ticks = 5
    for i in range(ticks + 1):
        v = axis_max * i / ticks
        svg.append(
            f'<line x1="{x(v):.1f}" y1="{top - 4}" x2="{x(v):.1f}" '
            f'y2="{top + row * len(cases)}" stroke="#e0e0e0"/>'
        )
        svg.append(
            f'<text x="{x(v):.1f}" y="{top + row * len(cases) + 16}" text-anchor="middle">'
            f"{v:.0f}</text>"
        )
    for i, c in enumerate(cases):
        y = top + i * row
        colour = COLOURS.get(c["group"], "#555")
        svg.append(
            f'<text x="{left - 8}" y="{y + bar - 3}" text-anchor="end">{escape(c["name"])}</text>'
        )
        svg.append(
            f'<rect x="{left}" y="{y}" width="{x(c["mpps"]) - left:.1f}" height="{bar}" '
            f'fill="{colour}"><title>{escape(c["what"])}</title></rect>'
        )
        label = f'{c["mpps"]:.2f} Mpps, {c["ns_per_packet"]:.0f} ns'
        if c["mpps"] > axis_max:
            label += " (clipped)"
        svg.append(f'<text x="{x(c["mpps"]) + 4:.1f}" y="{y + bar - 3}">{label}</text>')
        if c.get("target_mpps"):
            tx = x(c["target_mpps"])
            svg.append(
                f'<line x1="{tx:.1f}" y1="{y - 3}" x2="{tx:.1f}" y2="{y + bar + 3}" '
                f'stroke="black" stroke-dasharray="3,2" stroke-width="2"/>'
            )
    ly = top + row * len(cases) + 36
    lx = left
    for name, colour in COLOURS.items():
        svg.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{colour}"/>')
        svg.append(f'<text x="{lx + 16}" y="{ly}">{name.replace("_", " ")}</text>')
        lx += 140
    svg.append(
        f'<line x1="{lx}" y1="{ly - 10}" x2="{lx}" y2="{ly + 2}" stroke="black" '
        f'stroke-dasharray="3,2" stroke-width="2"/>'
    )
    svg.append(f'<text x="{lx + 6}" y="{ly}">issue target</text>')
    svg.append("</svg>")
    out.write_text("\n".join(svg) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
