"""The batch journal in process: one run at a time, items matched by content, files that are
not ours left alone, the budget kept when answers do not state their charge, and no paid POST
lost to a cancellation."""

from __future__ import annotations

import gc
import json
import os
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import kolbo_async as k
from kolbo_async import AsyncKolbo, TextToVideo
from kolbo_async._journal import APPLICATION_ID, request_key
from kolbo_async.testing import Simulator, VirtualClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "d4" * 20


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(vclock: VirtualClock) -> Simulator:
    return Simulator(clock=vclock)


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[AsyncKolbo]:
    async with sim.client(KEY) as client:
        yield client


def posted(sim: Simulator) -> Counter[str]:
    """Generation POSTs the simulator received, per prompt."""
    return Counter(
        str(r.json.get("prompt"))
        for r in sim.requests
        if r.method == "POST" and r.path.startswith("/api/v1/generate/video")
    )


async def collect(batch: Any) -> list[k.BatchOutcome[k.AsyncGeneration]]:
    return [outcome async for outcome in batch]


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

    def __init__(self, sim: Simulator, *, drop: tuple[str, ...] = ()) -> None:
        self.inner = sim.transport()
        self.drop = drop
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
        if not self.drop:
            return response
        await response.aread()
        body = json.loads(response.content)
        for name in self.drop:
            body.pop(name, None)
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
