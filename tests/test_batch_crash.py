"""A batch killed with SIGKILL mid-flight, then run again with its journal: nothing paid twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest

import kolbo_async as k
from kolbo_async import RateLimits, TextToVideo
from kolbo_async.testing import Simulator

from . import forked

pytest.importorskip("uvicorn")

KEY = "kolbo_live_" + "c3" * 20
SPEED = 100.0
ITEMS = 30
# The client paces in real seconds, the served simulator counts its windows in simulated
# ones: the client's limits are scaled by the same speed.
LIMITS = RateLimits(generations_per_minute=int(10 * SPEED), requests_per_minute=int(300 * SPEED))

CHILD = textwrap.dedent(
    """
    import sys, anyio
    from kolbo_async import AsyncKolbo, RateLimits, TextToVideo

    async def main(url, journal):
        limits = RateLimits(generations_per_minute={gpm}, requests_per_minute={rpm})
        async with AsyncKolbo({key!r}, base_url=url, rate_limits=limits) as client:
            requests = [TextToVideo(f"prompt {{i}}") for i in range({items})]
            async for outcome in client.videos.generate_many(
                requests, journal=journal, concurrency=10
            ):
                print(outcome.index, flush=True)

    anyio.run(main, sys.argv[1], sys.argv[2])
    """
)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_mid_batch_then_rerun_pays_nothing_twice(tmp_path: Path) -> None:
    """Kill the batch's process at a random instant of its POSTs; the rerun re-attaches
    what was submitted, flags what it cannot know, and sends every other item once."""
    journal = tmp_path / "batch.db"
    script = tmp_path / "child.py"
    script.write_text(
        CHILD.format(
            gpm=LIMITS.generations_per_minute,
            rpm=LIMITS.requests_per_minute,
            key=KEY,
            items=ITEMS,
        )
    )
    sim = Simulator(speed=SPEED, processing_seconds=120, seed=7)
    with sim.serve() as url:

        def posted() -> Counter[str]:
            # Generations Kolbo created (and charged for), per prompt. A POST refused with
            # 429 creates none: the rerun's fresh window may meet the dead run's last one.
            return Counter(g.request["prompt"] for g in sim.generations.values())

        with forked.Popen(
            [sys.executable, str(script), url, str(journal)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        ) as child:
            try:
                deadline = time.monotonic() + 30
                while sum(posted().values()) < 14:
                    assert child.poll() is None, child.stderr.read() if child.stderr else ""
                    assert time.monotonic() < deadline, "the child never got going"
                    time.sleep(0.002)
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL
        before = posted()
        assert 14 <= sum(before.values()) < ITEMS

        with closing(sqlite3.connect(journal)) as db:
            rows = dict(db.execute("SELECT idx, state FROM items").fetchall())
        # Every POST that reached Kolbo has a journal row (the intent was written first),
        # and the first ones have their ids.
        assert {int(p.split()[1]) for p in before} <= set(rows)
        assert "submitted" in rows.values() or "finished" in rows.values()

        with k.Kolbo(KEY, base_url=url, rate_limits=LIMITS) as client:
            requests = [TextToVideo(f"prompt {i}") for i in range(ITEMS)]
            outcomes = list(client.videos.generate_many(requests, journal=journal, concurrency=10))

        after = posted()
        assert sorted(o.index for o in outcomes) == list(range(ITEMS))
        assert max(after.values()) == 1  # zero duplicate submissions
        unknown = [o for o in outcomes if isinstance(o.error, k.SubmissionOutcomeUnknownError)]
        assert {o.index for o in unknown} == {i for i, s in rows.items() if s == "intent"}
        assert all(o.error is None for o in outcomes if o not in unknown)
        # Every generation Kolbo created is reported by the rerun, or flagged as unknown.
        reported = {o.generation.id for o in outcomes if o.generation is not None}
        assert len(sim.generations) - len(reported) <= len(unknown)
