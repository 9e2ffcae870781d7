"""An adversarial user of the blocking `Kolbo`'s batches while items wait for their place in
the generation window: ``break``, `close`, an exception in the loop body, and a real SIGINT to
a child process. Promise: nothing lost, nothing POSTed or paid twice, nothing reported twice;
a rerun on the same journal sends exactly what was not sent. Counted at the simulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import kolbo_async as k
from kolbo_async import Kolbo, RateLimits, TextToVideo
from kolbo_async.testing import Simulator, VirtualClock

from . import forked

KEY = "kolbo_live_" + "d4" * 20
ROOT = Path(__file__).resolve().parent.parent
SLOW = RateLimits(1, 300)


def paid(sim: Simulator) -> Counter[str]:
    return Counter(str(g.request.get("prompt")) for g in sim.generations.values())


def requests(n: int) -> list[TextToVideo]:
    return [TextToVideo(f"p{i}") for i in range(n)]


def blocking(sim: Simulator, clock: VirtualClock | None, **options: Any) -> Kolbo:
    return Kolbo(KEY, base_url=sim.base_url, _transport=sim.transport(), _clock=clock, **options)


def rerun(sim: Simulator, clock: VirtualClock, journal: Path, n: int) -> list[Any]:
    with blocking(sim, clock, rate_limits=SLOW) as client:
        return list(client.videos.generate_many(requests(n), journal=journal))


def finished_once(sim: Simulator, outcomes: list[Any], n: int) -> None:
    assert sorted(o.index for o in outcomes) == list(range(n))
    assert all(o.error is None for o in outcomes), [repr(o.error) for o in outcomes]
    assert paid(sim) == Counter({f"p{i}": 1 for i in range(n)})


class Boom(Exception):
    pass


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["break", "close", "raise", "abandon"])
def test_blocking_stop_while_items_wait_then_rerun(tmp_path: Path, how: str) -> None:
    clock = VirtualClock()
    sim = Simulator(clock=clock, processing_seconds=20)
    n = 5
    journal = tmp_path / "b.db"
    seen = []
    with blocking(sim, clock, rate_limits=SLOW) as client:
        batch = client.videos.generate_many(requests(n), concurrency=4, journal=journal)
        try:
            for outcome in batch:
                seen.append(outcome)
                if how == "raise":
                    raise Boom
                break
        except Boom:
            pass
        if how == "close":
            batch.close()
        if how != "abandon":
            del batch
        first = paid(sim)
        assert all(v == 1 for v in first.values()), first
        assert len(first) < n
        if how == "abandon":  # the batch still alive, a new run on the same journal
            with pytest.raises(k.KolboError):
                list(client.videos.generate_many(requests(n), journal=journal))
            batch.close()
            del batch
    assert len(seen) == 1
    finished_once(sim, rerun(sim, clock, journal, n), n)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("limit", [1.0, 30.0])
def test_blocking_max_credits_and_insufficient_credits(tmp_path: Path, limit: float) -> None:
    clock = VirtualClock()
    sim = Simulator(clock=clock, processing_seconds=20)
    n = 5
    journal = tmp_path / "b.db"
    with blocking(sim, clock, rate_limits=SLOW) as client:
        outcomes = list(
            client.videos.generate_many(
                requests(n), concurrency=4, journal=journal, max_credits=limit
            )
        )
    assert sorted(o.index for o in outcomes) == list(range(n))
    ok = {o.index for o in outcomes if o.error is None}
    assert set(paid(sim)) == {f"p{i}" for i in ok}
    sim.inject("generate", "insufficient_credits")
    with blocking(sim, clock, rate_limits=SLOW) as client:
        second = list(client.videos.generate_many(requests(n), concurrency=4, journal=journal))
    assert sorted(o.index for o in second) == list(range(n))
    assert all(v == 1 for v in paid(sim).values())
    finished_once(sim, rerun(sim, clock, journal, n), n)


CHILD = textwrap.dedent(
    """
    import faulthandler, json, sys
    faulthandler.dump_traceback_later(40, exit=True)
    from kolbo_async import Kolbo, RateLimits, TextToVideo
    url, journal, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Kolbo(sys.argv[4], base_url=url, rate_limits=RateLimits(1, 300)) as client:
        print("started", flush=True)
        for o in client.videos.generate_many(
            [TextToVideo(f"p{i}") for i in range(n)], concurrency=3, journal=journal
        ):
            print(json.dumps([o.index, repr(o.error)]), flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_real_sigint_while_items_wait_for_admission(tmp_path: Path, delay: float) -> None:
    pytest.importorskip("uvicorn")
    sim = Simulator(speed=30, processing_seconds=60, pending_seconds=3)
    n = 4
    journal = tmp_path / "b.db"
    with sim.serve() as url:
        proc = forked.Popen(
            [sys.executable, "-c", CHILD, url, str(journal), str(n), KEY],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 20
            while not paid(sim):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.02)
            time.sleep(delay)  # the other items now wait a minute for their place
            os.kill(proc.pid, signal.SIGINT)
            started = time.monotonic()
            out, err = proc.communicate(timeout=20)
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode != 0
        assert "KeyboardInterrupt" in err, err
        assert took < 10, took
        assert paid(sim) == Counter({"p0": 1})
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("[")]
        assert len({i for i, _ in lines}) == len(lines)
        with Kolbo(KEY, base_url=url, rate_limits=None) as client:
            again = list(client.videos.generate_many(requests(n), journal=journal))
        finished_once(sim, again, n)
