"""The scoreboard as pictures: `python benchmarks/run.py --plot DIR` writes, into DIR,

    ratios.png      every row's ratio to its baseline (raw httpx, the peers, limits, budgets),
                    on a log scale around a line at 1.0x, the goal marked on each row
    scale.png       the scale runs over time: requests a minute against Kolbo's limit and the
                    poll budget, and how long each completion took to be noticed
    benchmarks.png  the README's picture: one status poll against raw httpx, openai and
                    runwayml; and the largest watching run over time

matplotlib (the `bench` extra) is imported only here, so only `--plot` needs it. Figures are
drawn on matplotlib's Agg canvas (no pyplot, no display), and written without a software
stamp so that a re-drawn picture differs only where the figures do.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from _harness import Row, Series, machine
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

OURS = "#1f7a8c"  # kolbo-async, and rows within their goal
OVER = "#d1495b"  # rows over their goal; 429s
REFERENCE = "#9aa5b1"  # rows with no goal; the peers
LIMIT = "#333333"
BUDGET = "#e09f3e"
PEERS = ("openai", "runwayml")
PNG = {"Software": None}  # no version stamp in the file
DPI = 120

# The README picture's left panel: one status poll, in-process, each against raw httpx in its
# own alternating rounds (the blocking ones all in one loop). Found by the start of the row's
# scenario; a row that was not measured (peers not installed, --only) is left out.
SUMMARY = (
    ("async", "kolbo-async", "status poll, in-process, pacing on"),
    ("async", "openai 1.x", "peer: openai"),
    ("async", "runwayml", "peer: runwayml"),
    ("blocking", "kolbo-async", "blocking status poll, in-process"),
    ("blocking", "openai 1.x", "peer (sync): openai"),
    ("blocking", "runwayml", "peer (sync): runwayml"),
)


def draw(rows: Sequence[Row], series: Sequence[Series], directory: Path) -> list[Path]:
    """Write the charts for `rows` and `series` into `directory`; return the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if any(row.ratio is not None for row in rows):
        written.append(_save(ratio_chart(rows), directory / "ratios.png"))
    if series:
        written.append(_save(scale_chart(series), directory / "scale.png"))
    written.append(_save(summary_chart(rows, series), directory / "benchmarks.png"))
    return written


def _save(figure: Figure, path: Path) -> Path:
    """Write `figure` as a PNG of 128 colours: flat-coloured charts lose nothing visible to the
    palette, and the file shrinks about three times (the README's picture stays small)."""
    from PIL import Image  # matplotlib's own dependency

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata=PNG)
    buffer.seek(0)
    with Image.open(buffer) as image:
        palette = image.convert("RGB").quantize(
            colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        palette.save(path, format="PNG", optimize=True)
    return path


def caption() -> str:
    """Where the figures come from, and how busy the machine was (the 15-minute load)."""
    load = f"; load average {os.getloadavg()[2]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{machine()}{load}. Medians of alternating rounds: read the ratios, not the times."


def _caption(figure: Figure) -> None:
    figure.supxlabel(caption(), x=0.005, ha="left", fontsize=7, color="#666666")


# --- ratios ---------------------------------------------------------------------------------


def group(row: Row) -> str:
    """Which panel a row belongs to: "httpx", "peers" or "other" baselines."""
    text = f"{row.scenario} {row.baseline_name}".lower()
    if any(peer in text for peer in PEERS):
        return "peers"
    if "httpx" in row.baseline_name:
        return "httpx"
    return "other"


GROUPS = (
    ("httpx", "against raw httpx doing the same work, in the same run"),
    ("peers", "against the peers' SDKs (the same GET and parse, in-process)"),
    ("other", "against Kolbo's limits, budgets and other baselines"),
)


def labels(rows: Sequence[Row]) -> list[str]:
    """One label a row: its scenario, its baseline unless raw httpx, its note when two rows
    share a scenario."""
    seen = Counter(row.scenario for row in rows)
    out = []
    for row in rows:
        label = row.scenario
        if seen[row.scenario] > 1 and row.note:
            label += f" ({row.note.split(';')[0]})"
        if row.baseline_name != "raw httpx" and " vs " not in row.scenario:
            label += f"  vs {row.baseline_name}"
        out.append(label)
    return out


def colour(row: Row, ratio: float) -> str:
    if row.goal is None:
        return REFERENCE
    return OURS if ratio <= row.goal else OVER


def ratio_chart(rows: Sequence[Row]) -> Figure:
    """Each row's ratio as a bar from 1.0x (the baseline) on a log scale: left of the line
    kolbo-async does better than its baseline, right of it worse; the goal is the black tick."""
    measured = [row for row in rows if row.ratio is not None]
    panels = [(title, [r for r in measured if group(r) == key]) for key, title in GROUPS]
    panels = [(title, members) for title, members in panels if members]
    values = [r.ratio for r in measured if r.ratio is not None]
    values += [r.goal for r in measured if r.goal is not None]
    low, high = min([*values, 1.0]) / 1.7, max([*values, 1.0]) * 1.9
    figure = Figure(figsize=(11, 1.3 + 0.27 * len(measured) + 0.45 * len(panels)),
                    layout="constrained")
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False,
                           height_ratios=[len(members) + 1.2 for _, members in panels])[:, 0]
    for ax, (title, members) in zip(axes, panels, strict=True):
        _ratio_panel(ax, title, members)
        ax.set_xlim(low, high)
    _ratio_axis(axes[-1], low, high)
    axes[-1].set_xlabel("kolbo-async / baseline (log scale, lower is better)", fontsize=9)
    figure.legend(
        handles=[
            Patch(color=OURS, label="within its goal"),
            Patch(color=OVER, label="over its goal"),
            Patch(color=REFERENCE, label="for reference (no goal)"),
            Patch(facecolor="white", edgecolor="#555555", hatch="////",
                  label="NOISY (rounds spread > 25 %)"),
            Line2D([], [], color="black", marker="|", linestyle="", markersize=11,
                   markeredgewidth=2, label="goal"),
        ],
        loc="outside upper center", ncols=5, fontsize=8.5, frameon=False,
    )
    _caption(figure)
    return figure


def _ratio_panel(ax: Axes, title: str, rows: Sequence[Row]) -> None:
    ax.set_xscale("log")
    names = labels(rows)
    for y, row in enumerate(rows):
        ratio = row.ratio
        assert ratio is not None
        ax.barh(y, ratio - 1.0, left=1.0, height=0.62, color=colour(row, ratio),
                hatch="////" if row.noisy else None, edgecolor="white" if row.noisy else None,
                linewidth=0)
        if row.goal is not None:
            ax.plot([row.goal, row.goal], [y - 0.42, y + 0.42], color="black", lw=1.6)
        after = ratio >= 1.0
        at = max(ratio, row.goal or 0.0) * 1.04 if after else ratio / 1.04
        ax.text(at, y, f"{ratio:.2f}x",
                ha="left" if after else "right", va="center", fontsize=8)
    ax.axvline(1.0, color=LIMIT, lw=1.1)
    ax.set_yticks(range(len(rows)), names, fontsize=8.5)
    ax.set_ylim(len(rows) - 0.4, -0.8)
    ax.set_title(title, fontsize=9.5, loc="left", fontweight="bold")
    ax.grid(axis="x", color="#e5e5e5", lw=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _ratio_axis(ax: Axes, low: float, high: float) -> None:
    ticks = [t for t in (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32) if low <= t <= high]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))


# --- scale runs -----------------------------------------------------------------------------


def _minutes(item: Series) -> list[float]:
    """The edges of the series' one-minute windows, in minutes from the run's start."""
    start = item.offset / 60.0
    return [max(0.0, index - start) for index in range(len(item.rate) + 1)]


def rate_panel(ax: Axes, item: Series) -> None:
    """Requests answered in each of Kolbo's fixed minutes, 429s on top, the limits as lines."""
    edges = _minutes(item)
    ax.stairs(item.rate, edges, fill=True, color=OURS, alpha=0.85)
    if any(item.throttled):
        stacked = [a + b for a, b in zip(item.rate, item.throttled, strict=True)]
        ax.stairs(stacked, edges, baseline=item.rate, fill=True, color=OVER, label="429")
        ax.legend(fontsize=7.5, loc="lower left", frameon=True)
    for index, (name, value) in enumerate(item.limits):
        _line(ax, value, name, LIMIT if index == 0 else BUDGET, "-" if index == 0 else "--",
              above=index == 0)
    asked = [a + b for a, b in zip(item.rate, item.throttled, strict=True)]
    top = max([*asked, *(value for _, value in item.limits), 1])
    ax.set_ylim(0, top * 1.2)
    ax.set_xlim(0, edges[-1])
    if item.note:
        ax.text(0.01, 0.985, item.note, transform=ax.transAxes, ha="left", va="top",
                fontsize=7.5, color="#444444",
                bbox={"boxstyle": "square,pad=0.15", "facecolor": "white", "alpha": 0.8,
                      "linewidth": 0})
    ax.set_ylabel(f"{item.what} a minute", fontsize=8.5)
    _tidy(ax)


def _line(ax: Axes, value: float, name: str, colour: str, style: str, *, above: bool) -> None:
    """A horizontal line labelled at its right end, above or below it."""
    ax.axhline(value, color=colour, ls=style, lw=1.3)
    ax.annotate(name, (1.0, value), xycoords=("axes fraction", "data"),
                xytext=(-3, 2 if above else -2), textcoords="offset points",
                ha="right", va="bottom" if above else "top", fontsize=7.5, color=colour,
                bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.8,
                      "linewidth": 0})


def lag_panel(ax: Axes, item: Series) -> None:
    """How long after each completion the client noticed it, against the planned interval."""
    scale_s = 60.0 if (item.lag_goal or 0.0) > 300 else 1.0
    unit = "min" if scale_s == 60.0 else "s"
    xs = [at / 60.0 for at, _ in item.lags]
    ys = [lag / scale_s for _, lag in item.lags]
    size = 4 if len(xs) > 2_000 else 9
    ax.scatter(xs, ys, s=size, color=OURS, alpha=0.35, linewidths=0, rasterized=True)
    if item.lag_goal is not None:
        goal = item.lag_goal / scale_s
        _line(ax, goal, "planned interval", LIMIT, "-", above=False)
        _line(ax, goal * 1.1, "+10 % (its jitter)", BUDGET, "--", above=True)
    ax.set_ylim(0, max([*ys, (item.lag_goal or 1.0) * 1.1 / scale_s]) * 1.3)
    ax.set_ylabel(f"completion noticed\nafter ({unit})", fontsize=8.5)
    _tidy(ax)


def _tidy(ax: Axes) -> None:
    ax.tick_params(labelsize=8)
    ax.grid(color="#ececec", lw=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def scale_chart(series: Sequence[Series]) -> Figure:
    """A column a scale run: requests a minute on top, poll lag below (when it polled)."""
    lagged = any(item.lags for item in series)
    figure = Figure(figsize=(5.2 * len(series) + 0.6, 6.4 if lagged else 3.6),
                    layout="constrained")
    axes = figure.subplots(2 if lagged else 1, len(series), squeeze=False,
                           height_ratios=[1, 1] if lagged else [1])
    for column, item in enumerate(series):
        top = axes[0, column]
        rate_panel(top, item)
        top.set_title(item.title, fontsize=10, fontweight="bold")
        if lagged:
            bottom = axes[1, column]
            if item.lags:
                lag_panel(bottom, item)
                bottom.sharex(top)
            else:
                bottom.axis("off")
                bottom.text(0.5, 0.5, "no polling in this run", ha="center", va="center",
                            transform=bottom.transAxes, fontsize=9, color="#777777")
            axes[-1, column].set_xlabel("minutes since the start (simulated)", fontsize=8.5)
        else:
            top.set_xlabel("minutes since the start (simulated)", fontsize=8.5)
    _caption(figure)
    return figure


# --- the README's picture -------------------------------------------------------------------


def summary_chart(rows: Sequence[Row], series: Sequence[Series]) -> Figure:
    """One status poll against raw httpx and the peers; the largest watching run over time."""
    watched = [item for item in series if item.lags]
    largest = max(watched, key=lambda item: len(item.lags)) if watched else None
    figure = Figure(figsize=(11, 4.3), layout="constrained")
    grid = figure.add_gridspec(2, 2, width_ratios=[1, 1.15])
    _summary_bars(figure.add_subplot(grid[:, 0]), rows)
    if largest is None:
        ax = figure.add_subplot(grid[:, 1])
        ax.axis("off")
        ax.text(0.5, 0.5, "no scale run measured\n(--only watching)", ha="center",
                va="center", transform=ax.transAxes, color="#777777")
    else:
        top = figure.add_subplot(grid[0, 1])
        bottom = figure.add_subplot(grid[1, 1], sharex=top)
        rate_panel(top, largest)
        top.set_title(largest.title, fontsize=10, fontweight="bold", loc="left")
        top.tick_params(labelbottom=False)
        lag_panel(bottom, largest)
        bottom.set_xlabel("minutes since the start (simulated clock)", fontsize=8.5)
    _caption(figure)
    return figure


def _summary_bars(ax: Axes, rows: Sequence[Row]) -> None:
    found: list[tuple[str, str, float, bool]] = []
    for kind, name, prefix in SUMMARY:
        row = next((r for r in rows if r.scenario.startswith(prefix) and r.ratio), None)
        if row is not None and row.ratio is not None:
            found.append((kind, name, row.ratio, row.noisy))
    ax.set_title("one status poll (GET + JSON), in-process:\ntime against raw httpx's",
                 fontsize=10, fontweight="bold", loc="left")
    if not found:
        ax.axis("off")
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    ys: list[float] = []
    names: list[str] = []
    y = 0.0
    kind_before = found[0][0]
    for kind, name, ratio, noisy in found:
        if kind != kind_before:
            y += 0.6
            kind_before = kind
        ours = name == "kolbo-async"
        ax.barh(y, ratio, height=0.7, color=OURS if ours else REFERENCE,
                hatch="////" if noisy else None, edgecolor="white" if noisy else None,
                linewidth=0)
        ax.text(ratio + 0.05, y, f"{ratio:.2f}x", va="center", fontsize=9,
                fontweight="bold" if ours else "normal")
        ys.append(y)
        names.append(f"{name} ({kind})")
        y += 1.0
    ax.axvline(1.0, color=LIMIT, lw=1.2)
    ax.text(1.0, -0.75, " raw httpx = 1.0x", fontsize=8, va="center", color=LIMIT)
    ax.set_yticks(ys, names, fontsize=9)
    ax.set_ylim(y - 0.4, -1.1)
    ax.set_xlim(0, max(ratio for *_, ratio, _ in found) * 1.22 + 0.2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    ax.set_xlabel("lower is better (hatched: rounds spread > 25 %)", fontsize=8.5)
    _tidy(ax)
    ax.grid(axis="y", visible=False)
