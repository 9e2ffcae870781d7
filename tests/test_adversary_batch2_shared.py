"""An adversarial user of shared batches (``journal="postgresql://..."``, `batch_id`) whose
items are claimed before they wait for their place in the generation window: a worker that
halts (INSUFFICIENT_CREDITS) while it holds claimed items gives them back and raises, and a
task queue's redelivery finishes the batch: one outcome per item across all runs, nothing
paid twice. Real worker processes, a real PostgreSQL, the simulator served over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import forked
from .test_adversary_shared_journal import KEY, ROOT, Worker, post_counts, simulator, wait_for
from .test_journal_pg import batch_name, rows
from .test_journal_pg import own_database as own_database  # noqa: PLC0414
from .test_journal_pg import postgres_url as postgres_url  # noqa: PLC0414

pytest.importorskip("uvicorn")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# As test_adversary_shared_journal's worker, with the generation rate a parameter: at 3 a
# minute (on a store the workers share) the 4th item waits a minute for its place.
WORKER = textwrap.dedent(
    """
    import faulthandler, json, sys
    import anyio
    faulthandler.dump_traceback_later(60, exit=True)
    from kolbo_async import AsyncKolbo, Kolbo, RateLimits, TextToVideo

    args = json.loads(sys.argv[1])
    prompts = args["prompts"]
    requests = [TextToVideo(p) for p in prompts]
    limits = RateLimits(args["gpm"], 100_000, store=args["store"])
    options = dict(journal=args["journal"], batch_id=args["batch"], lease=args["lease"],
                   concurrency=4)
    print("started", flush=True)

    def emit(outcome):
        error = type(outcome.error).__name__ if outcome.error else None
        gen = outcome.generation.id if outcome.generation else None
        print(json.dumps([outcome.index, error, gen, prompts[outcome.index]]), flush=True)

    if args["mode"] == "blocking":
        with Kolbo(args["key"], base_url=args["url"], rate_limits=limits) as client:
            for outcome in client.videos.generate_many(requests, **options):
                emit(outcome)
    else:
        async def main():
            async with AsyncKolbo(args["key"], base_url=args["url"], rate_limits=limits) as c:
                async for outcome in c.videos.generate_many(requests, **options):
                    emit(outcome)
        anyio.run(main, backend=args["mode"])
    """
)


@pytest.fixture
def spawn(tmp_path: Path, postgres_url: str) -> Iterator[Any]:
    started: list[Worker] = []
    shared = f"sqlite:///{tmp_path / 'rates.db'}"

    def start(
        url: str,
        batch: str,
        prompts: list[str],
        *,
        mode: str = "asyncio",
        gpm: int = 1000,
        lease: float = 2.0,
        journal: str | None = None,
    ) -> Worker:
        args = {
            "url": url,
            "journal": journal or postgres_url,
            "batch": batch,
            "prompts": prompts,
            "lease": lease,
            "mode": mode,
            "key": KEY,
            "gpm": gpm,
            "store": shared if gpm < 1000 else None,
        }
        proc = forked.Popen(
            [sys.executable, "-c", WORKER, json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        worker = Worker(proc)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            os.kill(worker.pid, signal.SIGCONT)
            worker.proc.kill()
            worker.proc.communicate()
        for pipe in (worker.proc.stdout, worker.proc.stderr):
            if pipe is not None:
                pipe.close()


def one_outcome_each(workers: list[Worker], prompts: list[str]) -> Counter[str]:
    yielded = [o for w in workers for o in w.outcomes]
    assert Counter(o[3] for o in yielded) == Counter(prompts), [w.outcomes for w in workers]
    return Counter(o[1] for o in yielded)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["asyncio", "trio", "blocking"])
def test_halt_while_an_item_waits_for_admission_then_redelivery(
    postgres_url: str, spawn: Any, mode: str
) -> None:
    """Items 0 and 1 are POSTed, item 2's POST is answered INSUFFICIENT_CREDITS after 1.5 s
    while item 3 is claimed and waits a minute for its place (3 a minute): the worker gives
    item 3 back (not reported by it), gives the refusal, and raises; a redelivered worker
    sends the rest once and re-attaches 0 and 1. One outcome per item, nothing paid twice."""
    batch = batch_name()
    prompts = [f"halt {i}" for i in range(8)]
    sim = simulator()
    answer = sim.handle

    def handle(request: Any) -> Any:
        if request.method == "POST" and b'"halt 2"' in request.body:
            time.sleep(1.5)  # item 3 is claimed meanwhile (its POST waits for its minute)
            sim.inject("generate", "insufficient_credits")
        return answer(request)

    sim.handle = handle  # type: ignore[method-assign]
    with sim.serve() as url:
        first = spawn(url, batch, prompts, mode=mode, gpm=3)
        wait_for(lambda: [r for r in rows(postgres_url, batch) if r[0] == 3 and r[1] == "claimed"])
        first.finish(timeout=20)
        assert first.proc.returncode != 0
        assert "InsufficientCreditsError" in first.err
        assert "Exception in thread" not in first.err
        assert [o[0] for o in first.outcomes] == [2]
        again = spawn(url, batch, prompts, mode="trio").finish(timeout=20)
        assert again.proc.returncode == 0, again.err
    errors = one_outcome_each([first, again], prompts)
    assert errors == Counter({None: 7, "InsufficientCreditsError": 1})
    assert post_counts(sim) == Counter(prompts)  # the refused one once, each other once
    assert len(sim.generations) == 7


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_insufficient_credits_for_every_worker_then_redelivered_until_done(
    postgres_url: str, spawn: Any
) -> None:
    """Three workers run 16 prompts; after four POSTs the account runs dry (every POST is
    refused): each worker raises once its outcomes in hand are given. Credits come back and
    the task queue redelivers each failed worker until one ends cleanly: every item exactly
    one outcome across all runs; nothing paid twice; the refused ones were never charged."""
    batch = batch_name()
    prompts = [f"dry {i}" for i in range(16)]
    sim = simulator()
    sim.faults.slow_seconds = 0.5
    with sim.serve() as url:
        sim.inject("generate", "slow", times=6)
        workers = [spawn(url, batch, prompts, mode=m) for m in ("asyncio", "trio", "blocking")]
        wait_for(lambda: sum(post_counts(sim).values()) >= 4)
        sim.faults.insufficient_credits = True
        for worker in workers:
            worker.finish(timeout=30)
        failed = [w for w in workers if w.proc.returncode != 0]
        assert failed
        for worker in failed:
            assert "InsufficientCreditsError" in worker.err, worker.err
        sim.faults.insufficient_credits = False
        runs = list(workers)
        for _ in range(3):
            if not failed:
                break
            redelivered = [spawn(url, batch, prompts, mode="trio").finish(30) for _ in failed]
            runs += redelivered
            failed = [w for w in redelivered if w.proc.returncode != 0]
        assert not failed, [w.err for w in failed]
    errors = one_outcome_each(runs, prompts)
    assert set(errors) <= {None, "InsufficientCreditsError"}
    charged = Counter(str(g.request["prompt"]) for g in sim.generations.values())
    assert set(charged.values()) == {1}
    refused = {o[3] for w in runs for o in w.outcomes if o[1]}
    assert not refused & set(charged)
    assert refused | set(charged) == set(prompts)


def terminate_journal_backends(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database() "
            "AND (application_name = 'kolbo-async journal' OR "
            "(application_name = '' AND backend_type = 'client backend'))"
        ).fetchone()
    return int(killed[0]) if killed else 0


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("storm", [False, True])
def test_sigint_while_claims_wait_for_admission_gives_them_back(
    postgres_url: str, own_database: str, spawn: Any, storm: bool
) -> None:
    """Three workers share 3 generations a minute: the first three items are POSTed, each
    worker's next claims wait for their place. Ctrl-C to every worker (with every journal
    connection killed server-side every 50 ms meanwhile, or not): the waiting claims go back
    unsent, and a redelivered worker sends each of them once; nothing is reported
    outcome-unknown, nothing paid twice."""
    # The storm kills every journal connection of its database: one of its own, so that
    # other tests' workers (running at the same time under -n 4) are not hit.
    journal = own_database if storm else postgres_url
    batch = batch_name()
    prompts = [f"int {i}" for i in range(10)]
    sim = simulator()
    with sim.serve() as url:
        workers = [spawn(url, batch, prompts, mode=m, gpm=3, journal=journal)
                   for m in ("asyncio", "trio")]  # fmt: skip
        workers.append(spawn(url, batch, prompts, mode="blocking", gpm=3, journal=journal))
        wait_for(lambda: len(post_counts(sim)) == 3)

        # Ctrl-C once the three answers are recorded, not merely received by Kolbo: this test
        # is about the claims waiting for admission. Ctrl-C while a POST waits for its answer
        # is test_ctrl_c_mid_post.py's (on trio it lost the id until the fix it names).
        def ready() -> bool:
            found = rows(journal, batch)
            answered = [r for r in found if r[2] is not None]  # generation id recorded
            return len(answered) == 3 and len([r for r in found if r[1] == "claimed"]) >= 3

        wait_for(ready)
        kills = 0
        if storm:
            kills += terminate_journal_backends(journal)
        for worker in workers:
            os.kill(worker.pid, signal.SIGINT)
        deadline = time.monotonic() + 20
        while any(w.proc.poll() is None for w in workers):
            assert time.monotonic() < deadline
            if storm:
                kills += terminate_journal_backends(journal)
            time.sleep(0.05)
        for worker in workers:
            worker.finish(timeout=5)
            assert "Exception in thread" not in worker.err, worker.err
            assert "Exception ignored" not in worker.err, worker.err
        again = spawn(url, batch, prompts, mode="trio", journal=journal).finish(timeout=30)
        assert again.proc.returncode == 0, again.err
    assert not storm or kills >= 1
    errors = one_outcome_each([*workers, again], prompts)
    assert errors == Counter({None: len(prompts)}), [w.outcomes for w in (*workers, again)]
    assert post_counts(sim) == Counter(prompts)


STOPS_EARLY = textwrap.dedent(
    """
    import json, sys, anyio
    from kolbo_async import AsyncKolbo, Kolbo, RateLimits, TextToVideo
    a = json.loads(sys.argv[1])
    reqs = [TextToVideo(p) for p in a["prompts"]]
    limits = RateLimits(3, 100_000)
    opts = dict(journal=a["journal"], batch_id=a["batch"], lease=1.0, concurrency=4)

    def emit(o):
        print(json.dumps([o.index, None, o.generation.id, a["prompts"][o.index]]), flush=True)

    if a["mode"] == "blocking":
        with Kolbo(a["key"], base_url=a["url"], rate_limits=limits) as c:
            b = c.videos.generate_many(reqs, **opts)
            for o in b:
                emit(o)
                break
            if a["how"] == "close":
                b.close()
            if a["how"] == "del":
                del b
    else:
        async def main():
            async with AsyncKolbo(a["key"], base_url=a["url"], rate_limits=limits) as c:
                b = c.videos.generate_many(reqs, **opts)
                async for o in b:
                    emit(o)
                    break
                if a["how"] == "close":
                    await b.aclose()
        anyio.run(main, backend=a["mode"])
    """
)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("mode", "how"),
    [("asyncio", "break"), ("asyncio", "close"), ("blocking", "close"), ("blocking", "del")],
)
def test_leaving_a_shared_batch_while_a_claim_waits_gives_it_back(
    postgres_url: str, spawn: Any, mode: str, how: str
) -> None:
    """A worker (3 generations a minute) leaves the loop after its first outcome (``break``,
    then `close`/`aclose` or ``del``) while item 3 is claimed and waits for its place, and exits: item 3
    is not left as an intent (which the next worker would end as outcome-unknown) but goes
    back; the next worker sends 3.. once and re-attaches the rest. One outcome per item."""
    batch = batch_name()
    prompts = [f"leave {i}" for i in range(6)]
    sim = simulator()
    with sim.serve() as url:
        args = {"url": url, "journal": postgres_url, "batch": batch, "prompts": prompts,
                "mode": mode, "key": KEY, "how": how}  # fmt: skip
        proc = forked.Popen(
            [sys.executable, "-c", STOPS_EARLY, json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        first = Worker(proc).finish(timeout=30)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        assert proc.returncode == 0, first.err
        assert len(first.outcomes) == 1
        assert not [r for r in rows(postgres_url, batch) if r[1] in ("intent", "claimed")]
        again = spawn(url, batch, prompts, mode="trio").finish(timeout=30)
        assert again.proc.returncode == 0, again.err
    errors = one_outcome_each([first, again], prompts)
    assert errors == Counter({None: len(prompts)})
    assert post_counts(sim) == Counter(prompts)
