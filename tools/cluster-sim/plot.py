#!/usr/bin/env python3
"""Plots and a summary table from cluster-sim's results.json.

Usage: tools/cluster-sim/plot.py [DIR]   (default bench-results/cluster-sim)

Writes DIR/director-change.png, realserver-change.png, load-balance.png, resilience.png,
list-order.png and summary.md. Needs matplotlib (Debian: python3-matplotlib).
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent
REAL_COLOURS = {10: "#1f77b4", 100: "#d62728", 1000: "#2ca02c"}
SCHED_COLOURS = {"mh": "#1f77b4", "mh-port": "#17becf", "rr": "#d62728", "wlc": "#ff7f0e"}
ECMP_STYLE = {"hash-threshold": "-", "modulo-n": "--"}
ECMP_NAME = {"hash-threshold": "hash-threshold (Linux)", "modulo-n": "modulo-N"}
PCT = FuncFormatter(lambda v, _: f"{v * 100:g} %")


def colour(r):
    return REAL_COLOURS.get(r, "#555555")


def subtitle(d):
    commit = d.get("commit") or "unknown commit"
    return (
        f"cluster-sim on fastlb's sched code ({commit}), {d['flows']:,} flows from "
        f"{d['clients']:,} client addresses, seed {d['seed']}"
    )


def table_axis(ax, sizes):
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes], rotation=45, fontsize=8)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("mh table size M")


def plot_directors(d, out):
    rows = d["director_changes"]
    reals = d["director_settings"]["reals"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, event in zip(axes, ["remove", "add"]):
        for ecmp in ["hash-threshold", "modulo-n"]:
            sel = [r for r in rows if r["event"] == event and r["ecmp"] == ecmp]
            xs = sorted({r["directors"] for r in sel})

            def series(sched, key):
                by = {r["directors"]: r[key] for r in sel if r["scheduler"] == sched}
                return [by[x] for x in xs]

            moved = series("rr", "moved")
            ax.plot(xs, [m["mean"] for m in moved], ECMP_STYLE[ecmp], color="#999999",
                    lw=1, label=f"flows the router moves, {ECMP_NAME[ecmp]}")
            for sched in ["rr", "wlc", "mh", "mh-port"]:
                b = series(sched, "broken")
                style = dict(color=SCHED_COLOURS[sched])
                if sched == "wlc":
                    style.update(ls="none", marker="x", ms=7)
                elif sched == "mh-port":
                    style.update(ls="none", marker="s", ms=5, mfc="none")
                else:
                    style.update(ls=ECMP_STYLE[ecmp], marker="o", ms=4, lw=2)
                label = f"{sched}, {ECMP_NAME[ecmp]}"
                ax.plot(xs, [v["mean"] for v in b], label=label, **style)
                if sched == "rr" and ecmp == "hash-threshold":
                    ax.fill_between(xs, [v["min"] for v in b], [v["max"] for v in b],
                                    color=SCHED_COLOURS["rr"], alpha=0.12, lw=0)
        # The least a router must move: the leaving director's flows, or the new one's.
        low = [1 / x if event == "remove" else 1 / (x + 1) for x in xs]
        ax.plot(xs, low, ":", color="black", lw=1.2,
                label="minimum: the leaving (joining) director's share")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("directors before the change")
        ax.set_ylim(-0.02, 1.02)
        ax.yaxis.set_major_formatter(PCT)
        ax.grid(True, color="#e0e0e0")
        verb = "leaves" if event == "remove" else "joins"
        ax.set_title(f"one director {verb}")
    axes[0].set_ylabel("flows whose real server changes")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(
        f"Flows broken by a director change ({reals} real servers, mean over the position "
        f"of the director; band: rr's range under hash-threshold)\n{subtitle(d)}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(out / "director-change.png", dpi=110)
    plt.close(fig)


def plot_realservers(d, out):
    rows = d["real_server_changes"]
    sizes = d["real_server_settings"]["table_sizes"]
    reals = d["real_server_settings"]["reals"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 9), sharex=True)
    for col, event in enumerate(["remove", "add"]):
        top, bottom = axes[0][col], axes[1][col]
        for r in reals:
            c = colour(r)
            for sched, style in [("mh", "-o"), ("mh-port", ":s")]:
                sel = sorted(
                    (x for x in rows
                     if x["event"] == event and x["reals"] == r and x["scheduler"] == sched),
                    key=lambda x: x["table_size"],
                )
                # A table smaller than the list leaves servers without a slot: skip those
                # sizes (nothing to compare; load-balance.png shows them).
                sel = [x for x in sel if x["table_size"] >= r]
                ms = [x["table_size"] for x in sel]
                top.plot(ms, [x["changed"]["mean"] for x in sel], style, color=c, ms=4,
                         label=f"{sched}, {r} real servers" if sched == "mh" else None,
                         alpha=1 if sched == "mh" else 0.6)
                bottom.plot(ms, [x["changed"]["mean"] / x["ideal"] for x in sel], style,
                            color=c, ms=4, alpha=1 if sched == "mh" else 0.6)
            ideal = 1 / r if event == "remove" else 1 / (r + 1)
            top.axhline(ideal, color=c, ls="--", lw=1)
            rr = [x for x in rows
                  if x["event"] == event and x["reals"] == r and x["scheduler"] == "rr"]
            if rr:
                top.axhline(rr[0]["changed"]["mean"], color=c, ls="-.", lw=1.5,
                            label=f"rr, {r} real servers")
        top.set_yscale("log")
        top.yaxis.set_major_formatter(PCT)
        top.yaxis.set_minor_formatter(NullFormatter())
        top.grid(True, which="major", color="#e0e0e0")
        verb = "leaves" if event == "remove" else "joins"
        top.set_title(f"one real server {verb}: flows whose pick changes")
        bottom.set_yscale("log")
        bottom.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        bottom.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        bottom.yaxis.set_minor_formatter(NullFormatter())
        bottom.axhline(1, color="black", lw=1)
        bottom.grid(True, which="major", color="#e0e0e0")
        bottom.set_title("mh: changed flows over the minimum (the removed server's share, "
                         "or 1/(R+1))", fontsize=9)
        table_axis(bottom, sizes)
    axes[0][0].set_ylabel("flows (log); dashed: the minimum")
    axes[1][0].set_ylabel("times the minimum")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(
        "Real server leaves or joins: flows that need a new pick and get another server\n"
        f"(mh solid, mh-port dotted; sizes below R omitted) {subtitle(d)}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(out / "realserver-change.png", dpi=110)
    plt.close(fig)


def plot_balance(d, out):
    rows = d["balance"]
    sizes = d["real_server_settings"]["table_sizes"]
    reals = d["real_server_settings"]["reals"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    left, right = axes
    for r in reals:
        c = colour(r)
        sel = sorted((x for x in rows if x["reals"] == r), key=lambda x: x["table_size"])
        ms = [x["table_size"] for x in sel]
        left.plot(ms, [x["slots_max_over_mean"] for x in sel], "-o", color=c, ms=4,
                  label=f"{r} real servers")
        if 100 * r <= max(sizes):
            left.axvline(100 * r, color=c, ls=":", lw=1)
        right.plot(ms, [x["flows_port_max_over_mean"] for x in sel], "-o", color=c, ms=4,
                   label=f"{r}, mh-port")
        right.plot(ms, [x["flows_max_over_mean"] for x in sel], "--s", color=c, ms=4,
                   mfc="none", label=f"{r}, without mh-port")
        # The random baselines do not depend on M: draw their mean over the runs.
        rp = sum(x["random_port_max_over_mean"] for x in sel) / len(sel)
        rc = sum(x["random_max_over_mean"] for x in sel) / len(sel)
        right.axhline(rp, color=c, lw=0.8, alpha=0.6)
        right.axhline(rc, color=c, lw=0.8, ls="--", alpha=0.6)
    for ax in axes:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 1.1, 1.2, 1.5, 2.0, 3.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="major", color="#e0e0e0")
        table_axis(ax, sizes)
    left.set_ylabel("max / mean load per real server")
    left.set_title("table slots per server (exact)\ndotted: M = 100 x R, the paper's rule",
                   fontsize=9)
    right.set_title(
        f"{d['flows']:,} flows per server\nthin lines: each flow (solid) or client "
        "(dashed) sent to a random server",
        fontsize=9,
    )
    left.legend(fontsize=8)
    right.legend(fontsize=7, ncol=3)
    fig.suptitle(f"mh load balance by table size\n{subtitle(d)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "load-balance.png", dpi=110)
    plt.close(fig)


def plot_resilience(d, out):
    rows = d["resilience"]
    s = d["resilience_settings"]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    cmap = plt.get_cmap("viridis")
    sizes = s["table_sizes"]
    for i, m in enumerate(sizes):
        sel = sorted((x for x in rows if x["table_size"] == m), key=lambda x: x["removed"])
        ax.plot([x["removed_share"] for x in sel], [x["slots_changed"] for x in sel], "-o",
                ms=4, color=cmap(i / max(1, len(sizes) - 1) * 0.9), label=f"M = {m}")
    top = max(x["removed_share"] for x in rows)
    ax.plot([0, top], [0, top], "k--", lw=1, label="minimum (the removed servers' slots)")
    ax.xaxis.set_major_formatter(PCT)
    ax.yaxis.set_major_formatter(PCT)
    ax.set_xlim(0, top * 1.02)
    ax.set_ylim(0, None)
    ax.grid(True, color="#e0e0e0")
    ax.set_xlabel(f"real servers removed at once (of {s['reals']})")
    ax.set_ylabel("table slots that change server")
    ax.legend(fontsize=8)
    ax.set_title(f"mh resilience to real-server failures\n{subtitle(d)}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "resilience.png", dpi=110)
    plt.close(fig)


def plot_order(d, out):
    rows = d["order"]
    sizes = d["real_server_settings"]["table_sizes"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in d["real_server_settings"]["reals"]:
        sel = sorted((x for x in rows if x["reals"] == r), key=lambda x: x["table_size"])
        ax.plot([x["table_size"] for x in sel], [x["flows_differ"] for x in sel], "-o",
                color=colour(r), ms=4, label=f"{r} real servers")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PCT)
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="major", color="#e0e0e0")
    table_axis(ax, sizes)
    ax.set_ylabel("flows picked differently")
    ax.legend(fontsize=8)
    ax.set_title("mh: the same real servers in the opposite list order\n"
                 "(a flow moving between two such directors breaks this often)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "list-order.png", dpi=110)
    plt.close(fig)


def pct(v, digits=2):
    return f"{v * 100:.{digits}f} %"


def summary(d, out):
    lines = [
        "# cluster-sim summary",
        "",
        f"Generated by tools/cluster-sim/plot.py from results.json. {subtitle(d)}; "
        f"run took {d['elapsed_s']} s.",
        "",
        f"## A director leaves or joins ({d['director_settings']['reals']} real servers, "
        "mean [min, max] over its position)",
        "",
        "| directors | event | router | flows moved | broken, mh | broken, mh-port "
        "| broken, rr | broken, wlc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = d["director_changes"]
    keys = sorted({(r["directors"], r["event"], r["ecmp"]) for r in rows},
                  key=lambda k: (k[0], k[1] != "remove", k[2]))
    for n, event, ecmp in keys:
        by = {r["scheduler"]: r for r in rows
              if (r["directors"], r["event"], r["ecmp"]) == (n, event, ecmp)}
        mv = by["rr"]["moved"]
        cells = [f"{pct(mv['mean'], 1)} [{pct(mv['min'], 1)}, {pct(mv['max'], 1)}]"]
        cells += [pct(by[s]["broken"]["mean"], 1) for s in ["mh", "mh-port", "rr", "wlc"]]
        lines.append(f"| {n} | {event} | {ecmp} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## A real server leaves or joins: flows whose pick changes",
        "",
        "Minimum: the removed server's flows, or 1/(R+1) for one that joins. needless: "
        "flows moved between two servers that both stay.",
        "",
        "| M | R | event | minimum | mh changed | mh needless | mh slots changed "
        "| mh-port changed | rr changed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = d["real_server_changes"]
    rr = {(r["reals"], r["event"]): r for r in rows if r["scheduler"] == "rr"}
    for r in rows:
        if r["scheduler"] != "mh":
            continue
        port = next(x for x in rows if x["scheduler"] == "mh-port"
                    and (x["table_size"], x["reals"], x["event"])
                    == (r["table_size"], r["reals"], r["event"]))
        lines.append(
            f"| {r['table_size']} | {r['reals']} | {r['event']} | {pct(r['ideal'])} "
            f"| {pct(r['changed']['mean'])} | {pct(r['needless']['mean'])} "
            f"| {pct(r['slots_changed']['mean'])} | {pct(port['changed']['mean'])} "
            f"| {pct(rr[(r['reals'], r['event'])]['changed']['mean'], 1)} |"
        )
    lines += [
        "",
        "## Load balance (max / mean per real server)",
        "",
        "| M | R | slots | servers without a slot | flows, mh-port | flows, no port "
        "| random, per flow | random, per client |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in d["balance"]:
        lines.append(
            f"| {b['table_size']} | {b['reals']} | {b['slots_max_over_mean']:.3f} "
            f"| {b['servers_without_slot']} | {b['flows_port_max_over_mean']:.3f} "
            f"| {b['flows_max_over_mean']:.3f} | {b['random_port_max_over_mean']:.3f} "
            f"| {b['random_max_over_mean']:.3f} |"
        )
    lines += [
        "",
        "## Opposite list order: flows picked differently",
        "",
        "| M | R | slots | flows |",
        "|---|---|---|---|",
    ]
    for o in d["order"]:
        lines.append(f"| {o['table_size']} | {o['reals']} | {pct(o['slots_differ'])} "
                     f"| {pct(o['flows_differ'])} |")
    lines += [
        "",
        f"## Resilience ({d['resilience_settings']['reals']} real servers): "
        "slots that change server",
        "",
    ]
    s = d["resilience_settings"]
    removed = sorted({r["removed"] for r in d["resilience"]})
    lines.append("| removed | " + " | ".join(f"M = {m}" for m in s["table_sizes"]) + " |")
    lines.append("|---" * (len(s["table_sizes"]) + 1) + "|")
    for k in removed:
        cells = []
        for m in s["table_sizes"]:
            x = next(r for r in d["resilience"] if r["table_size"] == m and r["removed"] == k)
            cells.append(pct(x["slots_changed"], 1))
        share = k / s["reals"]
        lines.append(f"| {k} ({pct(share, 0)}) | " + " | ".join(cells) + " |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench-results" / "cluster-sim"
    d = json.loads((out / "results.json").read_text())
    plot_directors(d, out)
    plot_realservers(d, out)
    plot_balance(d, out)
    plot_resilience(d, out)
    plot_order(d, out)
    summary(d, out)
    print(f"plot.py: wrote {out}/*.png and summary.md")


if __name__ == "__main__":
    main()
