"""Plots for the experiments: PNGs readable at a glance (titled, axes labelled, one line or bar group per model).

Figures are built with matplotlib's object API on the Agg canvas, never pyplot, so the app can draw from
worker threads and nothing needs a display.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass
class Line:
    label: str
    xs: list[float]
    ys: list[float]
    style: int = 0  # index into LINE_STYLES: one style per variant (e.g. mean / max) of the same model


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    lines: list[Line] = field(default_factory=list)
    xscale: str = "linear"
    xticks: list[float] | None = None
    references: list[tuple[str, float]] = field(default_factory=list)  # horizontal lines, e.g. natural accuracy


def accuracy_lines(name: str, xs: list, accuracies: list) -> list[Line]:
    """A model's top-1 (solid) and top-5 (dashed) lines; `accuracies` have .top1 and .top5."""
    return [Line(f"{name} (top-1)", xs, [a.top1 for a in accuracies], 0),
            Line(f"{name} (top-5)", xs, [a.top5 for a in accuracies], 1)]


def line_figure(title: str, panels: list[Panel]) -> Figure:
    """One row of panels sharing the model colours: one colour per model, one line style per variant."""
    figure = Figure(figsize=(6.4 * len(panels), 4.6), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontsize=12)
    colours = {}
    for axes, panel in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        for line in panel.lines:
            model = line.label.split(" (")[0]
            colour = colours.setdefault(model, f"C{len(colours) % 10}")
            axes.plot(line.xs, line.ys, LINE_STYLES[line.style % len(LINE_STYLES)], color=colour,
                      marker=MARKERS[line.style % len(MARKERS)], markersize=4, label=line.label)
        for name, value in panel.references:
            axes.axhline(value, color="grey", linewidth=0.8, linestyle=":")
            axes.annotate(name, (0.01, value), xycoords=("axes fraction", "data"), fontsize=8, color="grey",
                          va="bottom")
        axes.set_xscale(panel.xscale)
        if panel.xscale == "linear" and all(float(x).is_integer() for line in panel.lines for x in line.xs):
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # block indices
        if panel.xticks is not None:
            axes.set_xticks(panel.xticks)
            axes.set_xticklabels([f"{t:g}" for t in panel.xticks])
        axes.set_title(panel.title, fontsize=10)
        axes.set_xlabel(panel.xlabel)
        axes.set_ylabel(panel.ylabel)
        axes.set_ylim(-2, 102)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="best")
    return figure


def bar_figure(title: str, groups: list[str], series: dict[str, list[float]], ylabel: str) -> Figure:
    """Grouped bars: one group per model, one bar per series (e.g. foreground top-5), values written on top."""
    figure = Figure(figsize=(max(6.4, 1.6 + 1.1 * len(groups) * max(1, len(series)) / 2), 4.6), dpi=110,
                    layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    width = 0.8 / max(1, len(series))
    for offset, (name, values) in enumerate(series.items()):
        xs = [g + (offset - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = axes.bar(xs, values, width, label=name, color=f"C{offset}")
        axes.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=7, padding=1)
    axes.set_xticks(range(len(groups)))
    axes.set_xticklabels([g if len(g) <= 28 else "…" + g[-27:] for g in groups], rotation=15, ha="right", fontsize=8)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=11)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    return figure


def names_figure(title: str, panels: list[tuple[str, list[str], list[float]]], columns: int = 4) -> Figure:
    """One small horizontal bar chart per feature: its best names, best at the top, with their scores."""
    panels = panels[:16] or [("no features", [], [])]
    cols = min(columns, len(panels))
    rows = -(-len(panels) // cols)
    figure = Figure(figsize=(3.6 * cols, 0.6 + 2.3 * rows), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontsize=11)
    grid = figure.subplots(rows, cols, squeeze=False)
    for axes, (name, words, scores) in zip(grid.flat, panels):
        positions = list(range(len(words)))[::-1]
        axes.barh(positions, scores, color="C0")
        axes.set_yticks(positions)
        axes.set_yticklabels([w if len(w) <= 22 else w[:21] + "…" for w in words], fontsize=8)
        axes.set_title(name, fontsize=9)
        axes.set_xlabel("score (cosine, top images - all)", fontsize=7)
        axes.tick_params(axis="x", labelsize=7)
    for axes in list(grid.flat)[len(panels):]:
        axes.set_visible(False)
    return figure
