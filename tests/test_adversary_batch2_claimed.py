"""A shared batch's claim is 'claimed', not 'intent', while the item waits for its place in
the generation window: a worker that dies (or is frozen past its lease) during that wait
leaves the item to be sent once by another worker, not reported outcome-unknown and never
sent (as it was before the fix)."""

from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Any

import pytest

from .test_adversary_batch2_shared import spawn as spawn  # noqa: PLC0414
from .test_adversary_shared_journal import post_counts, simulator, wait_for
from .test_journal_pg import batch_name, rows
from .test_journal_pg import postgres_url as postgres_url  # noqa: PLC0414


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_a_worker_lost_while_an_item_waits_for_admission_loses_no_item(
    postgres_url: str, spawn: Any, sig: signal.Signals
) -> None:
    """Worker A (3 generations a minute) POSTs items 0-2 and claims item 3, which waits a
    minute for its place; A is killed (or frozen past its 1 s lease). Item 3 never reached
    Kolbo: the worker that takes over must send it (or leave it to be sent), not end it as
    outcome-unknown."""
    batch = batch_name()
    prompts = [f"lost {i}" for i in range(6)]
    sim = simulator()
    with sim.serve() as url:
        first = spawn(url, batch, prompts, gpm=3, lease=1.0)
        wait_for(
            # Items 0-2 answered and recorded (a kill between Kolbo's answer and its record
            # would rightly make that one outcome-unknown), item 3 claimed and waiting.
            lambda: len(post_counts(sim)) == 3
            and {r[0] for r in rows(postgres_url, batch) if r[1] in ("submitted", "finished")}
            >= {0, 1, 2}
            and [r for r in rows(postgres_url, batch) if r[0] == 3 and r[1] == "claimed"]
        )
        os.kill(first.pid, sig)
        try:
            second = spawn(url, batch, prompts, mode="trio", lease=1.0).finish(timeout=30)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        first.finish(timeout=30)
    assert "lost 3" not in Counter(post_counts(sim)) or post_counts(sim)["lost 3"] == 1
    outcomes = {o[3]: o[1] for w in (first, second) for o in w.outcomes}
    assert post_counts(sim) == Counter(prompts), (post_counts(sim), outcomes)
    assert outcomes == dict.fromkeys(prompts), outcomes
