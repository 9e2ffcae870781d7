"""Shared fixtures and helpers: every async test runs on asyncio and on trio."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import pytest

from kolbo_async.testing import SimRequest, Simulator, VirtualClock

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    # A shell starting a background job without job control (`pytest ... &` in a script)
    # makes it ignore SIGINT, and the processes it starts inherit that: then every
    # test of Ctrl-C fails, and one hangs closing a client whose POST it held. Ctrl-C is
    # what those tests are about, so the test processes take Python's own handler back.
    signal.signal(signal.SIGINT, signal.default_int_handler)


#: What a Ctrl-C raises out of `anyio.run`. On Python 3.10 anyio's asyncio runner turns it into
#: a cancellation of the main task, as 3.11's does, but without `Task.uncancel` it cannot tell
#: that cancellation from others, and lets the CancelledError out.
CTRL_C: tuple[type[BaseException], ...] = (
    (KeyboardInterrupt,) if sys.version_info >= (3, 11) else (KeyboardInterrupt, asyncio.CancelledError)
)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each `pytest.mark.anyio` test once per backend."""
    return str(request.param)


@pytest.fixture(autouse=True)
def _no_kolbo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a developer's real key or base URL from the environment."""
    for name in ("KOLBO_API_KEY", "KOLBO_BASE_URL", "KOLBO_API_URL", "KOLBO_API_BASE"):
        monkeypatch.delenv(name, raising=False)


class StepClock:
    """A `VirtualClock` at 1000 s for single-flow tests that also records each wait it served.

    Time jumps only when every task is blocked, so an in-flight mock request always lands
    first; a sleep cancelled meanwhile (the shared poller's alarm, when a poll lands) is not
    recorded and moves no time.
    """

    def __init__(self) -> None:
        self._clock = VirtualClock(start=1000.0)
        self.sleeps: list[float] = []

    @property
    def time(self) -> float:
        """The current time; assigning moves it forward (never back)."""
        return self._clock.now()

    @time.setter
    def time(self, value: float) -> None:
        self._clock.advance(value - self._clock.now())

    def now(self) -> float:
        return self._clock.now()

    async def sleep(self, seconds: float) -> None:
        await self._clock.sleep(seconds)
        self.sleeps.append(seconds)


@pytest.fixture
def clock() -> StepClock:
    """A fresh `StepClock`."""
    return StepClock()


#: The key the simulator tests send.
SIM_KEY = "kolbo_live_" + "a" * 40


def sim_call(
    sim: Simulator,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = SIM_KEY,
    query: dict[str, str] | None = None,
    host: str = "api",
) -> tuple[int, Any, dict[str, str]]:
    """One request straight into `sim.handle` (no HTTP): (status, JSON or bytes, headers)."""
    headers = {"x-api-key": key} if key else {}
    answer = sim.handle(
        SimRequest(
            method,
            path,
            query=query or {},
            headers=headers,
            body=json.dumps(body).encode() if body is not None else b"",
            host=host,
        )
    )
    data: Any = answer.body
    if answer.headers.get("content-type") == "application/json":
        data = json.loads(answer.body)
    return answer.status, data, answer.headers


def sim_submit(sim: Simulator, **body: Any) -> dict[str, Any]:
    """Submit a text-to-video generation ("a cat" unless `body` says) and expect a 200."""
    status, data, _ = sim_call(sim, "POST", "/api/v1/generate/video", {"prompt": "a cat", **body})
    assert status == 200, data
    return dict(data)


# The quick loop (`-m "not slow"`) stays quick only while slow tests say so: the end of a run
# names any test not marked `slow` that took a second or more.
_unmarked_slow: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "slow" not in report.keywords:
        _unmarked_slow[report.nodeid] = _unmarked_slow.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    slow = sorted((t, n) for n, t in _unmarked_slow.items() if t >= 1.0)
    if slow:
        terminalreporter.section("tests over 1 s not marked slow")
        for took, nodeid in reversed(slow):
            terminalreporter.write_line(f"{took:5.1f} s  {nodeid}")
