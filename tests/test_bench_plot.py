"""`benchmarks/run.py --plot DIR` draws the scoreboard as PNG charts, from smoke-sized fake rows
and a fake scale run (no benchmark is measured here).

matplotlib comes with the `bench` extra: skipped when it is absent, except in CI
(``CI=true``), where that is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import _harness
from _harness import Row, Series

SIGNATURE = b"\x89PNG\r\n\x1a\n"

ROWS = [
    Row("status poll, in-process, pacing off", 91e-6, 87e-6, "s", goal=1.10),
    Row("status poll, in-process, pacing on", 95e-6, 88e-6, "s", goal=1.10, noisy=True),
    Row("submit, in-process, pacing off", 119e-6, 92e-6, "s", goal=1.10),
    Row("sync wrapper: gen.status() per call", 9e-4, 6e-4, "s",
        baseline_name="AsyncKolbo in its loop", goal=1.30, note="simulator in-process"),
    Row("sync wrapper: gen.status() per call", 4e-3, 2e-3, "s",
        baseline_name="AsyncKolbo in its loop", goal=1.30, note="simulator over loopback"),
    Row("blocking status poll, in-process", 124e-6, 88e-6, "s",
        baseline_name="raw httpx.Client", goal=1.30),
    Row("peer (sync): openai models.retrieve", 269e-6, 88e-6, "s",
        baseline_name="raw httpx.Client", note="for reference; same GET shape"),
    Row("blocking status poll vs openai (sync)", 124e-6, 269e-6, "s",
        baseline_name="openai sync client", goal=1.0),
    Row("peer: runwayml tasks.retrieve", 284e-6, 88e-6, "s"),
    Row("peers (openai, runwayml)", None, None, "s", note="not installed"),
    Row("watching 200: status requests", 627, 723, "requests",
        baseline_name="hints+budget minimum", goal=1.1),
    Row("memory per watched handle (2,000)", 1.6, 20.0, "KB",
        baseline_name="budget (20 KB)", goal=1.0),
]


def _watching() -> Series:
    return Series(
        "as_completed: watching 200 generations", "status requests",
        rate=[120, 270, 268, 250, 180, 90, 30], throttled=[0, 0, 3, 0, 0, 0, 0], offset=17.0,
        note="simulated clock x60: 250 polls a real second; 3 x 429",
        limits=[("Kolbo's limit, 300/min", 300.0), ("poll budget (90%)", 270.0)],
        lags=[(60.0 + i, 20.0 + (i * 7) % 25) for i in range(200)], lag_goal=44.0,
    )


def _pacing() -> Series:
    return Series("generate_many: 60 POSTs", "POSTs", rate=[10] * 6, throttled=[0] * 6,
                  limits=[("Kolbo's limit, 10/min", 10.0)])


@pytest.fixture(scope="module")
def run_module() -> object:
    if importlib.util.find_spec("matplotlib") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("matplotlib is missing in CI: .ci/run installs the bench extra")
        pytest.skip("matplotlib is not installed (pip install -e '.[bench]')")
    import run

    return run


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == SIGNATURE, path
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data[-8:-4] == b"IEND"
    return width, height


@pytest.mark.slow
def test_plot_writes_pngs(run_module: object, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """--plot DIR: ratios.png, scale.png and benchmarks.png, valid PNGs of a readable size;
    the README's picture stays under 150 KB; the table is printed as without --plot."""
    seen: list[bool] = []

    def rows(smoke: bool) -> list[Row]:
        seen.append(_harness.recording())
        return ROWS

    def scale(smoke: bool) -> list[Row]:
        _harness.record(_pacing())
        _harness.record(_watching())
        return []

    monkeypatch.setattr(run_module, "SCENARIOS", [("rows", rows), ("scale", scale)])
    out = tmp_path / "charts"
    assert run_module.main(["--smoke", "--plot", str(out)]) == 0  # type: ignore[attr-defined]
    assert seen == [True]
    names = sorted(path.name for path in out.iterdir())
    assert names == ["benchmarks.png", "ratios.png", "scale.png"]
    for name in names:
        width, height = _png_size(out / name)
        assert 600 <= width <= 2400, (name, width)
        assert 300 <= height <= 2400, (name, height)
    assert (out / "benchmarks.png").stat().st_size < 150_000


def test_no_plot_records_nothing(run_module: object, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Without --plot the scale runs are not asked for their series (recording() is False),
    a recorded series goes nowhere, and no file is written."""
    seen: list[bool] = []

    def scale(smoke: bool) -> list[Row]:
        seen.append(_harness.recording())
        _harness.record(_watching())
        return ROWS[:1]

    monkeypatch.setattr(run_module, "SCENARIOS", [("scale", scale)])
    monkeypatch.chdir(tmp_path)
    assert run_module.main(["--smoke"]) == 0  # type: ignore[attr-defined]
    assert seen == [False]
    assert list(tmp_path.iterdir()) == []
    assert "status poll, in-process, pacing off" in capsys.readouterr().out


@pytest.mark.slow
def test_plot_without_scale_runs(run_module: object, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """--only status --plot: no scale.png, and the README picture still draws, saying what
    was not measured."""
    monkeypatch.setattr(run_module, "SCENARIOS", [("status", lambda smoke: ROWS[:2])])
    assert run_module.main(["--plot", str(tmp_path)]) == 0  # type: ignore[attr-defined]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmarks.png", "ratios.png"]
    for path in tmp_path.iterdir():
        _png_size(path)


def test_per_window() -> None:
    """Counts keyed by Kolbo's fixed minute (as JSON keys) become a list from the window
    holding the start to the one holding the end, empty minutes as zeros."""
    assert _harness.per_window({"10": 4, "12": 7, "15": 1}, 10 * 60 + 30, 13 * 60 + 2) == [
        4, 0, 7, 0
    ]


@pytest.mark.slow
def test_pacing_records_its_series() -> None:
    """The pacing scale run (smoke size: 60 POSTs, the simulator in its own process) records
    its POSTs a minute while recording: every POST counted once, none over Kolbo's 10 a minute,
    its 429s the ones its row reports; outside record_series() it records nothing."""
    import scale

    with _harness.record_series() as series:
        (row,) = scale.pacing(True)
    (item,) = series
    assert sum(item.rate) == 60
    assert max(item.rate) <= 10
    assert f"{sum(item.throttled)} x 429" in row.note
    assert item.limits == [("Kolbo's limit, 10/min", 10.0)]
    assert 0 <= item.offset < 60
    assert not _harness.recording()
