"""Promises of the shared poller that its mutation run found untested (issue 18).

On a virtual clock, counted at the simulator.
"""

from __future__ import annotations

import anyio
import pytest

import kolbo_async as k
from kolbo_async.testing import Simulator, VirtualClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "6f" * 20


async def test_hooks_hear_each_change_of_state_or_progress_once() -> None:
    """Every poll that finds a new state or progress is told to the hooks, with the id; a
    poll that finds nothing new is not."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=40)
    events: list[object] = []
    async with sim.client(KEY, rate_limits=None, hooks=[events.append]) as client:
        final = await client.generations.attach(gid).wait()
    changes = [e for e in events if isinstance(e, k.StateChanged)]
    polls = [r for r in sim.requests if r.path.endswith(f"/{gid}/status")]
    assert len(changes) >= 3
    assert all(e.generation_id == gid for e in changes)
    assert (changes[-1].state, changes[-1].progress) == (final.state, final.progress) == (
        "completed",
        100,
    )
    seen = [(e.state, e.progress) for e in changes]
    assert len(set(seen)) == len(seen)  # no repeats
    assert len(changes) <= len(polls)


async def test_polls_spend_ninety_percent_of_the_request_budget_when_over_it() -> None:
    """40 generations at an 8 s hint want 5 polls/s; at 60 requests a minute the poller
    spends at most 90 % of it, 0.9 polls/s, the rest left to other calls (jitter makes it a
    little less: about 0.85/s seen), never the whole 1/s."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    ids = [sim.create_generation(key=KEY, processing_seconds=5_000) for _ in range(40)]
    limits = k.RateLimits(requests_per_minute=60)
    async with sim.client(KEY, rate_limits=limits) as client, anyio.create_task_group() as tg:
        for gid in ids:
            tg.start_soon(client.generations.attach(gid).wait, None)
        await clock.sleep(700)
        tg.cancel_scope.cancel()
    polls = [r.time for r in sim.requests if r.path.endswith("/status") and 100 <= r.time < 700]
    assert 480 <= len(polls) <= 545, len(polls)
