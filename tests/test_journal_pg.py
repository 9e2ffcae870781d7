"""The journal shared through PostgreSQL (`generate_many(journal="postgresql://...",
batch_id=...)`), in one process: several workers (clients) on one batch, a dead worker's rows
taken over, a redelivered batch, the arguments. Against a REAL PostgreSQL server: a cluster of
our own (``initdb``/``pg_ctl`` from Debian's ``postgresql`` package) in a temporary directory
on a free loopback port, or ``$KOLBO_TEST_POSTGRES_URL`` (.ci/services.sh starts one). As root
the server runs as the ``postgres`` user. Missing binaries or psycopg skip these tests, except
with ``CI=true``, where they fail. tests/test_journal_pg_processes.py runs real processes.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import kolbo_async as k
from kolbo_async import AsyncKolbo, TextToVideo
from kolbo_async.testing import Simulator

from .test_batch import KEY, collect, posts, prompts_posted

_BATCHES = itertools.count()


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(os.path.realpath(initdb)).parent if initdb else None


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing (CI=true): .ci/services.sh installs it")
    pytest.skip(f"{what} is not installed")


def need_postgres() -> Path:
    """The directory of ``initdb``/``pg_ctl``, and psycopg importable; else skip (fail in CI)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _missing("psycopg (pip install 'kolbo-async[postgres]')")
    bin_dir = _binaries()
    if bin_dir is None:
        _missing("PostgreSQL (apt-get install -y postgresql)")
    assert bin_dir is not None
    return bin_dir


class PostgresServer:
    """One cluster of our own: `start`, `stop`, `restart` (a crash: ``-m immediate``)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="kolbo-pg-"))  # /tmp: the postgres user reads it
        self.data = self.root / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_user = os.geteuid() == 0
        if self._as_user:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
                  "-E", "UTF8", "--no-instructions")  # fmt: skip

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self._as_user:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            log = self.root / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}{tail}")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=50")  # fmt: skip
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options,
                  "-w", "-t", "30", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def restart(self, down_for: float = 0.0) -> None:
        """Crash the server (``-m immediate``: no checkpoint, recovery from the WAL) and
        start it again after `down_for` seconds."""
        self.stop("immediate")
        time.sleep(down_for)
        self.start()

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- fixtures ---------------------------------------------------------------------------------

from . import test_batch  # noqa: E402

vclock = test_batch.vclock
sim = test_batch.sim
client = test_batch.client


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The session's server: the one CI started, else a cluster of our own."""
    need_postgres()
    url = os.environ.get("KOLBO_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    server = PostgresServer(need_postgres())
    server.start()
    try:
        yield server.url
    finally:
        server.remove()


_DATABASES = itertools.count()


@pytest.fixture
def own_database(postgres_url: str) -> Iterator[str]:
    """A database of its own on the session's server, for a test that kills every journal
    connection of its database (other tests' workers, in other processes, stay untouched)."""
    import psycopg

    name = f"kolbo_own_{os.getpid()}_{next(_DATABASES)}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A cluster for a test that crashes and restarts it."""
    server = PostgresServer(need_postgres())
    server.start()
    try:
        yield server
    finally:
        server.remove()


def batch_name() -> str:
    """A batch id of its own for each test (the session's server outlives the test)."""
    return f"test-{os.getpid()}-{time.time_ns()}-{next(_BATCHES)}"


def rows(url: str, batch_id: str) -> list[tuple[Any, ...]]:
    """(idx, state, generation_id, error, owner, lease_until) of each row, in list order."""
    import psycopg

    with psycopg.connect(url) as conn:
        try:
            return conn.execute(
                "SELECT idx, state, generation_id, error, owner, lease_until"
                " FROM kolbo_journal_items WHERE batch_id = %s ORDER BY idx",
                (batch_id,),
            ).fetchall()
        except psycopg.errors.UndefinedTable:  # no worker has made the tables yet
            return []


def prompts(n: int, tag: str = "p") -> list[TextToVideo]:
    return [TextToVideo(f"{tag} {i}") for i in range(n)]


# -- the arguments (no server needed) --------------------------------------------------------

PG = "postgresql://user:secret@127.0.0.1:1/kolbo"


class TestArguments:
    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"journal": PG}, "batch_id"),
            ({"journal": PG, "batch_id": ""}, "batch_id"),
            ({"journal": PG, "batch_id": "  "}, "batch_id"),
            ({"journal": PG, "batch_id": 7}, "batch_id"),
            ({"journal": PG, "batch_id": "a\nb"}, "batch_id"),
            ({"journal": PG, "batch_id": "x" * 201}, "batch_id"),
            ({"journal": PG, "batch_id": "b", "lease": 0}, "lease"),
            ({"journal": PG, "batch_id": "b", "lease": -1.0}, "lease"),
            ({"journal": PG, "batch_id": "b", "lease": float("nan")}, "lease"),
            ({"journal": PG, "batch_id": "b", "lease": float("inf")}, "lease"),
            ({"journal": PG, "batch_id": "b", "lease": 1e12}, "lease"),  # past year 10,000
            ({"journal": PG, "batch_id": "b", "lease": 86_400.5}, "lease"),
            ({"journal": PG, "batch_id": "b", "lease": True}, "lease"),
            ({"journal": PG, "batch_id": "b", "lease": "60"}, "lease"),
            ({"journal": PG, "batch_id": "b", "max_credits": 100}, "max_credits"),
            ({"batch_id": "b"}, "batch_id"),
            ({"lease": 30.0}, "lease"),
            ({"journal": "batch.db", "batch_id": "b"}, "batch_id"),
            ({"journal": "sqlite:///batch.db", "lease": 30.0}, "lease"),
        ],
    )
    @pytest.mark.anyio
    async def test_refused_before_anything(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], field: str,
    ) -> None:  # fmt: skip
        """batch_id and lease are checked at the call, go with a postgresql:// journal only,
        and the message names the field (never the URL's password)."""
        monkeypatch.chdir(tmp_path)
        with pytest.raises(k.InvalidRequestError) as info:
            client.videos.generate_many(prompts(1), **kwargs)
        assert info.value.field == field
        assert "secret" not in str(info.value)
        if field in ("batch_id", "lease") and kwargs.get("journal") != PG:
            assert "postgresql://" in str(info.value)
        assert sim.requests == []
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.anyio
    async def test_a_missing_driver_is_named(
        self, sim: Simulator, client: AsyncKolbo, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without psycopg the call says which extra to install, before anything is sent."""
        find_spec = importlib.util.find_spec

        def without_psycopg(name: str, *args: Any) -> Any:
            return None if name == "psycopg" else find_spec(name, *args)

        monkeypatch.setattr(importlib.util, "find_spec", without_psycopg)
        with pytest.raises(k.InvalidRequestError, match=r"kolbo-async\[postgres\]") as info:
            client.videos.generate_many(prompts(1), journal=PG, batch_id="b")
        assert info.value.field == "journal"
        assert sim.requests == []

    def test_import_loads_no_driver(self) -> None:
        """`import kolbo_async` (and building a client) loads no PostgreSQL driver."""
        code = (
            "import sys, kolbo_async\n"
            "kolbo_async.Kolbo('kolbo_live_' + 'a' * 40).close()\n"
            "print([m for m in sys.modules if m.startswith('psycopg')])\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, timeout=60)  # fmt: skip
        assert out.stdout.strip() == "[]"


# -- with a server ----------------------------------------------------------------------------

pytestmark = pytest.mark.anyio


class TestSharedBatch:
    @pytest.mark.slow
    async def test_workers_split_the_batch_and_pay_once(
        self, sim: Simulator, postgres_url: str
    ) -> None:
        """Three clients run one batch together: each item is POSTed once, by one of them,
        and yielded once, by the one that sent it."""
        batch_id, requests = batch_name(), prompts(12)
        seen: dict[str, list[int]] = {}

        async def worker(name: str) -> None:
            async with sim.client(KEY) as client:
                batch = client.videos.generate_many(
                    requests, journal=postgres_url, batch_id=batch_id, lease=5.0,
                    concurrency=2,
                )  # fmt: skip
                seen[name] = [outcome.index for outcome in await collect(batch)]

        async with anyio.create_task_group() as tg:
            for name in "abc":
                tg.start_soon(worker, name)
        every = sorted(i for indices in seen.values() for i in indices)
        assert every == list(range(12))
        assert prompts_posted(sim) == {f"p {i}": 1 for i in range(12)}
        assert sum(1 for indices in seen.values() if indices) >= 2  # shared, not one alone
        assert all(state == "finished" and lease is None
                   for _, state, _, _, _, lease in rows(postgres_url, batch_id))  # fmt: skip

    async def test_a_finished_batch_delivered_again_pays_nothing(
        self, sim: Simulator, client: AsyncKolbo, postgres_url: str
    ) -> None:
        """A task queue redelivers a batch that finished: nothing is sent, nothing yielded."""
        batch_id, requests = batch_name(), prompts(4)
        first = await collect(client.videos.generate_many(
            requests, journal=postgres_url, batch_id=batch_id))  # fmt: skip
        assert sorted(o.index for o in first) == [0, 1, 2, 3]
        before = len(sim.requests)
        again = await collect(client.videos.generate_many(
            list(reversed(requests)), journal=postgres_url, batch_id=batch_id))  # fmt: skip
        assert again == []
        assert len(sim.requests) == before  # not a POST, not a poll
        assert prompts_posted(sim) == {f"p {i}": 1 for i in range(4)}

    async def test_other_requests_under_a_batch_id_are_refused(
        self, sim: Simulator, client: AsyncKolbo, postgres_url: str
    ) -> None:
        """A worker with another list under the same batch_id sends nothing."""
        batch_id = batch_name()
        await collect(client.videos.generate_many(
            prompts(2), journal=postgres_url, batch_id=batch_id))  # fmt: skip
        before = len(sim.requests)
        with pytest.raises(k.KolboError, match="other requests") as info:
            await collect(client.videos.generate_many(
                prompts(3), journal=postgres_url, batch_id=batch_id))  # fmt: skip
        assert batch_id in str(info.value)
        assert len(sim.requests) == before

    @pytest.mark.slow
    async def test_a_dead_workers_rows_are_taken_over(
        self, sim: Simulator, client: AsyncKolbo, postgres_url: str
    ) -> None:
        """Rows a dead worker left, once its lease ran out: a POST whose answer was never
        recorded is reported outcome-unknown (not sent again), a known id is re-attached, an
        end is yielded without a request, a refusal is sent again; what its owner handed out
        is left alone."""
        import psycopg

        batch_id, requests = batch_name(), prompts(5)
        done = await collect(client.videos.generate_many(
            requests, journal=postgres_url, batch_id=batch_id))  # fmt: skip
        ids = {o.index: o.generation.id for o in done if o.generation}
        with psycopg.connect(postgres_url) as conn:
            dead = "host:1:dead"
            for idx, state, gen, error in [
                (0, "intent", None, None), (1, "submitted", ids[1], None),
                (2, "finished", ids[2], None), (3, "rejected", None, "400: bad"),
            ]:  # fmt: skip
                conn.execute(
                    "UPDATE kolbo_journal_items SET state = %s, owner = %s,"
                    " lease_until = now() - interval '1 second', error = %s,"
                    " generation_id = COALESCE(%s, generation_id),"
                    " status = CASE WHEN %s = 'finished' THEN status END"
                    " WHERE batch_id = %s AND idx = %s",
                    (state, dead, error, gen, state, batch_id, idx),
                )
        posted = prompts_posted(sim)
        outcomes = {o.index: o for o in await collect(client.videos.generate_many(
            requests, journal=postgres_url, batch_id=batch_id, lease=0.5))}  # fmt: skip
        assert sorted(outcomes) == [0, 1, 2, 3]  # 4 was handed out by its owner
        assert isinstance(outcomes[0].error, k.SubmissionOutcomeUnknownError)
        assert "host:1:dead" in str(outcomes[0].error)
        assert outcomes[0].generation is None
        assert outcomes[1].error is None and outcomes[1].generation is not None
        assert outcomes[1].generation.id == ids[1]
        assert outcomes[2].error is None and outcomes[2].generation.id == ids[2]  # type: ignore[union-attr]
        assert outcomes[3].error is None
        after = prompts_posted(sim)
        assert after - posted == {"p 3": 1}  # only the refused one was sent again
        states = [state for _, state, *_ in rows(postgres_url, batch_id)]
        assert states == ["intent", "finished", "finished", "finished", "finished"]
        assert all(lease is None for *_, lease in rows(postgres_url, batch_id))

    @pytest.mark.slow
    async def test_stopping_early_lets_another_worker_finish(self, postgres_url: str) -> None:
        """A worker that stops after its first outcome releases what it still held: another
        worker re-attaches those (no second POST) and sends the rest."""
        # Real (scaled) time: each claim is a round trip to the server, during which a
        # virtual clock would run on and end the generations before the next claim.
        sim = Simulator(speed=500.0)
        batch_id, requests = batch_name(), prompts(6)
        sim.plan(processing_seconds=200)  # the first ends long before the others
        sim.plan(processing_seconds=600, times=5)
        async with sim.client(KEY) as first:
            batch = first.videos.generate_many(
                requests, journal=postgres_url, batch_id=batch_id, concurrency=3)
            async for outcome in batch:
                head = outcome.index
                break
            await batch.aclose()
            held = {g.id for g in batch.unfinished}
        assert held  # it stopped with generations still running
        async with sim.client(KEY) as second:
            rest = await collect(second.videos.generate_many(
                requests, journal=postgres_url, batch_id=batch_id))  # fmt: skip
        assert sorted([head] + [o.index for o in rest]) == list(range(6))
        assert held <= {o.generation.id for o in rest if o.generation}
        assert prompts_posted(sim) == {f"p {i}": 1 for i in range(6)}

    async def test_an_unknown_outcome_is_flagged_once(
        self, sim: Simulator, client: AsyncKolbo, postgres_url: str
    ) -> None:
        """A POST whose answer was lost is reported by its worker and never sent again, not
        by a later worker either."""
        batch_id, requests = batch_name(), prompts(2)
        sim.inject("generate", "drop_after")
        first = await collect(client.videos.generate_many(
            requests, journal=postgres_url, batch_id=batch_id, concurrency=1))  # fmt: skip
        unknown = [o for o in first if isinstance(o.error, k.SubmissionOutcomeUnknownError)]
        assert len(unknown) == 1
        before = len(posts(sim))
        again = await collect(client.videos.generate_many(
            requests, journal=postgres_url, batch_id=batch_id))  # fmt: skip
        assert again == []
        assert len(posts(sim)) == before == 2
