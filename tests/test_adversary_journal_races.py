"""Adversarial tests of the SQLite journal's races (0a28572, 6a2b37d): a journaled batch left
by asyncio's own cancellation (`wait_for`, `Task.cancel`) at random moments, dropped and
collected from another thread, left with `break` and its path reused at once. Each run pays
once per item (counted at the simulator), never crashes, and the journal opens again."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from kolbo_async import AsyncKolbo, TextToVideo
from kolbo_async._journal import Journal
from kolbo_async.testing import Simulator

from . import forked, test_batch
from .test_batch import collect
from .test_batch import prompts_posted as posted

pytestmark = pytest.mark.anyio

vclock = test_batch.vclock
sim = test_batch.sim


@pytest.fixture(autouse=True)
def collections_see_only_this_test() -> Iterator[None]:
    """These tests call `gc.collect()` hundreds of times to drop batches on purpose. With
    what earlier tests left frozen, a collection walks only this test's objects: well under
    a millisecond instead of 45-100 ms in a worker that has loaded the whole suite."""
    gc.freeze()
    yield
    gc.unfreeze()
client = test_batch.client


def prompts(count: int) -> list[TextToVideo]:
    return [TextToVideo(f"p{i}") for i in range(count)]


def generation_posts(sim: Simulator) -> int:
    return sum(posted(sim).values())


async def rerun_pays_nothing_more(
    sim: Simulator, client: AsyncKolbo, journal: Path, count: int
) -> None:
    """The journal opens again; every item ends well, each prompt POSTed exactly once."""
    outcomes = await collect(client.videos.generate_many(prompts(count), journal=journal))
    assert sorted(o.index for o in outcomes) == list(range(count))
    assert [o.error for o in outcomes if o.error is not None] == []
    assert posted(sim) == Counter({f"p{i}": 1 for i in range(count)})


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("seed", range(3))
async def test_native_cancels_at_random_moments_never_pay_twice(
    sim: Simulator, client: AsyncKolbo, tmp_path: Path, seed: int
) -> None:
    """`Task.cancel` (what `wait_for` and `asyncio.timeout` do) at a random number of loop
    turns after the run's first request reached Kolbo (the journal is open by then), the batch then
    closed or dropped and collected: 25 runs on one journal, then one to the end."""
    import asyncio

    rnd = random.Random(seed)
    journal = tmp_path / "batch.db"
    count = 30
    for _ in range(25):
        batch = client.videos.generate_many(prompts(count), journal=journal, concurrency=6)
        before = len(sim.requests)
        task = asyncio.ensure_future(collect(batch))
        dropped = weakref.ref(batch)
        for _ in range(5000):  # no request leaves before the journal is open
            if task.done() or len(sim.requests) > before:
                break
            await asyncio.sleep(0.0005)
        for _ in range(rnd.randrange(40)):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if rnd.random() < 0.5:
            await batch.aclose()
        del batch, task
        await collected(dropped)
    assert max(posted(sim).values(), default=0) <= 1
    await rerun_pays_nothing_more(sim, client, journal, count)


async def collected(dropped: weakref.ref[Any]) -> None:
    """Until the dropped batch is collected (its `__del__` lets the journal go). On 3.10 the
    frames of a natively cancelled batch stay referenced by anyio's worker-thread call until
    that call's result reaches the loop: one loop turn with real time in it."""
    for _ in range(400):
        gc.collect()
        if dropped() is None:
            return
        await anyio.sleep(0.005)
    raise AssertionError("the dropped batch was never collected")


@pytest.mark.parametrize("seed", range(3))
async def test_anyio_timeouts_at_random_moments_never_pay_twice(
    sim: Simulator, client: AsyncKolbo, tmp_path: Path, seed: int
) -> None:
    """anyio's own deadlines (trio and asyncio), from before the journal opens to the end:
    40 runs on one journal, half of them dropped without `aclose`."""
    rnd = random.Random(seed)
    journal = tmp_path / "batch.db"
    count = 20
    for _ in range(40):
        batch = client.videos.generate_many(prompts(count), journal=journal, concurrency=5)
        with anyio.move_on_after(rnd.choice([0, 1e-5, 1e-4, 5e-4, 2e-3])):
            await collect(batch)
        if rnd.random() < 0.5:
            await batch.aclose()
        del batch
        gc.collect()
    assert max(posted(sim).values(), default=0) <= 1
    await rerun_pays_nothing_more(sim, client, journal, count)


async def cancel_natively_while_the_journal_opens(
    client: AsyncKolbo, journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Task.cancel` (what `asyncio.wait_for(..., 0.001)` does) while the batch's journal
    opens on a worker thread; that open then ends; the batch is closed and dropped."""
    import asyncio

    real_open = Journal._open
    inside, release, done = threading.Event(), threading.Event(), threading.Event()

    def slow_open(self: Journal) -> Any:
        inside.set()
        assert release.wait(10)
        try:
            return real_open(self)
        finally:
            done.set()

    monkeypatch.setattr(Journal, "_open", slow_open)
    batch = client.videos.generate_many(prompts(2), journal=journal)
    task = asyncio.ensure_future(collect(batch))
    assert await anyio.to_thread.run_sync(inside.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    assert await anyio.to_thread.run_sync(done.wait, 10)
    monkeypatch.setattr(Journal, "_open", real_open)
    await batch.aclose()
    del batch, task
    gc.collect()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_native_cancel_during_the_journal_open_leaves_the_path_usable(
    sim: Simulator, client: AsyncKolbo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same process runs the batch again on that journal: refused as 'in use by another
    batch of this process' (pid of this process) for as long as it lives."""
    journal = tmp_path / "batch.db"
    await cancel_natively_while_the_journal_opens(client, journal, monkeypatch)
    assert generation_posts(sim) == 0
    await rerun_pays_nothing_more(sim, client, journal, 2)


REOPEN_CHILD = """
import sys, anyio
from pathlib import Path
from kolbo_async._journal import Journal

async def main():
    journal = Journal(Path(sys.argv[1]))
    await journal.open()
    await journal.close()
    print("opened")

anyio.run(main)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_native_cancel_during_the_journal_open_leaves_it_to_other_processes(
    client: AsyncKolbo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process (the user's next run, while an app that cancelled one stays up) is
    refused too: the flock and the .lock file of the lost Journal are never released."""
    journal = tmp_path / "batch.db"
    await cancel_natively_while_the_journal_opens(client, journal, monkeypatch)
    child = await anyio.run_process([sys.executable, "-c", REOPEN_CHILD, str(journal)], check=False)
    assert child.returncode == 0, child.stderr.decode()
    assert child.stdout.decode().strip() == "opened"


async def test_a_batch_dropped_mid_write_and_collected_on_another_thread(
    sim: Simulator, client: AsyncKolbo, tmp_path: Path
) -> None:
    """A batch in a reference cycle, dropped while its writes run, collected by a
    `gc.collect()` on another thread (its `__del__` runs there): no crash, the journal is
    free once that write ends, and a rerun pays only for what was not sent."""
    journal = tmp_path / "batch.db"
    count = 12
    for round_ in range(15):
        batch = client.videos.generate_many(prompts(count), journal=journal, concurrency=4)
        holder: dict[str, Any] = {"batch": batch}
        holder["self"] = holder  # a cycle: only the collector frees it
        taken = 0
        async for _ in batch:
            taken += 1
            if taken > round_ % 3:
                break
        del batch, holder
        await anyio.to_thread.run_sync(gc.collect)
        await anyio.lowlevel.checkpoint()
    assert max(posted(sim).values(), default=0) <= 1
    await rerun_pays_nothing_more(sim, client, journal, count)


async def test_break_then_the_same_path_at_once(
    sim: Simulator, client: AsyncKolbo, tmp_path: Path
) -> None:
    """`break` out of the loop, then a new batch on the same journal path right away (no
    `gc.collect()`, no `aclose`): CPython drops the first at once, and the second runs."""
    journal = tmp_path / "batch.db"
    count = 6
    for _ in range(10):
        async for _outcome in client.videos.generate_many(
            prompts(count), journal=journal, concurrency=2
        ):
            break
    assert max(posted(sim).values(), default=0) <= 1
    await rerun_pays_nothing_more(sim, client, journal, count)


CLI_KEY = "kolbo_live_" + "e5" * 20


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
@pytest.mark.parametrize("seed", range(2))
def test_kolbo_batch_ctrl_c_once_or_twice_at_random_moments(tmp_path: Path, seed: int) -> None:
    """`kolbo batch` as a real process, sent SIGINT once or twice (a few ms apart) at a random
    moment after its first request: no traceback, no crash (exit 0 or 130, or death by the
    SIGINT itself once the run has ended: -2, which a shell shows as 130); the runs together
    create each generation once, and a last run ends everything."""
    rnd = random.Random(seed)
    n = 8
    sim = Simulator(speed=100.0, api_key=CLI_KEY)
    sim.plan(processing_seconds=60, times=10 * n)  # 0.6 s each
    requests = tmp_path / "shots.jsonl"
    requests.write_text("".join(json.dumps({"prompt": f"shot {i}"}) + "\n" for i in range(n)))
    argv = ["-m", "kolbo_async", "batch", str(requests), "--journal", str(tmp_path / "j.db"),
            "--download-dir", str(tmp_path / "videos"), "--concurrency", "3"]  # fmt: skip
    with sim.serve() as base_url:
        env = {**os.environ, "KOLBO_BASE_URL": base_url, "KOLBO_API_KEY": CLI_KEY}
        for _ in range(4):
            before = len(sim.requests)
            proc = forked.Popen(
                [sys.executable, *argv], env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            # Once: a second press ("quit now") may end the run by `QUIT_NOW_WITHIN`'s timer,
            # which test_cli_batch_process.py tests on its own; random timing added nothing
            # there but load-dependent outcomes.
            press_ctrl_c_at_random(proc, sim, before, rnd, 0.4, [0], presses=(1,))
            _, err = finish(proc)
            assert proc.returncode in (0, 130, -signal.SIGINT), err
            if proc.returncode == -signal.SIGINT:  # only in the interpreter's own exit
                assert "kolbo: interrupted" in err or f"{n} completed" in err, err
            assert "Traceback" not in err and "Fatal Python error" not in err, err
            assert "Exception ignored" not in err, err
            assert max(Counter(str(g.request["prompt"]) for g in sim.generations.values())
                       .values(), default=0) <= 1  # fmt: skip
        last = forked.run(
            [sys.executable, *argv], env=env, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
    # A POST that "quit now" (the second press) cut off is outcome-unknown: reported, never
    # sent again. Everything else completes; nothing is created twice.
    unknown = last.stdout.count("outcome unknown")
    assert last.returncode == (3 if unknown else 0), last.stderr
    assert f"{n - unknown} completed, {unknown} failed" in last.stderr
    created = Counter(str(g.request["prompt"]) for g in sim.generations.values())
    assert set(created.values()) == {1}
    assert len(created) >= n - unknown
    gen_posts = [r for r in sim.requests if r.method == "POST" and "/generate/" in r.path]
    assert len(gen_posts) == len(created)


def press_ctrl_c_at_random(
    proc: subprocess.Popen[str],
    sim: Simulator,
    before: int,
    rnd: random.Random,
    within: float,
    gaps: list[float],
    presses: tuple[int, ...] = (1, 2),
) -> None:
    """Once `proc` has sent its first request: SIGINT once or twice (`gaps` apart) at a random
    moment up to `within` seconds later, unless it has ended."""
    deadline = time.monotonic() + 30
    while len(sim.requests) == before and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    time.sleep(rnd.uniform(0, within))
    for press in range(rnd.choice(presses)):
        if press:
            time.sleep(rnd.choice(gaps))
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """`proc`'s output once it ends; killed (never left running) if it hangs past 30 s."""
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise


BLOCKING_CHILD = """
import sys
import kolbo_async as k

with k.Kolbo({key!r}, base_url=sys.argv[1], rate_limits=None) as client:
    requests = [k.TextToVideo(f"prompt {{i}}") for i in range(int(sys.argv[3]))]
    for outcome in client.videos.generate_many(requests, journal=sys.argv[2], concurrency=4):
        print("outcome", outcome.index, flush=True)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
def test_blocking_client_ctrl_c_once_or_twice_at_random_moments(tmp_path: Path) -> None:
    """A user's script looping over a journaled batch of the blocking `Kolbo`, sent SIGINT
    once or twice at a random moment: it ends with Python's own KeyboardInterrupt (or runs
    to the end), never a crash or an "Exception ignored"; no intent row is left without its
    id (nothing falsely unknown); a last run ends every item, each generation created once."""
    import sqlite3

    import kolbo_async as k

    rnd = random.Random(5)
    key = "kolbo_live_" + "f6" * 20
    script = tmp_path / "child.py"
    script.write_text(BLOCKING_CHILD.format(key=key))
    journal = tmp_path / "j.db"
    n = 10
    sim = Simulator(speed=100.0, processing_seconds=30, seed=3)
    with sim.serve() as url:
        for _ in range(4):
            before = len(sim.requests)
            proc = forked.Popen(
                [sys.executable, str(script), url, str(journal), str(n)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            press_ctrl_c_at_random(proc, sim, before, rnd, 0.3, [0, 0.001, 0.01])
            out, err = finish(proc)
            assert proc.returncode in (0, -signal.SIGINT), err
            assert "Fatal Python error" not in err and "Exception ignored" not in err, err
            if proc.returncode and "KeyboardInterrupt" not in err:
                # The press landed as Python was exiting (its handlers are reset then): only
                # after the whole run had ended.
                assert out.count("outcome") == n, (out, err)
            with sqlite3.connect(journal) as db:
                rows = db.execute("SELECT state, generation_id FROM items").fetchall()
            db.close()
            assert [row for row in rows if row[1] is None] == []  # no intent without an id
            assert {gen_id for _, gen_id in rows} == set(sim.generations)
        with k.Kolbo(key, base_url=url, rate_limits=None) as client:
            requests = [k.TextToVideo(f"prompt {i}") for i in range(n)]
            outcomes = list(client.videos.generate_many(requests, journal=journal))
    assert [o.error for o in outcomes if o.error is not None] == []
    assert Counter(str(g.request["prompt"]) for g in sim.generations.values()) == Counter(
        {f"prompt {i}": 1 for i in range(n)}
    )


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_aclose_cancelled_natively_then_again_lets_the_journal_go(
    sim: Simulator, client: AsyncKolbo, tmp_path: Path
) -> None:
    import asyncio

    journal = tmp_path / "batch.db"
    batch = client.videos.generate_many(prompts(2), journal=journal)
    await batch.__anext__()
    closing = asyncio.ensure_future(batch.aclose())
    await asyncio.sleep(0)  # aclose has started: it waits on its close
    closing.cancel()  # asyncio.wait_for(batch.aclose(), ...) timing out, an app's shutdown
    with pytest.raises(asyncio.CancelledError):
        await closing
    await batch.aclose()  # the caller tries again, and keeps the batch (a dict, a view)
    await rerun_pays_nothing_more(sim, client, journal, 2)
    del batch
