"""Bugs an adversarial pass found in the shared journal and the shared budget, each a test
that failed before its fix: a worker paused past its lease gives nothing another worker took
over (and writes nothing over it); a shared batch whose journal fails stops with an error,
not a quiet, successful-looking end; a lease past a day is refused; a SQLite store that can
never be opened is refused at once. Real processes and a real PostgreSQL."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

import pytest

from kolbo_async import AsyncKolbo, InvalidRequestError, RateLimits

from .test_adversary_shared_journal import (
    clean,
    owned_by,
    post_counts,
    simulator,
    wait_for,
)
from .test_adversary_shared_journal import spawn as spawn  # noqa: PLC0414
from .test_adversary_shared_rates import fresh_key
from .test_journal_pg import batch_name
from .test_journal_pg import postgres_url as postgres_url  # noqa: PLC0414


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_worker_paused_past_its_lease_gives_nothing_another_worker_took(
    postgres_url: str, spawn: Any
) -> None:
    """A worker frozen (SIGSTOP: a VM pause, a cgroup freeze, swap) for longer than its lease
    while it waits on generations it POSTed: another worker takes its items over and yields
    them; the first one, thawed, checks each outcome is still its own and gives none of
    them. One outcome per item, nothing paid twice."""
    batch = batch_name()
    prompts = [f"pause {i}" for i in range(4)]
    sim = simulator()
    with sim.serve() as url:
        first = spawn(url, postgres_url, batch, prompts, lease=1.0)
        wait_for(lambda: len(owned_by(postgres_url, batch, first.pid, ("submitted",))) == 4, 20)
        os.kill(first.pid, signal.SIGSTOP)
        try:
            second = spawn(url, postgres_url, batch, prompts, lease=1.0, mode="trio")
            clean(second.finish(timeout=40))
        finally:
            os.kill(first.pid, signal.SIGCONT)
        clean(first.finish())
    assert post_counts(sim) == Counter(prompts)  # nothing paid twice: holds
    yielded = Counter(o[3] for w in (first, second) for o in w.outcomes)
    assert yielded == Counter(prompts), (first.outcomes, second.outcomes)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_worker_paused_mid_post_writes_nothing_over_the_taker(
    postgres_url: str, spawn: Any
) -> None:
    """Frozen mid-POST past its lease: the other worker reports the item outcome-unknown;
    the thawed worker gets Kolbo's answer, but the row is no longer its own: it writes
    nothing over it (a WARNING names the generation) and yields nothing for the item."""
    batch = batch_name()
    prompts = ["mid 0"]
    sim = simulator()
    sim.faults.slow_seconds = 2.0
    with sim.serve() as url:
        sim.inject("generate", "slow")
        first = spawn(url, postgres_url, batch, prompts, lease=1.0)
        wait_for(lambda: [r for r in sim.requests if r.fault == "slow"], 20)
        os.kill(first.pid, signal.SIGSTOP)
        try:
            second = spawn(url, postgres_url, batch, prompts, lease=1.0, mode="trio")
            clean(second.finish(timeout=40))
        finally:
            os.kill(first.pid, signal.SIGCONT)
        clean(first.finish())
    assert post_counts(sim) == Counter(prompts)
    outcomes = first.outcomes + second.outcomes
    assert len(outcomes) == 1, (first.outcomes, second.outcomes)





def test_a_sqlite_store_that_can_never_be_opened_is_refused_at_once() -> None:
    """``sqlite:///`` naming a file in a directory that does not exist (a typo, a read-only
    mount) is an InvalidRequestError naming the store when the client is made, not an
    outage every request waits out behind a WARNING."""
    limits = RateLimits(store="sqlite:////nonexistent-dir/kolbo/rates.db")
    with pytest.raises(InvalidRequestError, match="store"):
        AsyncKolbo(fresh_key(), rate_limits=limits)


@pytest.mark.timeout(90)
def test_a_lease_past_a_day_is_refused(
    postgres_url: str, spawn: Any
) -> None:
    """lease=1e12 ("never take my items over") is past PostgreSQL's year 10,000 and
    threading's longest wait: refused up front (InvalidRequestError), nothing sent."""
    batch = batch_name()
    sim = simulator()
    with sim.serve() as url:
        worker = spawn(url, postgres_url, batch, ["huge 0", "huge 1"], lease=1e12).finish()
    assert "Exception in thread" not in worker.err, worker.err
    assert worker.proc.returncode != 0 or len(worker.outcomes) == 2, (
        worker.proc.returncode,
        worker.outcomes,
        post_counts(sim),
    )


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_journal_that_fails_mid_batch_stops_the_worker_with_an_error(
    postgres_url: str, spawn: Any
) -> None:
    """The journal starts refusing the worker mid-batch (its role loses the tables:
    permission denied; a server unreachable for longer than the retries takes the same
    path): the worker stops claiming and raises a KolboError once the outcomes in hand are
    given, so a task queue sees the batch did not finish here (never a quiet exit 0)."""
    from urllib.parse import urlsplit

    import psycopg

    role = f"kolbo_adv_r_{os.getpid()}_{time.time_ns() % 10**6}"
    dbname = f"kolbo_adv_m_{os.getpid()}_{time.time_ns() % 10**6}"
    parts = urlsplit(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
        admin.execute(f"CREATE DATABASE {dbname} OWNER {role}")
    superuser_db = postgres_url.rsplit("/", 1)[0] + f"/{dbname}"
    journal = f"postgresql://{role}:pw-{role}@{parts.hostname}:{parts.port}/{dbname}"
    try:
        prompts = [f"mid {i}" for i in range(8)]
        sim = simulator()
        sim.faults.slow_seconds = 3.0
        with sim.serve() as url:
            sim.inject("generate", "slow")
            worker = spawn(url, journal, batch_name(), prompts, lease=2.0, concurrency=1)
            wait_for(lambda: [r for r in sim.requests if r.fault == "slow"], 20)
            with psycopg.connect(superuser_db, autocommit=True) as admin:
                admin.execute("ALTER TABLE kolbo_journal_items OWNER TO postgres")
                admin.execute("ALTER TABLE kolbo_journal_batches OWNER TO postgres")
            worker.finish()
        print(worker.proc.returncode, worker.outcomes, worker.err[-800:])
        assert worker.proc.returncode != 0 or len(worker.outcomes) == len(prompts), (
            worker.proc.returncode,
            worker.outcomes,
            worker.err[-500:],
        )
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {role}")


