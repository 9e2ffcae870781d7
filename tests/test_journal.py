"""The batch journal in process: one run at a time, items matched by content, files that are
not ours left alone, the budget kept when answers do not state their charge, and no paid POST
lost to a cancellation."""

from __future__ import annotations

import gc
import json
import logging
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx
import pytest

import kolbo_async as k
from kolbo_async import AsyncKolbo, TextToVideo
from kolbo_async._journal import APPLICATION_ID, Journal, request_key
from kolbo_async.testing import Simulator, VirtualClock

from . import test_batch
from .test_batch import KEY, collect
from .test_batch import prompts_posted as posted

pytestmark = pytest.mark.anyio

# The batch tests' fixtures: a virtual clock, a simulator on it and a client of it.
vclock = test_batch.vclock
sim = test_batch.sim
client = test_batch.client


def prompts(*names: str) -> list[TextToVideo]:
    return [TextToVideo(name) for name in names]


def ids_by_prompt(outcomes: list[k.BatchOutcome[k.AsyncGeneration]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for outcome in sorted(outcomes, key=lambda o: o.index):
        assert outcome.request is not None and outcome.generation is not None
        found.setdefault(str(outcome.request.prompt), []).append(outcome.generation.id)  # type: ignore[union-attr]
    return found


class TestOneRunAtATime:
    async def test_second_batch_on_a_held_journal_sends_nothing(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """While one batch has the journal, another is refused before any request."""
        journal = tmp_path / "batch.db"
        first = client.videos.generate_many(prompts("a", "b"), journal=journal)
        await first.__anext__()  # the journal is open and held
        sent = len(sim.requests)
        with pytest.raises(k.KolboError, match="in use") as info:
            await collect(client.videos.generate_many(prompts("a", "b", "c"), journal=journal))
        assert f"pid {os.getpid()}" in str(info.value)
        assert str(journal) in str(info.value)
        assert len(sim.requests) == sent
        await first.aclose()  # lets the next run have it
        outcomes = await collect(
            client.videos.generate_many(prompts("a", "b", "c"), journal=journal)
        )
        assert len(outcomes) == 3
        assert posted(sim) == {"a": 1, "b": 1, "c": 1}

    async def test_break_releases_the_journal(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """A batch left with ``break`` and dropped lets the journal go at once."""
        journal = tmp_path / "batch.db"
        batch = client.videos.generate_many(prompts("a", "b"), journal=journal, concurrency=1)
        async for _ in batch:
            break
        del batch
        gc.collect()
        outcomes = await collect(client.videos.generate_many(prompts("a", "b"), journal=journal))
        assert sorted(o.index for o in outcomes) == [0, 1]
        assert max(posted(sim).values()) == 1

    @pytest.mark.parametrize("link", ["symlink", "hard link"])
    async def test_another_name_of_a_held_journal_is_refused(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path, link: str
    ) -> None:
        """A symlink or a hard link to the journal (from another directory) is the same
        journal: refused while it is held, and both runs together pay once per item."""
        journal = tmp_path / "dir1" / "batch.db"
        alias = tmp_path / "dir2" / "alias.db"
        journal.parent.mkdir()
        alias.parent.mkdir()
        journal.touch()  # a link needs a file to point at
        (os.symlink if link == "symlink" else os.link)(journal, alias)
        requests = prompts(*(f"p{i}" for i in range(8)))
        first = client.videos.generate_many(requests, journal=journal, concurrency=4)
        await first.__anext__()
        sent = len(sim.requests)
        with pytest.raises(k.KolboError, match="in use") as info:
            await collect(client.videos.generate_many(requests, journal=alias))
        assert str(alias) in str(info.value)
        assert len(sim.requests) == sent
        await collect(first)
        await collect(client.videos.generate_many(requests, journal=alias))  # now it may
        assert posted(sim) == {f"p{i}": 1 for i in range(8)}

    async def test_two_names_at_once_pay_once(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """Two batches started together, one through a symlink: 8 generations for 8 items."""
        journal = tmp_path / "batch.db"
        alias = tmp_path / "alias.db"
        journal.touch()
        alias.symlink_to(journal)
        requests = prompts(*(f"p{i}" for i in range(8)))
        refused: list[k.KolboError] = []

        async def run(path: Path) -> None:
            try:
                await collect(client.videos.generate_many(requests, journal=path, concurrency=4))
            except k.KolboError as error:
                refused.append(error)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, journal)
            tg.start_soon(run, alias)
        assert len(refused) == 1
        assert len(sim.generations) == 8
        assert posted(sim) == {f"p{i}": 1 for i in range(8)}

    def test_blocking_client(self, tmp_path: Path) -> None:
        """The blocking client refuses the same way, and releases on close()."""
        sim = Simulator(speed=2000)
        journal = tmp_path / "batch.db"
        with k.Kolbo(KEY, _transport=sim.transport(), rate_limits=None) as client:
            first = client.videos.generate_many(prompts("a"), journal=journal)
            next(first)
            with pytest.raises(k.KolboError, match="in use"):
                list(client.videos.generate_many(prompts("a", "b"), journal=journal))
            first.close()
            outcomes = list(client.videos.generate_many(prompts("a", "b"), journal=journal))
        assert len(outcomes) == 2
        assert posted(sim) == {"a": 1, "b": 1}


class TestMatchedByContent:
    async def test_prepend_reorder_filter_pay_only_for_what_is_new(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """A list rebuilt in another order, with one item in front, re-pays nothing."""
        journal = tmp_path / "batch.db"
        first = await collect(client.videos.generate_many(prompts("a", "b", "c"), journal=journal))
        again = await collect(
            client.videos.generate_many(prompts("new", "c", "a", "b"), journal=journal)
        )
        assert posted(sim) == {"a": 1, "b": 1, "c": 1, "new": 1}
        before, after = ids_by_prompt(first), ids_by_prompt(again)
        assert {p: after[p] for p in "abc"} == before
        filtered = await collect(client.videos.generate_many(prompts("b"), journal=journal))
        assert [o.generation.id for o in filtered if o.generation] == before["b"]
        assert sum(posted(sim).values()) == 4

    async def test_identical_prompts_are_separate_items(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """Two identical prompts make two generations; a third copy later makes one more."""
        journal = tmp_path / "batch.db"
        first = await collect(client.videos.generate_many(prompts("same", "same"), journal=journal))
        assert posted(sim) == {"same": 2}
        assert len({o.generation.id for o in first if o.generation}) == 2
        again = await collect(
            client.videos.generate_many(prompts("other", "same", "same", "same"), journal=journal)
        )
        assert posted(sim) == {"same": 3, "other": 1}
        kept = ids_by_prompt(again)["same"]
        assert len(set(kept)) == 3
        assert set(ids_by_prompt(first)["same"]) <= set(kept)

    async def test_a_whole_float_is_the_same_request_as_the_integer(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """A list rebuilt with ``duration=5.0`` (or 7.0 in extra_body) instead of 5 re-pays
        nothing: the API cannot tell them apart. 5.5 is another request."""
        journal = tmp_path / "batch.db"
        first = [
            TextToVideo("a", duration=5),
            TextToVideo("b", duration=5, extra_body={"cfg": [7, {"steps": 30}]}),
        ]
        await collect(client.videos.generate_many(first, journal=journal))
        rebuilt = [
            {"prompt": "b", "duration": 5.0, "extra_body": {"cfg": [7.0, {"steps": 30.0}]}},
            TextToVideo("a", duration=5.0),
            TextToVideo("a", duration=5.5),
        ]
        outcomes = await collect(client.videos.generate_many(rebuilt, journal=journal))
        assert all(o.error is None for o in outcomes)
        assert len(sim.generations) == 3  # only the 5.5 s one is new
        assert posted(sim) == {"a": 2, "b": 1}

    async def test_schema_2_rows_hashed_with_floats_still_match(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """A journal written before numbers were canonical (schema 2: ``duration=5.0``
        hashed apart from 5) is re-keyed on opening: a rerun of its list pays nothing."""
        from kolbo_async._journal_keys import legacy_key as _legacy_key
        from kolbo_async._journal_schema import SCHEMA as _SCHEMA

        journal = tmp_path / "v2.db"
        requests = [TextToVideo("a", duration=5.0), TextToVideo("a", duration=5)]
        bodies = [r.body() for r in requests]
        made = [sim.create_generation(key=KEY, processing_seconds=10) for _ in requests]
        with closing(sqlite3.connect(journal)) as db:
            db.execute(_SCHEMA)
            for index, ((path, body), gen_id) in enumerate(zip(bodies, made, strict=True)):
                db.execute(
                    "INSERT INTO items VALUES (?, 0, ?, ?, ?, 'submitted', ?, ?, NULL, NULL, 0)",
                    (_legacy_key(path, body), index, path, json.dumps(body), gen_id,
                     json.dumps({"generation_id": gen_id, "credits_charged": 35})),
                )  # fmt: skip
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute("PRAGMA user_version = 2")
            db.commit()
        outcomes = await collect(client.videos.generate_many(requests, journal=journal))
        assert posted(sim) == {}
        assert sorted(o.generation.id for o in outcomes if o.generation) == sorted(made)
        assert all(o.error is None for o in outcomes)
        again = await collect(client.videos.generate_many(requests[:1] * 3, journal=journal))
        assert posted(sim) == {"a": 1}  # a third copy is new; the two recorded are not
        assert {o.generation.id for o in again if o.generation} >= set(made)
        with closing(sqlite3.connect(journal)) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == 3

    async def test_first_schema_journal_is_migrated(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """A journal of the first schema (keyed by index and hash) is migrated: its rows
        get occurrences in index order, and finished items are not paid again."""
        journal = tmp_path / "old.db"
        requests = prompts("dup", "x", "dup")
        bodies = [r.body() for r in requests]
        made = [
            sim.create_generation(key=KEY, processing_seconds=10) for _ in requests
        ]  # what the old run paid for
        with closing(sqlite3.connect(journal)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE items (idx INTEGER NOT NULL, request_hash TEXT NOT NULL,"
                " path TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL,"
                " generation_id TEXT, submission TEXT, status TEXT, error TEXT,"
                " updated_at REAL NOT NULL, PRIMARY KEY (idx, request_hash))"
            )
            for index, ((path, body), gen_id) in enumerate(zip(bodies, made, strict=True)):
                db.execute(
                    "INSERT INTO items VALUES (?, ?, ?, ?, 'submitted', ?, ?, NULL, NULL, 0)",
                    (index, request_key(path, body), path, json.dumps(body), gen_id,
                     json.dumps({"generation_id": gen_id, "credits_charged": 35})),
                )  # fmt: skip
            db.commit()
        sent = sum(posted(sim).values())
        outcomes = await collect(
            client.videos.generate_many(prompts("x", "dup", "dup", "dup"), journal=journal)
        )
        assert sum(posted(sim).values()) == sent + 1  # only the third "dup" is new
        found = ids_by_prompt(outcomes)
        assert found["x"] == [made[1]]
        assert found["dup"][:2] == [made[0], made[2]]
        with closing(sqlite3.connect(journal)) as db:
            assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
            assert db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 4


class TestFilesThatAreNotJournals:
    @staticmethod
    def foreign_db(path: Path, application_id: int) -> bytes:
        with closing(sqlite3.connect(path)) as db:
            db.execute(f"PRAGMA application_id = {application_id}")
            db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
            db.execute("INSERT INTO notes (text) VALUES ('keep me')")
            db.commit()
        return path.read_bytes()

    @pytest.mark.parametrize("application_id", [0, 0x12345678])
    async def test_foreign_database_is_left_untouched(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path, application_id: int
    ) -> None:
        """Another program's SQLite file: a KolboError naming it, not a byte changed."""
        path = tmp_path / "app.db"
        before = self.foreign_db(path, application_id)
        with pytest.raises(k.KolboError, match="another program's") as info:
            await collect(client.videos.generate_many(prompts("a"), journal=path))
        assert str(path) in str(info.value)
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no WAL, no lock
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
            tables = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
            assert tables == [("notes",)]
        assert sim.requests == []

    @pytest.mark.parametrize(
        "content",
        [b"not a database at all\n" * 20, b"SQLite format 3\x00" + b"\xff" * 4000, b"\x00" * 50],
        ids=["text", "garbled", "short"],
    )
    async def test_corrupt_file(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path, content: bytes
    ) -> None:
        """A file that is not a readable database: a KolboError naming it, left as it was."""
        path = tmp_path / "batch.db"
        path.write_bytes(content)
        with pytest.raises(k.KolboError) as info:
            await collect(client.videos.generate_many(prompts("a"), journal=path))
        assert type(info.value) is k.KolboError
        assert str(path) in str(info.value)
        assert path.read_bytes() == content
        assert sim.requests == []

    async def test_missing_directory(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """A journal in a directory that does not exist: a KolboError, nothing created."""
        path = tmp_path / "nowhere" / "batch.db"
        with pytest.raises(k.KolboError, match="does not exist") as info:
            await collect(client.videos.generate_many(prompts("a"), journal=path))
        assert str(path) in str(info.value)
        assert not path.parent.exists()
        assert sim.requests == []

    async def test_newer_schema(self, sim: Simulator, client: AsyncKolbo, tmp_path: Path) -> None:
        """A journal written by a newer kolbo-async is refused rather than misread."""
        path = tmp_path / "batch.db"
        await collect(client.videos.generate_many(prompts("a"), journal=path))
        with closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA user_version = 99")
        sent = len(sim.requests)
        with pytest.raises(k.KolboError, match="newer"):
            await collect(client.videos.generate_many(prompts("a", "b"), journal=path))
        assert len(sim.requests) == sent


class _Rewrite(httpx.AsyncBaseTransport):
    """The simulator behind a proxy that edits (or holds back) generation POST answers."""

    def __init__(
        self, sim: Simulator, *, drop: tuple[str, ...] = (), override: dict[str, Any] | None = None
    ) -> None:
        self.inner = sim.transport()
        self.drop = drop
        self.override = override or {}
        self.on_post: Any = None  # called once Kolbo has acted on a POST
        self.gate: anyio.Event | None = None  # when given, answers wait for it

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not (request.method == "POST" and request.url.path.startswith("/api/v1/generate/")):
            return response
        if self.on_post is not None:
            self.on_post()
        if self.gate is not None:
            await self.gate.wait()  # created at Kolbo, the answer still on its way
        if not (self.drop or self.override):
            return response
        await response.aread()
        body = json.loads(response.content)
        for name in self.drop:
            body.pop(name, None)
        body.update(self.override)
        return httpx.Response(response.status_code, json=body)


class TestBudgetWithoutStatedCharges:
    async def test_known_model_is_priced_from_the_catalog(
        self, sim: Simulator, vclock: VirtualClock
    ) -> None:
        """No credits_charged in the answers: Model.cost (150 for seedance-2, 5 s) counts."""
        proxy = _Rewrite(sim, drop=("credits_charged",))
        async with AsyncKolbo(KEY, _transport=proxy, _clock=vclock, rate_limits=None) as client:  # type: ignore[arg-type]
            requests = [TextToVideo(f"p{i}", model="seedance-2", duration=5) for i in range(4)]
            outcomes = await collect(client.videos.generate_many(requests, max_credits=400))
        assert sum(posted(sim).values()) == 2
        assert sum(g.credits for g in sim.generations.values()) == 300
        assert len([o for o in outcomes if o.generation is None]) == 2

    async def test_a_duration_left_to_kolbo_is_budgeted_at_the_dearest(
        self, sim: Simulator, vclock: VirtualClock
    ) -> None:
        """A named model without a duration: Kolbo picks it, so the budget assumes the
        dearest the catalog lists (seedance-2: 10 s, 300 credits), never nothing."""
        async with sim.client() as client:
            requests = [TextToVideo(f"p{i}", model="seedance-2") for i in range(4)]
            none = await collect(client.videos.generate_many(requests, max_credits=250))
            assert sum(posted(sim).values()) == 0
            assert all(o.generation is None for o in none)
            some = await collect(client.videos.generate_many(requests, max_credits=700))
        assert sum(posted(sim).values()) == 2
        assert len([o for o in some if o.generation is not None]) == 2

    @pytest.mark.parametrize("stated", [0, 35])
    async def test_an_understated_charge_counts_at_the_catalog_price(
        self, sim: Simulator, vclock: VirtualClock, stated: int
    ) -> None:
        """An answer claiming 0 (or 35) credits for a 150-credit video does not let the rest
        of a 400-credit budget through."""
        proxy = _Rewrite(sim, override={"credits_charged": stated})
        async with AsyncKolbo(KEY, _transport=proxy, _clock=vclock, rate_limits=None) as client:  # type: ignore[arg-type]
            requests = [TextToVideo(f"p{i}", model="seedance-2", duration=5) for i in range(10)]
            await collect(client.videos.generate_many(requests, max_credits=400))
        assert sum(posted(sim).values()) == 2
        assert sum(g.credits for g in sim.generations.values()) == 300

    async def test_unknown_price_holds_the_rest_back(
        self, sim: Simulator, vclock: VirtualClock, tmp_path: Path
    ) -> None:
        """Smart Select and no stated charge: the rest of the batch is not sent, and a rerun
        with the journal holds it back too."""
        proxy = _Rewrite(sim, drop=("credits_charged",))
        journal = tmp_path / "batch.db"
        requests = [TextToVideo(f"p{i}", duration=5) for i in range(5)]
        async with AsyncKolbo(KEY, _transport=proxy, _clock=vclock, rate_limits=None) as client:  # type: ignore[arg-type]
            outcomes = await collect(
                client.videos.generate_many(requests, max_credits=1000, journal=journal)
            )
            assert sum(posted(sim).values()) == 1
            held = [o for o in outcomes if o.generation is None]
            assert len(held) == 4
            assert all(type(o.error) is k.KolboError for o in held)
            assert "did not state what it charged" in str(held[0].error)
            again = await collect(
                client.videos.generate_many(requests, max_credits=1000, journal=journal)
            )
        assert sum(posted(sim).values()) == 1
        assert len([o for o in again if o.generation is None]) == 4


class TestCancellation:
    async def test_cancelled_batch_keeps_every_answered_post(
        self, sim: Simulator, vclock: VirtualClock, tmp_path: Path
    ) -> None:
        """Cancelled while four slow POSTs are on the wire: each one's answer still lands,
        in the journal and in `unfinished`."""
        journal = tmp_path / "batch.db"
        proxy = _Rewrite(sim)
        proxy.gate = gate = anyio.Event()
        async with AsyncKolbo(KEY, _transport=proxy, _clock=vclock, rate_limits=None) as client:  # type: ignore[arg-type]
            batch = client.videos.generate_many(
                prompts("a", "b", "c", "d"), journal=journal, concurrency=4
            )
            with anyio.CancelScope() as scope:

                def cancel_at_the_fourth() -> None:
                    if len(sim.generations) == 4:  # all created, none answered yet
                        scope.cancel()
                        gate.set()  # the answers go out only now

                proxy.on_post = cancel_at_the_fourth
                await batch.__anext__()
            assert scope.cancelled_caught
            created = set(sim.generations)
            assert {g.id for g in batch.unfinished} == created
            with closing(sqlite3.connect(journal)) as db:
                rows = db.execute("SELECT state, generation_id FROM items").fetchall()
            assert {gen_id for _, gen_id in rows} == created
            assert {state for state, _ in rows} == {"submitted"}
            await batch.aclose()


def intents(journal: Path) -> list[tuple[str, Any]]:
    with closing(sqlite3.connect(journal)) as db:
        return db.execute("SELECT state, error FROM items WHERE state = 'intent'").fetchall()


class TestAnotherProgramHoldsTheJournal:
    """Another program (``sqlite3 batch.db``, a DB browser) holds a write lock on the journal
    mid-run, past SQLite's busy timeout: every error is a KolboError, nothing is sent without
    its record, and no paid generation is lost."""

    @pytest.fixture(autouse=True)
    def _short_busy_timeout(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("kolbo_async._journal.BUSY_TIMEOUT", 0.05)

    async def test_held_before_the_run_starts(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        journal = tmp_path / "batch.db"
        await collect(client.videos.generate_many(prompts("a"), journal=journal))
        sent = len(sim.requests)
        with closing(sqlite3.connect(journal, timeout=0, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")
            with pytest.raises(k.KolboError, match="another program holds a lock") as info:
                await collect(client.videos.generate_many(prompts("a", "b"), journal=journal))
            other.execute("ROLLBACK")
        assert type(info.value) is k.KolboError
        assert len(sim.requests) == sent

    async def test_an_intent_that_cannot_be_written_is_not_sent(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        journal = tmp_path / "batch.db"
        batch = client.videos.generate_many(prompts("a", "b", "c"), journal=journal, concurrency=1)
        first = await batch.__anext__()
        with closing(sqlite3.connect(journal, timeout=0, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")
            rest = await collect(batch)
            other.execute("ROLLBACK")
        assert first.error is None
        assert len(rest) == 2
        assert all(o.generation is None and type(o.error) is k.KolboError for o in rest)
        assert "database is locked" in str(rest[0].error)
        assert str(journal) in str(rest[0].error)
        assert sum(posted(sim).values()) == 1
        again = await collect(client.videos.generate_many(prompts("a", "b", "c"), journal=journal))
        assert all(o.error is None for o in again)
        assert posted(sim) == {"a": 1, "b": 1, "c": 1}

    async def test_an_id_that_cannot_be_written_is_logged_and_yielded(
        self, sim: Simulator, vclock: VirtualClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        journal = tmp_path / "batch.db"
        proxy = _Rewrite(sim)
        holder: list[sqlite3.Connection] = []

        def lock_the_journal() -> None:  # Kolbo has created the generation; no answer yet
            if not holder:
                holder.append(sqlite3.connect(journal, timeout=0, isolation_level=None))
                holder[0].execute("BEGIN EXCLUSIVE")

        proxy.on_post = lock_the_journal
        requests = prompts("a", "b", "c")
        async with AsyncKolbo(KEY, _transport=proxy, _clock=vclock, rate_limits=None) as client:  # type: ignore[arg-type]
            with caplog.at_level(logging.WARNING, logger="kolbo_async"):
                outcomes = await collect(
                    client.videos.generate_many(requests, journal=journal, concurrency=1)
                )
            holder[0].execute("ROLLBACK")
            holder[0].close()
            (created,) = sim.generations
            by_index = {o.index: o for o in outcomes}
            assert by_index[0].generation is not None
            assert by_index[0].generation.id == created
            assert by_index[0].error is None
            assert all(type(by_index[i].error) is k.KolboError for i in (1, 2))
            errors = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) == 1
            assert created in errors[0].getMessage()
            assert "charged" in errors[0].getMessage()
            again = await collect(client.videos.generate_many(requests, journal=journal))
        assert isinstance({o.index: o for o in again}[0].error, k.SubmissionOutcomeUnknownError)
        assert posted(sim) == {"a": 1, "b": 1, "c": 1}

    async def test_an_id_written_only_with_the_end_is_enough_for_a_rerun(
        self, sim: Simulator, vclock: VirtualClock, tmp_path: Path
    ) -> None:
        """The answer's write fails and the lock goes before the generation ends: the end's
        write records the id and status without the answer. A rerun yields that outcome
        (it used to stop with a ValueError reading the missing answer) and pays nothing."""
        journal = tmp_path / "batch.db"
        proxy = _Rewrite(sim)
        holder: list[sqlite3.Connection] = []

        def lock_the_journal() -> None:
            holder.append(sqlite3.connect(journal, timeout=0, isolation_level=None))
            holder[0].execute("BEGIN EXCLUSIVE")

        class Unlock(logging.Handler):  # the answer's write has failed: let the end's through
            def emit(self, record: logging.LogRecord) -> None:
                if record.levelno == logging.ERROR and holder:
                    holder[0].execute("ROLLBACK")
                    holder.pop().close()

        proxy.on_post = lock_the_journal
        unlock = Unlock()
        logging.getLogger("kolbo_async").addHandler(unlock)
        async with AsyncKolbo(KEY, _transport=proxy, _clock=vclock, rate_limits=None) as client:  # type: ignore[arg-type]
            try:
                (first,) = await collect(client.videos.generate_many(prompts("a"), journal=journal))
            finally:
                logging.getLogger("kolbo_async").removeHandler(unlock)
            assert first.error is None and first.generation is not None
            with closing(sqlite3.connect(journal)) as db:
                assert db.execute(
                    "SELECT state, generation_id, submission FROM items"
                ).fetchall() == [("finished", first.generation.id, None)]
            proxy.on_post = None
            (again,) = await collect(client.videos.generate_many(prompts("a"), journal=journal))
        assert again.error is None
        assert again.generation is not None and again.generation.id == first.generation.id
        assert posted(sim) == {"a": 1}


class TestCancelledBeforeThePost:
    """A cancellation (Ctrl-C, a timeout) landing while the intent is written, before the
    POST leaves: nothing is sent, and the intent is taken back, so a rerun sends the item
    instead of reporting it as outcome-unknown."""

    @staticmethod
    def after_each_intent(monkeypatch: pytest.MonkeyPatch, then: Any) -> None:
        real = Journal._write

        def write(self: Journal, *args: Any) -> None:
            real(self, *args)
            anyio.from_thread.run(then)

        monkeypatch.setattr(Journal, "_write", write)

    async def test_cancelled_batch_sends_nothing_and_goes_on_later(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        journal = tmp_path / "batch.db"
        scope = anyio.CancelScope()

        async def cancel() -> None:
            scope.cancel()

        self.after_each_intent(monkeypatch, cancel)
        batch = client.videos.generate_many(prompts("a", "b", "c"), journal=journal, concurrency=3)
        with scope:
            await batch.__anext__()
        assert scope.cancelled_caught
        assert posted(sim) == {}
        assert intents(journal) == []
        monkeypatch.undo()
        rest = await collect(batch)  # the items went back to be sent
        assert sorted(o.index for o in rest) == [0, 1, 2]
        assert all(o.error is None for o in rest)
        assert posted(sim) == {"a": 1, "b": 1, "c": 1}

    async def test_client_closed_under_the_batch(
        self, sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The blocking client's Ctrl-C path: the client is closed while intents are being
        written; the POSTs are refused by the SDK, and their intents taken back."""
        journal = tmp_path / "batch.db"
        async with sim.client(KEY) as client:
            self.after_each_intent(monkeypatch, client.aclose)
            outcomes = await collect(
                client.videos.generate_many(prompts("a", "b"), journal=journal, concurrency=2)
            )
        monkeypatch.undo()
        assert posted(sim) == {}
        assert all(type(o.error) is k.KolboError and "closed" in str(o.error) for o in outcomes)
        assert intents(journal) == []
        async with sim.client(KEY) as client:
            again = await collect(client.videos.generate_many(prompts("a", "b"), journal=journal))
        assert all(o.error is None for o in again)
        assert posted(sim) == {"a": 1, "b": 1}

    async def test_an_earlier_unknown_is_kept(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """resubmit_unknown=True, then cancelled before the POST: the earlier run's unknown
        outcome is put back as it was (the earlier POST may still have been charged)."""
        journal = tmp_path / "batch.db"
        sim.inject("generate", "drop_after")
        await collect(client.videos.generate_many(prompts("x"), journal=journal))
        before = intents(journal)
        assert len(before) == 1
        scope = anyio.CancelScope()

        async def cancel() -> None:
            scope.cancel()

        self.after_each_intent(monkeypatch, cancel)
        batch = client.videos.generate_many(prompts("x"), journal=journal, resubmit_unknown=True)
        with scope:
            await batch.__anext__()
        await batch.aclose()
        monkeypatch.undo()
        assert intents(journal) == before
        again = await collect(client.videos.generate_many(prompts("x"), journal=journal))
        assert isinstance(again[0].error, k.SubmissionOutcomeUnknownError)
        assert posted(sim) == {"x": 1}
