"""Draws the Grafana dashboard's panels from Prometheus query_range results (written by
`scripts/live-metrics --render`) into one PNG laid out on the dashboard's 24-column grid.

Usage: python plot-dashboard.py SERIES.json OUT.png   (needs matplotlib)
"""
import datetime as dt
import json
import math
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.lines  # noqa: E402,F401
import matplotlib.patches  # noqa: E402,F401
import matplotlib.ticker  # noqa: E402,F401
import matplotlib.pyplot as plt  # noqa: E402

COL_PX, ROW_PX, DPI = 80, 30, 100
BG, PANEL, FG, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"


def legend(fmt, metric, i):
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(metric.items()) if k != "__name__") or f"series {i}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)


def fmt_value(v, unit):
    if unit == "percentunit":
        return f"{v * 100:.2f}%"
    if unit == "s":
        return f"{v * 1000:.0f} ms" if abs(v) < 1 else f"{v:.1f} s"
    return f"{v:.3g}"


def main(src, out):
    data = json.load(open(src))
    panels = data["panels"]
    rows = max(p["grid"]["y"] + p["grid"]["h"] for p in panels) + 1  # one row for the title
    fig = plt.figure(figsize=(24 * COL_PX / DPI, rows * ROW_PX / DPI), dpi=DPI, facecolor=BG)
    start = dt.datetime.fromtimestamp(data["start"], dt.timezone.utc)
    end = dt.datetime.fromtimestamp(data["end"], dt.timezone.utc)
    fig.suptitle(f"meshguard — rendered from live Prometheus data, {start:%Y-%m-%d %H:%M}–{end:%H:%M} UTC "
                 "(scripts/live-metrics --render)", color=FG, fontsize=12, x=0.005, ha="left", y=1 - 0.35 / rows, va="center")
    pad = 0.004
    for p in panels:
        g = p["grid"]
        left, width = g["x"] / 24 + pad, g["w"] / 24 - 2 * pad
        bottom = 1 - (g["y"] + 1 + g["h"]) / rows + pad * 2
        height = g["h"] / rows - pad * 4
        if p["type"] == "row":
            fig.text(left, 1 - (g["y"] + 1.7) / rows, p["title"], color=FG, fontsize=12, weight="bold")
            continue
        # the panel's box, then the plot inside it with room for tick labels
        fig.patches.append(matplotlib.patches.Rectangle((left, bottom), width, height, transform=fig.transFigure, facecolor=PANEL, edgecolor=GRID, linewidth=0.6, zorder=-10))
        inner_l, inner_b = 0.032, 0.022
        ax = fig.add_axes([left + inner_l, bottom + inner_b, width - inner_l - 0.004, height * 0.84 - inner_b], facecolor=PANEL)
        fig.text(left + 0.004, bottom + height - 0.004, p["title"], color=FG, fontsize=9, va="top")
        for s in ax.spines.values():
            s.set_color(GRID)
        ax.tick_params(colors=FG, labelsize=7)
        unit = p.get("unit", "")
        if p["type"] == "stat":
            ax.set_xticks([]), ax.set_yticks([])
            lines = []
            for t in p["targets"]:
                for i, r in enumerate(t["result"]):
                    vals = [float(v) for _, v in r["values"] if not math.isnan(float(v))]
                    if vals:
                        lines.append((legend(t["legend"], r["metric"], i), vals[-1]))
            for k, (name, v) in enumerate(lines[:6]):
                y = 1 - (k + 1) / (len(lines[:6]) + 1)
                ax.text(0.05, y, name, color=FG, fontsize=8, transform=ax.transAxes, va="center")
                ax.text(0.95, y, fmt_value(v, unit), color="#73bf69" if v >= 0.99 or unit != "percentunit" else "#f2495c",
                        fontsize=16, transform=ax.transAxes, va="center", ha="right", weight="bold")
            if not lines:
                ax.text(0.5, 0.5, "no data", color=FG, transform=ax.transAxes, ha="center")
            continue
        n = 0
        for t in p["targets"]:
            for i, r in enumerate(t["result"]):
                xs = [dt.datetime.fromtimestamp(float(ts), dt.timezone.utc) for ts, _ in r["values"]]
                ys = [float(v) for _, v in r["values"]]
                ax.plot(xs, ys, linewidth=1.2, label=legend(t["legend"], r["metric"], i)[:48])
                n += 1
        if n == 0:
            ax.text(0.5, 0.5, "no data", color=FG, transform=ax.transAxes, ha="center")
        ax.set_xlim(start, end)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        ax.grid(color=GRID, linewidth=0.5)
        if unit == "percentunit":
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v * 100:.1f}%"))
        elif unit == "s":
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}s"))
        if n:
            handles, labels = ax.get_legend_handles_labels()
            if n > 12:  # the busiest series first; Grafana would scroll the legend
                order = sorted(range(n), key=lambda k: -max((v for v in handles[k].get_ydata() if not math.isnan(v)), default=0))[:11]
                handles = [handles[k] for k in order] + [matplotlib.lines.Line2D([], [], linewidth=0)]
                labels = [labels[k] for k in order] + [f"… {n - 11} more series"]
            ax.legend(handles, labels, fontsize=6, loc="upper left", facecolor=PANEL, edgecolor=GRID, labelcolor=FG, ncol=2 if len(labels) > 6 else 1, framealpha=0.85)
    fig.savefig(out, facecolor=BG)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
