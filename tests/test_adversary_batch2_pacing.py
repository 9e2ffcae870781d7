"""An adversarial user of a batch that claims an item before waiting for its place in the
generation window, and gives it back when that wait is cut short (``break``, `aclose`, a
cancel scope, a halt). Promise: no item lost, none POSTed twice, none reported twice; with a
journal, a rerun sends exactly what was not sent. Counted at the simulator."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

import kolbo_async as k
from kolbo_async import RateLimits, TextToVideo
from kolbo_async.testing import Simulator, VirtualClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "c9" * 20
SLOW = RateLimits(1, 300)  # one generation a minute: items wait a minute to be admitted


def posted(sim: Simulator) -> Counter[str]:
    return Counter(
        str(r.json.get("prompt"))
        for r in sim.requests
        if r.method == "POST" and r.path.startswith("/api/v1/generate/video")
    )


def paid(sim: Simulator) -> Counter[str]:
    return Counter(str(g.request.get("prompt")) for g in sim.generations.values())


def requests(n: int) -> list[TextToVideo]:
    return [TextToVideo(f"p{i}") for i in range(n)]


def once_each(outcomes: list[Any], n: int) -> None:
    indices = [o.index for o in outcomes]
    assert sorted(indices) == list(range(n)), indices


async def rerun(sim: Simulator, journal: Path, n: int) -> list[Any]:
    async with sim.client(KEY, rate_limits=SLOW) as client:
        with anyio.fail_after(30):
            return [o async for o in client.videos.generate_many(requests(n), journal=journal)]


@pytest.mark.parametrize("how", ["break", "aclose", "cancel"])
@pytest.mark.parametrize("with_journal", [False, True])
async def test_stopped_while_items_wait_for_admission(
    tmp_path: Path, how: str, with_journal: bool
) -> None:
    clock = VirtualClock()
    sim = Simulator(clock=clock, processing_seconds=20)
    n = 5
    journal = tmp_path / "b.db" if with_journal else None
    seen: list[Any] = []
    async with sim.client(KEY, rate_limits=SLOW) as client:
        batch = client.videos.generate_many(requests(n), concurrency=4, journal=journal)
        with anyio.fail_after(30):
            if how == "cancel":
                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as tg:

                        async def stop() -> None:
                            await clock.sleep(90)  # items 2.. wait for their minute
                            scope.cancel()

                        tg.start_soon(stop)
                        async for outcome in batch:
                            seen.append(outcome)
            else:
                async for outcome in batch:
                    seen.append(outcome)
                    break
                if how == "aclose":
                    await batch.aclose()
        unfinished = list(batch.unfinished)
        del batch
    first = posted(sim)
    assert all(v == 1 for v in first.values()), first
    assert len({o.index for o in seen}) == len(seen)
    assert len(first) < n  # the stop came while items waited
    if journal is None:
        assert len(seen) + len(unfinished) <= len(first)
        return
    again = await rerun(sim, journal, n)
    once_each(again, n)
    assert all(o.error is None for o in again), [o.error for o in again]
    total = posted(sim)
    assert sorted(total) == [f"p{i}" for i in range(n)]
    assert all(v == 1 for v in total.values()), total
    assert paid(sim) == total


def consistent(outcomes: list[Any], sim: Simulator, n: int) -> None:
    """One outcome per item; a success was paid once, a refusal not at all."""
    once_each(outcomes, n)
    spent = paid(sim)
    for o in outcomes:
        if o.error is None:
            assert spent[f"p{o.index}"] == 1, (o.index, spent)
        else:
            assert isinstance(o.error, k.InsufficientCreditsError), repr(o.error)
            assert spent[f"p{o.index}"] == 0, (o.index, spent)


@pytest.mark.parametrize("concurrency", [1, 3, 8])
@pytest.mark.parametrize("with_journal", [False, True])
async def test_insufficient_credits_while_others_wait_for_admission(
    tmp_path: Path, concurrency: int, with_journal: bool
) -> None:
    clock = VirtualClock()
    sim = Simulator(clock=clock, processing_seconds=20)
    n = 6
    async with sim.client(KEY, rate_limits=SLOW) as client:
        await client.videos.generate("warm")  # spends the window's one place: items wait
        sim.inject("generate", "insufficient_credits")
        journal = tmp_path / "b.db" if with_journal else None
        with anyio.fail_after(30):
            outcomes = [
                o
                async for o in client.videos.generate_many(
                    requests(n), concurrency=concurrency, journal=journal
                )
            ]
    consistent(outcomes, sim, n)
    assert isinstance(outcomes[0].error, k.InsufficientCreditsError)
    refused = sum(1 for r in sim.requests if r.method == "POST" and r.status == 400)
    assert refused == 1
    if journal is not None:
        again = await rerun(sim, journal, n)
        once_each(again, n)
        assert all(o.error is None for o in again), [o.error for o in again]
        total = paid(sim)
        assert all(total[f"p{i}"] == 1 for i in range(n)), total


async def test_insufficient_credits_mid_batch_while_items_wait(tmp_path: Path) -> None:
    clock = VirtualClock()
    sim = Simulator(clock=clock, processing_seconds=20)
    n = 6
    journal = tmp_path / "b.db"
    async with sim.client(KEY, rate_limits=RateLimits(2, 300)) as client:
        with anyio.fail_after(30):
            outcomes = []
            batch = client.videos.generate_many(requests(n), concurrency=4, journal=journal)
            async for o in batch:
                outcomes.append(o)
                if len(outcomes) == 1:  # the next POST is refused; others wait meanwhile
                    sim.inject("generate", "insufficient_credits")
    consistent(outcomes, sim, n)
    again = await rerun(sim, journal, n)
    once_each(again, n)
    assert all(o.error is None for o in again)
    total = paid(sim)
    assert all(total[f"p{i}"] == 1 for i in range(n)), total


@pytest.mark.parametrize("limit", [1.0, 25.0, 60.0])
async def test_max_credits_with_items_waiting_for_admission(tmp_path: Path, limit: float) -> None:
    clock = VirtualClock()
    sim = Simulator(clock=clock, processing_seconds=20)
    n = 5
    journal = tmp_path / "b.db"
    async with sim.client(KEY, rate_limits=SLOW) as client:
        with anyio.fail_after(30):
            outcomes = [
                o
                async for o in client.videos.generate_many(
                    requests(n), concurrency=4, journal=journal, max_credits=limit
                )
            ]
    once_each(outcomes, n)
    first = posted(sim)
    assert all(v == 1 for v in first.values()), first
    sent = [o for o in outcomes if o.error is None]
    assert len(sent) == sum(first.values())
    again = await rerun(sim, journal, n)
    once_each(again, n)
    total = posted(sim)
    assert sorted(total) == [f"p{i}" for i in range(n)]
    assert all(v == 1 for v in total.values()), total
