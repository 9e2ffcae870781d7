"""Measurement helpers: interleaved rounds, medians, ratios, a noise flag, one table; and the
time series a scale run records for the charts (only while `recording()`)."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import attrs


@attrs.frozen
class Row:
    """One line of the scoreboard: our figure, the baseline's, and their ratio."""

    scenario: str
    ours: float | None
    baseline: float | None
    unit: str
    baseline_name: str = "raw httpx"
    goal: float | None = None
    noisy: bool = False
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline


@attrs.frozen
class Series:
    """What a scale run did over time, on its simulated clock, for `benchmarks/plot.py`.

    `rate` counts the requests answered in each of Kolbo's fixed one-minute windows, from the
    window holding the run's start (`offset`: how far into that window the run started, in
    simulated seconds); `throttled` the 429s in the same windows. `limits` are the horizontal
    lines the rate is judged against (label, requests a minute). `lags` are (seconds from the
    start to a completion, seconds until the client noticed it), judged against `lag_goal`.
    `note` says in a few words how the run went (its clock, its pace, its 429s).
    """

    title: str
    what: str
    rate: list[int]
    throttled: list[int]
    offset: float = 0.0
    limits: list[tuple[str, float]] = attrs.Factory(list)
    lags: list[tuple[float, float]] = attrs.Factory(list)
    lag_goal: float | None = None
    note: str = ""


_recording: list[list[Series]] = []  # one list for each record_series() block open


def recording() -> bool:
    """Whether a chart will be drawn: scale runs gather their time series only then."""
    return bool(_recording)


def record(series: Series) -> None:
    """Keep `series` for the charts; nothing happens when not `recording()`."""
    if _recording:
        _recording[-1].append(series)


@contextmanager
def record_series() -> Iterator[list[Series]]:
    """Gather the series the scale runs record inside the block."""
    _recording.append([])
    try:
        yield _recording[-1]
    finally:
        _recording.pop()


def per_window(counts: dict[str, int], start: float, end: float) -> list[int]:
    """`counts` (requests keyed by the index of their one-minute window, as text, the way JSON
    carries them) as a list from the window holding `start` to the one holding `end`."""
    first = int(start // 60.0)
    return [counts.get(str(index), 0) for index in range(first, int(end // 60.0) + 1)]


def spread(samples: list[float]) -> float:
    """(max - min) / median: how far apart the rounds were."""
    median = statistics.median(samples)
    return (max(samples) - min(samples)) / median if median else 0.0


NOISE = 0.25


async def compare_async(
    ours: Callable[[], Awaitable[object]],
    baseline: Callable[[], Awaitable[object]],
    *,
    calls: int,
    rounds: int,
    warmup: int,
) -> tuple[float, float, bool]:
    """Median seconds per call of `ours` and `baseline`, measured in alternating rounds."""
    for _ in range(warmup):
        await ours()
        await baseline()
    ours_samples: list[float] = []
    base_samples: list[float] = []
    for _ in range(rounds):
        for fn, samples in ((ours, ours_samples), (baseline, base_samples)):
            gc.collect()
            start = time.perf_counter()
            for _ in range(calls):
                await fn()
            samples.append((time.perf_counter() - start) / calls)
    noisy = spread(ours_samples) > NOISE or spread(base_samples) > NOISE
    return statistics.median(ours_samples), statistics.median(base_samples), noisy


def compare_sync(
    ours: Callable[[], object],
    baseline: Callable[[], object],
    *,
    calls: int,
    rounds: int,
    warmup: int,
) -> tuple[float, float, bool]:
    """Like `compare_async`, for blocking callables."""
    for _ in range(warmup):
        ours()
        baseline()
    ours_samples: list[float] = []
    base_samples: list[float] = []
    for _ in range(rounds):
        for fn, samples in ((ours, ours_samples), (baseline, base_samples)):
            gc.collect()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples.append((time.perf_counter() - start) / calls)
    noisy = spread(ours_samples) > NOISE or spread(base_samples) > NOISE
    return statistics.median(ours_samples), statistics.median(base_samples), noisy


def compare_sync_many(
    fns: dict[str, Callable[[], object]], *, calls: int, rounds: int, warmup: int
) -> tuple[dict[str, float], bool]:
    """Median seconds per call of each of `fns`, in rounds that take them in turn.

    More than two contenders in one loop, so that every pair shares the same moments of a
    busy machine (a ratio taken across two separate runs would mostly measure the noise).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls)
    noisy = any(spread(values) > NOISE for values in samples.values())
    return {name: statistics.median(values) for name, values in samples.items()}, noisy


def machine() -> str:
    """One line naming the machine and the interpreter."""
    return (
        f"{platform.machine()} {os.cpu_count()} cpu, {platform.system()} {platform.release()}; "
        f"{platform.python_implementation()} {platform.python_version()}"
    )


def render(rows: list[Row]) -> str:
    """The scoreboard as a fixed-width table."""

    def fmt(value: float | None, unit: str) -> str:
        if value is None:
            return "-"
        if unit == "s":
            if value < 1e-3:
                return f"{value * 1e6:.1f} µs"
            if value < 1:
                return f"{value * 1e3:.2f} ms"
            return f"{value:.2f} s"
        return f"{value:,.1f} {unit}"

    header = ("scenario", "kolbo-async", "baseline", "ratio", "goal", "notes")
    lines = [header]
    for row in rows:
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        goal = "-" if row.goal is None else f"<= {row.goal:.2f}x"
        notes = "; ".join(
            part
            for part in (
                f"baseline: {row.baseline_name}" if row.baseline is not None else "",
                "NOISY" if row.noisy else "",
                row.note,
            )
            if part
        )
        lines.append(
            (row.scenario, fmt(row.ours, row.unit), fmt(row.baseline, row.unit), ratio, goal, notes)
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [f"# {machine()}", ""]
    for index, line in enumerate(lines):
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        out.append("  ".join(cells).rstrip())
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def python() -> str:
    return sys.executable
