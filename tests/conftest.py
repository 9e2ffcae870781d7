"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each `pytest.mark.anyio` test once per backend."""
    return str(request.param)


@pytest.fixture(autouse=True)
def _no_kolbo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a developer's real key or base URL from the environment."""
    for name in ("KOLBO_API_KEY", "KOLBO_BASE_URL", "KOLBO_API_URL"):
        monkeypatch.delenv(name, raising=False)


class StepClock:
    """A clock for single-flow tests: `sleep` jumps time forward and records the wait."""

    def __init__(self) -> None:
        self.time = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        import anyio

        # Other ready tasks (an in-flight mock request) run first; a sleep cancelled in the
        # meantime (the shared poller's alarm, when a poll lands) leaves time alone.
        for _ in range(8):
            await anyio.lowlevel.checkpoint()
        self.sleeps.append(seconds)
        self.time += max(0.0, seconds)


@pytest.fixture
def clock() -> StepClock:
    """A fresh `StepClock`."""
    return StepClock()
