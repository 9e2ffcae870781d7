"""An adversarial user of the shared batch journal (``generate_many(..., journal=
"postgresql://...", batch_id=..., lease=...)``): real worker processes, a real PostgreSQL
server and the simulator served over HTTP. Each test attacks one promise: never pay twice,
never lose an item, every item exactly one outcome across workers, errors are `KolboError`s.
"""

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

from kolbo_async.testing import Simulator

from . import forked
from .test_journal_pg import batch_name, rows
from .test_journal_pg import own_database as own_database  # noqa: PLC0414
from .test_journal_pg import postgres_url as postgres_url  # noqa: PLC0414

pytest.importorskip("uvicorn")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

KEY = "kolbo_live_" + "a7" * 20
ROOT = Path(__file__).resolve().parent.parent
SPEED = 30.0

WORKER = textwrap.dedent(
    """
    import faulthandler, json, sys
    import anyio
    faulthandler.dump_traceback_later(60, exit=True)
    from kolbo_async import AsyncKolbo, Kolbo, RateLimits, TextToVideo

    args = json.loads(sys.argv[1])
    prompts = args["prompts"]
    requests = [TextToVideo(p) for p in prompts]
    limits = RateLimits(1000, 100_000, store=args["store"])
    options = dict(journal=args["journal"], batch_id=args["batch"], lease=args["lease"],
                   concurrency=args["concurrency"])
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


def simulator(**kwargs: Any) -> Simulator:
    options: dict[str, Any] = {
        "speed": SPEED,
        "processing_seconds": 60,
        "pending_seconds": 3,
        "seed": 5,
        "rate_limits": True,
        "generations_per_minute": 1000,
    }
    options.update(kwargs)
    return Simulator(**options)


class Worker:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.out = ""
        self.err = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def finish(self, timeout: float = 60) -> Worker:
        self.out, self.err = self.proc.communicate(timeout=timeout)
        return self

    @property
    def outcomes(self) -> list[list[Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.startswith("[")]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    started: list[Worker] = []
    store = f"sqlite:///{tmp_path / 'rates.db'}"

    def start(
        url: str,
        journal: str,
        batch: str,
        prompts: list[str],
        *,
        mode: str = "asyncio",
        lease: float = 2.0,
        concurrency: int = 4,
    ) -> Worker:
        args = {
            "url": url,
            "journal": journal,
            "batch": batch,
            "prompts": prompts,
            "lease": lease,
            "concurrency": concurrency,
            "mode": mode,
            "key": KEY,
            "store": store,
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
                pipe.close()  # else collected in a later test: a ResourceWarning fails it


def post_counts(sim: Simulator) -> Counter[str]:
    # A POST cut off mid-body by a SIGKILL reaches the server without JSON (and is refused).
    return Counter(
        str(r.json["prompt"])
        for r in sim.requests
        if r.method == "POST" and r.path.startswith("/api/v1/generate/video") and r.json
    )


def wait_for(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return found


def owned_by(url: str, batch: str, pid: int, states: tuple[str, ...]) -> list[Any]:
    import psycopg

    try:
        found = rows(url, batch)
    except psycopg.errors.UndefinedTable:  # no worker created the tables yet
        return []
    return [r for r in found if r[4] and int(r[4].split(":")[1]) == pid and r[1] in states and r[5]]


def clean(worker: Worker) -> None:
    assert worker.proc.returncode == 0, worker.err
    assert "Traceback" not in worker.err, worker.err
    assert "Exception in thread" not in worker.err, worker.err
    assert KEY[11:31] not in worker.err + worker.out


# -- promises that hold --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_reordered_lists_with_duplicates_each_item_once(postgres_url: str, spawn: Any) -> None:
    """Three workers pass the same prompts (some repeated three times) in three different
    orders: each list position is one item; every worker's `index` points into its own list;
    a prompt is POSTed exactly as many times as it occurs; nobody yields an item twice."""
    base = [f"dup {i % 4}" for i in range(12)] + [f"solo {i}" for i in range(8)]
    orders = [base, base[::-1], base[7:] + base[:7]]
    batch = batch_name()
    sim = simulator()
    with sim.serve() as url:
        workers = [
            spawn(url, postgres_url, batch, order, mode=mode)
            for order, mode in zip(orders, ["asyncio", "trio", "blocking"], strict=True)
        ]
        for worker in workers:
            clean(worker.finish())
    yielded = [(w, o) for w in workers for o in w.outcomes]
    assert all(o[1] is None for _, o in yielded)
    # Each yielded index names the prompt the worker printed, in its own list.
    for worker, order in zip(workers, orders, strict=True):
        assert all(order[o[0]] == o[3] for o in worker.outcomes)
    assert Counter(o[3] for _, o in yielded) == Counter(base)
    assert post_counts(sim) == Counter(base)
    assert len({o[2] for _, o in yielded}) == len(base)  # distinct generations


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_other_list_under_the_same_batch_id_is_refused_before_sending(
    postgres_url: str, spawn: Any
) -> None:
    """A worker whose list differs (one prompt fewer, or one duplicate more) is refused with
    a `KolboError` naming the batch and sends nothing."""
    batch = batch_name()
    sim = simulator()
    with sim.serve() as url:
        first = spawn(url, postgres_url, batch, [f"p {i}" for i in range(4)])
        clean(first.finish())
        before = len(sim.requests)
        fewer = spawn(url, postgres_url, batch, [f"p {i}" for i in range(3)]).finish()
        more = spawn(url, postgres_url, batch, [f"p {i}" for i in range(4)] + ["p 0"]).finish()
    for worker in (fewer, more):
        assert worker.proc.returncode != 0
        assert "KolboError" in worker.err and "other requests" in worker.err
        assert batch in worker.err and "Nothing was sent" in worker.err
        assert KEY[11:31] not in worker.err
    assert len(sim.requests) == before


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_pg_terminate_backend_repeatedly_loses_nothing(own_database: str, spawn: Any) -> None:
    """Every journal connection of the workers is killed server-side
    (``pg_terminate_backend``) every 0.3 s while three workers run 24 prompts: each prompt
    is POSTed once and has exactly one outcome, all successful."""
    import psycopg

    # A database of its own: the storm kills every journal connection of it, and other
    # tests' workers (running at the same time under -n 4) use another.

    batch = batch_name()
    prompts = [f"term {i}" for i in range(24)]
    sim = simulator()
    kills = 0
    with sim.serve() as url, psycopg.connect(own_database, autocommit=True) as admin:
        workers = [
            spawn(url, own_database, batch, prompts, mode=mode, lease=2.0)
            for mode in ["asyncio", "trio", "blocking"]
        ]
        deadline = time.monotonic() + 60
        while any(w.proc.poll() is None for w in workers) and time.monotonic() < deadline:
            # Both the batch's connections and the lease renewers' (unnamed) ones.
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database() "
                "AND (application_name = 'kolbo-async journal' OR "
                "(application_name = '' AND backend_type = 'client backend'))"
            ).fetchone()
            kills += int(killed[0]) if killed else 0
            time.sleep(0.3)
        for worker in workers:
            clean(worker.finish())
    assert kills >= 5
    yielded = [o for w in workers for o in w.outcomes]
    assert sorted(o[3] for o in yielded) == sorted(prompts)
    assert all(o[1] is None for o in yielded)
    assert post_counts(sim) == Counter(prompts)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sigint_to_a_blocking_worker_then_the_others_finish(postgres_url: str, spawn: Any) -> None:
    """Ctrl-C (SIGINT) to a blocking worker mid-batch: it stops within seconds, with no
    traceback from a thread; the other workers (and a replacement started under the same
    batch_id while its leases may still be held) finish every item it did not hand out;
    nothing is POSTed twice; every item gets exactly one outcome."""
    batch = batch_name()
    prompts = [f"int {i}" for i in range(20)]
    sim = simulator()
    with sim.serve() as url:
        victim = spawn(url, postgres_url, batch, prompts, mode="blocking", lease=1.5)
        other = spawn(url, postgres_url, batch, prompts, mode="trio", lease=1.5)
        wait_for(lambda: sum(post_counts(sim).values()) >= 6)
        os.kill(victim.pid, signal.SIGINT)
        stopped = time.monotonic()
        victim.finish(timeout=20)
        assert time.monotonic() - stopped < 10
        replacement = spawn(url, postgres_url, batch, prompts, mode="asyncio", lease=1.5)
        clean(other.finish())
        clean(replacement.finish())
    assert victim.proc.returncode != 0
    assert "Exception in thread" not in victim.err, victim.err
    assert KEY[11:31] not in victim.err
    yielded = [o for w in (victim, other, replacement) for o in w.outcomes]
    counts = Counter(o[3] for o in yielded)
    assert counts == Counter(prompts), counts  # each exactly once
    assert set(post_counts(sim).values()) <= {1}
    unknown = {o[3] for o in yielded if o[1] == "SubmissionOutcomeUnknownError"}
    assert {p for p in prompts if p not in post_counts(sim)} <= unknown


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_kill_9_right_after_claims_nothing_lost_nothing_twice(
    postgres_url: str, spawn: Any
) -> None:
    """A worker is SIGKILLed the moment it holds claims (between its claim's commit and its
    POSTs' answers): a worker started later under the same batch_id finishes everything
    once the lease ran out; nothing POSTed twice; each item exactly one outcome (the dead
    worker's unanswered claims as outcome-unknown, never sent again)."""
    batch = batch_name()
    prompts = [f"k9 {i}" for i in range(12)]
    sim = simulator()
    sim.faults.slow_seconds = 3.0
    with sim.serve() as url:
        sim.inject("generate", "slow", times=2)
        victim = spawn(url, postgres_url, batch, prompts, lease=1.0)
        wait_for(lambda: owned_by(postgres_url, batch, victim.pid, ("intent",)), 20)
        victim.proc.kill()
        victim.finish()
        rescuer = spawn(url, postgres_url, batch, prompts, lease=1.0, mode="trio")
        clean(rescuer.finish())
    yielded = [o for w in (victim, rescuer) for o in w.outcomes]
    assert Counter(o[3] for o in yielded) == Counter(prompts)
    assert set(post_counts(sim).values()) <= {1}
    for prompt in prompts:
        if prompt not in post_counts(sim):
            assert [o[1] for o in yielded if o[3] == prompt] == ["SubmissionOutcomeUnknownError"]


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_journal_database_missing_or_forbidden_is_a_clear_kolbo_error(
    postgres_url: str, spawn: Any
) -> None:
    """A journal URL naming a database that does not exist, or a role that may not create
    the tables, ends the worker with a `KolboError` that says why (no password, no key, no
    traceback from a thread), having sent nothing."""
    from urllib.parse import urlsplit

    import psycopg

    role = f"kolbo_adv_{os.getpid()}_{time.time_ns() % 10**6}"
    dbname = f"kolbo_adv_db_{os.getpid()}_{time.time_ns() % 10**6}"
    parts = urlsplit(postgres_url)
    host = f"{parts.hostname}:{parts.port}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'sekret-pw-77'")
        admin.execute(f"CREATE DATABASE {dbname}")
    try:
        # In a fresh database owned by postgres, PG >= 15 denies CREATE on public to others.
        forbidden = f"postgresql://{role}:sekret-pw-77@{host}/{dbname}"
        with psycopg.connect(forbidden) as probe:
            probe.execute("SELECT 1")
        with psycopg.connect(
            postgres_url.rsplit("/", 1)[0] + f"/{dbname}", autocommit=True
        ) as owner:
            owner.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        missing = f"postgresql://{role}:sekret-pw-77@{host}/no_such_db_{os.getpid()}"
        sim = simulator()
        with sim.serve() as url:
            started = time.monotonic()
            denied = spawn(url, forbidden, batch_name(), ["x 0"], lease=1.0).finish()
            denied_took = time.monotonic() - started
            started = time.monotonic()
            absent = spawn(url, missing, batch_name(), ["x 0"], lease=1.0).finish()
            absent_took = time.monotonic() - started
        assert not [r for r in sim.requests if r.method == "POST"]
        for worker in (denied, absent):
            assert worker.proc.returncode != 0
            assert "kolbo_async._exceptions.KolboError" in worker.err or "KolboError" in worker.err
            assert "sekret-pw-77" not in worker.err and KEY[11:31] not in worker.err
            assert "Exception in thread" not in worker.err
        assert "permission denied" in denied.err
        assert "does not exist" in absent.err
        assert denied_took < 15
        assert absent_took < 15  # said at once, not retried like a server that is down
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {dbname}")
            admin.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_lease_of_0_2_s_outlives_slow_posts(postgres_url: str, spawn: Any) -> None:
    """Leases of 0.2 s while POSTs take 1.5 s to be answered (three workers, 12 prompts, six
    slow POSTs): a living worker's leases are renewed, so nobody takes over an item whose
    POST is still on its way; each prompt POSTed once, exactly one outcome, all successful."""
    batch = batch_name()
    prompts = [f"short {i}" for i in range(12)]
    sim = simulator()
    sim.faults.slow_seconds = 1.5
    with sim.serve() as url:
        sim.inject("generate", "slow", times=6)
        workers = [
            spawn(url, postgres_url, batch, prompts, mode=mode, lease=0.2)
            for mode in ["asyncio", "trio", "blocking"]
        ]
        for worker in workers:
            clean(worker.finish())
    assert len([r for r in sim.requests if r.fault == "slow"]) == 6
    yielded = [o for w in workers for o in w.outcomes]
    assert Counter(o[3] for o in yielded) == Counter(prompts), yielded
    assert all(o[1] is None for o in yielded)
    assert post_counts(sim) == Counter(prompts)
