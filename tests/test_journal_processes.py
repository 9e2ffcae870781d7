"""One journal, several processes: only one run holds it, and a killed run lets it go."""

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

KEY = "kolbo_live_" + "e5" * 20
SPEED = 100.0
LIMITS = RateLimits(generations_per_minute=int(10 * SPEED), requests_per_minute=int(300 * SPEED))

CHILD = textwrap.dedent(
    """
    import sys, anyio
    from kolbo_async import AsyncKolbo, KolboError, RateLimits, TextToVideo

    async def main(url, journal, items):
        limits = RateLimits(generations_per_minute={gpm}, requests_per_minute={rpm})
        async with AsyncKolbo({key!r}, base_url=url, rate_limits=limits) as client:
            requests = [TextToVideo(f"prompt {{i}}") for i in range(int(items))]
            try:
                async for outcome in client.videos.generate_many(requests, journal=journal):
                    print("outcome", outcome.index, flush=True)
            except KolboError as error:
                print("REFUSED", error, flush=True)
                sys.exit(3)

    anyio.run(main, *sys.argv[1:4])
    """
).format(gpm=LIMITS.generations_per_minute, rpm=LIMITS.requests_per_minute, key=KEY)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


def created(sim: Simulator) -> Counter[str]:
    """Generations Kolbo created (and charged for), per prompt."""
    return Counter(str(g.request["prompt"]) for g in sim.generations.values())


def posts(sim: Simulator) -> list[object]:
    """Generation POSTs the simulator received."""
    return [r for r in sim.requests if r.method == "POST" and "/generate/video" in r.path]


def start(script: Path, url: str, journal: Path, items: int) -> subprocess.Popen[str]:
    return forked.Popen(
        [sys.executable, str(script), url, str(journal), str(items)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow
def test_overlapping_runs_pay_once(tmp_path: Path) -> None:
    """Two processes start the same batch on one journal at once (an overlapping cron job):
    one runs it, the other is refused before sending anything."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    journal = tmp_path / "batch.db"
    items = 6
    sim = Simulator(speed=SPEED, processing_seconds=300, seed=3)  # ~3 s of real time
    with sim.serve() as url:
        children = [start(script, url, journal, items) for _ in range(2)]
        results = [child.communicate(timeout=60) for child in children]
    codes = sorted(child.returncode for child in children)
    assert codes == [0, 3], results
    refused = next(out for child, (out, _) in zip(children, results, strict=True)
                   if child.returncode == 3)  # fmt: skip
    # Started together, the refused run may look before the holder has written its note
    # (pid, host): then it says "another run". The next test checks the pid is named.
    assert "is in use by" in refused
    assert str(journal) in refused
    assert created(sim) == {f"prompt {i}": 1 for i in range(items)}
    assert len(posts(sim)) == items  # the refused run sent nothing at all


def _recorded(journal: Path) -> int:
    """How many rows of the journal hold a generation id (read beside the run holding it)."""
    with closing(sqlite3.connect(journal, timeout=5)) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM items WHERE generation_id IS NOT NULL"
        ).fetchone()
    return int(count)


def test_rerun_while_running_is_refused_and_kill_releases(tmp_path: Path) -> None:
    """A rerun while the first run still works is refused (naming its pid) with no request
    sent; once that run is killed with SIGKILL the journal is free, and nothing is paid twice."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    journal = tmp_path / "batch.db"
    items = 4
    sim = Simulator(speed=SPEED, processing_seconds=100_000, seed=5)  # never ends by itself
    requests = [TextToVideo(f"prompt {i}") for i in range(items + 1)]
    with sim.serve() as url:
        child = start(script, url, journal, items)
        try:
            deadline = time.monotonic() + 30
            while sum(created(sim).values()) < items:
                assert child.poll() is None, child.communicate()
                assert time.monotonic() < deadline, "the child never got going"
                time.sleep(0.01)
            seen = len(posts(sim))  # the child goes on polling: count POSTs
            with (
                k.Kolbo(KEY, base_url=url, rate_limits=LIMITS) as client,
                pytest.raises(k.KolboError, match="in use") as info,
            ):
                list(client.videos.generate_many(requests, journal=journal))
            assert f"pid {child.pid}" in str(info.value)
            assert len(posts(sim)) == seen == items
            # Killed only once the child recorded every answer (a kill between Kolbo's answer
            # and its record would rightly leave that item outcome-unknown).
            while _recorded(journal) < items:
                assert time.monotonic() < deadline, "the child never recorded its answers"
                time.sleep(0.01)
        finally:
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=10)
        assert child.returncode == -signal.SIGKILL
        for generation_id in list(sim.generations):
            sim.complete(generation_id)
        with k.Kolbo(KEY, base_url=url, rate_limits=LIMITS) as client:
            outcomes = list(client.videos.generate_many(requests[:items], journal=journal))
    assert sorted(o.index for o in outcomes) == list(range(items))
    assert all(o.error is None for o in outcomes)
    assert created(sim) == {f"prompt {i}": 1 for i in range(items)}


@pytest.mark.slow
@pytest.mark.parametrize("link", ["symlink", "hard link"])
def test_overlapping_runs_through_a_link_pay_once(tmp_path: Path, link: str) -> None:
    """The overlapping cron job reaches the journal by another name (a symlink or a hard
    link from another directory): still one run, and one generation per item."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    journal = tmp_path / "dir1" / "batch.db"
    alias = tmp_path / "dir2" / "alias.db"
    journal.parent.mkdir()
    alias.parent.mkdir()
    journal.touch()
    (os.symlink if link == "symlink" else os.link)(journal, alias)
    items = 6
    sim = Simulator(speed=SPEED, processing_seconds=300, seed=7)
    with sim.serve() as url:
        children = [start(script, url, path, items) for path in (journal, alias)]
        results = [child.communicate(timeout=60) for child in children]
    assert sorted(child.returncode for child in children) == [0, 3], results
    assert any("in use" in out for out, _ in results)
    assert created(sim) == {f"prompt {i}": 1 for i in range(items)}
    assert len(posts(sim)) == items


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the file itself is locked on Linux"
)
def test_a_deleted_lock_file_lets_no_second_run_in(tmp_path: Path) -> None:
    """Deleting ``batch.db.lock`` while a run holds the journal does not let a second run
    in: the database file itself is locked too."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    journal = tmp_path / "batch.db"
    items = 3
    sim = Simulator(speed=SPEED, processing_seconds=100_000, seed=9)  # never ends by itself
    with sim.serve() as url:
        child = start(script, url, journal, items)
        try:
            deadline = time.monotonic() + 30
            while sum(created(sim).values()) < items:
                assert child.poll() is None, child.communicate()
                assert time.monotonic() < deadline, "the child never got going"
                time.sleep(0.01)
            (tmp_path / "batch.db.lock").unlink()
            seen = len(posts(sim))
            requests = [TextToVideo(f"prompt {i}") for i in range(items + 2)]
            with (
                k.Kolbo(KEY, base_url=url, rate_limits=LIMITS) as client,
                pytest.raises(k.KolboError, match="in use"),
            ):
                list(client.videos.generate_many(requests, journal=journal))
            assert len(posts(sim)) == seen == items
        finally:
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=10)
    assert created(sim) == {f"prompt {i}": 1 for i in range(items)}


SIGINT_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import kolbo_async as k
    from kolbo_async import _journal

    real = _journal.Journal._write
    pressed = []

    def write(self, *args):
        real(self, *args)
        if not pressed:  # one Ctrl-C, between the first intent and its POST
            pressed.append(os.kill(os.getpid(), signal.SIGINT))

    _journal.Journal._write = write
    with k.Kolbo({key!r}, base_url=sys.argv[1], rate_limits=None) as client:
        requests = [k.TextToVideo(f"prompt {{i}}") for i in range(int(sys.argv[3]))]
        for outcome in client.videos.generate_many(requests, journal=sys.argv[2], concurrency=6):
            print("outcome", outcome.index, flush=True)
    """
).format(key=KEY)


@pytest.mark.slow
def test_ctrl_c_before_the_post_leaves_no_false_unknown(tmp_path: Path) -> None:
    """A real SIGINT into a blocking journaled batch while it writes an intent: the POSTs
    that never left take their intents back, so the rerun sends them (once) instead of
    reporting them as outcome-unknown; every POST Kolbo got is recorded with its id."""
    script = tmp_path / "child.py"
    script.write_text(SIGINT_CHILD)
    journal = tmp_path / "batch.db"
    items = 6
    sim = Simulator(speed=SPEED, processing_seconds=5, seed=11)
    with sim.serve() as url:
        child = forked.run(
            [sys.executable, str(script), url, str(journal), str(items)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert child.returncode != 0, child  # interrupted
        assert "KeyboardInterrupt" in child.stderr
        with closing(sqlite3.connect(journal)) as db:
            rows = db.execute("SELECT state, generation_id FROM items").fetchall()
        assert [row for row in rows if row[0] == "intent"] == []
        assert {gen_id for _, gen_id in rows} == set(sim.generations)  # all known by id
        with k.Kolbo(KEY, base_url=url, rate_limits=LIMITS) as client:
            requests = [TextToVideo(f"prompt {i}") for i in range(items)]
            outcomes = list(client.videos.generate_many(requests, journal=journal))
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    assert created(sim) == {f"prompt {i}": 1 for i in range(items)}
