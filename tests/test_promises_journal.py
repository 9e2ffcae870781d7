"""Promises of a batch's journal (`kolbo_async._journal`) that its mutation run found
untested: what a rerun reads back is what was written (the request sent, Kolbo's answer, the
end, and why an outcome is unknown), and a write's failure names what it was doing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from kolbo_async._exceptions import KolboError
from kolbo_async._journal import FINISHED, INTENT, SUBMITTED, Journal, request_key

pytestmark = pytest.mark.anyio

PATH = "/api/v1/generate/video"
BODY = {"prompt": "a cat", "duration": 5}
KEY = (request_key(PATH, BODY), 0)
ANSWER = {"generation_id": "gen_1", "credits_charged": 50, "model": "kling"}
END = {"generation_id": "gen_1", "state": "completed", "progress": 100}


async def reopened(file: Path) -> dict[tuple[str, int], object]:
    journal = Journal(file)
    try:
        return await journal.open()  # type: ignore[return-value]
    finally:
        await journal.close()


async def test_a_rerun_reads_back_what_was_written(tmp_path: Path) -> None:
    file = tmp_path / "batch.db"
    journal = Journal(file)
    await journal.open()
    await journal.intent(0, KEY, PATH, BODY)
    with closing(sqlite3.connect(file)) as db:
        [(path, body)] = db.execute("SELECT path, body FROM items").fetchall()
    assert (path, json.loads(body)) == (PATH, BODY)  # the request as it was sent
    await journal.submitted(KEY, "gen_1", ANSWER)
    await journal.close()
    [row] = (await reopened(file)).values()
    assert (row.state, row.generation_id, row.submission) == (SUBMITTED, "gen_1", ANSWER)
    journal = Journal(file)
    await journal.open()
    await journal.finished(KEY, "gen_1", END)
    await journal.close()
    [row] = (await reopened(file)).values()
    assert (row.state, row.status, row.submission) == (FINISHED, END, ANSWER)


async def test_an_unknown_outcome_keeps_the_intent_and_says_why(tmp_path: Path) -> None:
    file = tmp_path / "batch.db"
    journal = Journal(file)
    await journal.open()
    await journal.intent(0, KEY, PATH, BODY)
    await journal.unknown(KEY, "ReadTimeout: timed out")
    await journal.close()
    [row] = (await reopened(file)).values()
    assert (row.state, row.generation_id, row.error) == (INTENT, None, "ReadTimeout: timed out")


async def test_a_second_run_in_this_process_is_refused_by_name(tmp_path: Path) -> None:
    """Refused before it opens any descriptor of the file (closing one would drop the locks
    the first run's SQLite holds), with the reason and what to do; the first run goes on."""
    file = tmp_path / "batch.db"
    first = Journal(file)
    await first.open()
    try:
        for name in (file, tmp_path / "." / "batch.db"):
            with pytest.raises(KolboError) as refused:
                await Journal(name).open()
            assert "in use by another batch of this process" in str(refused.value)
            assert str(refused.value).endswith(
                "Wait for that batch to end (or close it), then run again. Nothing was sent."
            )
        await first.intent(0, KEY, PATH, BODY)  # still writable
    finally:
        await first.close()
    await reopened(file)  # free again once closed


async def with_a_held_update(file: Path) -> tuple[Journal, threading.Event, threading.Event]:
    """A journal of `file` with an intent, whose next update (`submitted`, ...) runs on its
    worker thread until `release` is set; `inside` is set once it is running."""
    journal = Journal(file)
    await journal.open()
    await journal.intent(0, KEY, PATH, BODY)
    real = journal._update
    inside, release = threading.Event(), threading.Event()

    def held(*args: Any) -> None:
        inside.set()
        assert release.wait(10)
        real(*args)

    journal._update = held  # type: ignore[method-assign,assignment]
    return journal, inside, release


async def test_a_batch_dropped_while_a_write_runs_closes_the_journal_after_it(
    tmp_path: Path,
) -> None:
    """A batch dropped (garbage, a second Ctrl-C) while its journal writes on a worker thread:
    the write lands, then the file is closed and free. Closing SQLite's connection under the
    running statement crashed the interpreter (a segfault on 3.13)."""
    file = tmp_path / "batch.db"
    journal, inside, release = await with_a_held_update(file)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(journal.submitted, KEY, "gen_1", ANSWER)
        assert await anyio.to_thread.run_sync(inside.wait, 10)
        journal.close_now()  # as `__del__` does, from the thread that drops the batch
        release.set()
    [row] = (await reopened(file)).values()  # free again: the write closed it
    assert (row.state, row.generation_id) == (SUBMITTED, "gen_1")
    journal.close_now()  # idempotent


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_write_cancelled_natively_still_ends_before_the_journal_closes(
    tmp_path: Path,
) -> None:
    """asyncio's own cancellation (`wait_for`, `Task.cancel`, the runner after a second
    Ctrl-C) gets through anyio's hold on a thread: the caller leaves while its write runs on.
    The close that follows waits for that write instead of closing SQLite under it."""
    import asyncio

    file = tmp_path / "batch.db"
    journal, inside, release = await with_a_held_update(file)
    real_guarded = journal._guarded
    closing = threading.Event()

    def guarded(doing: str, func: Any, *args: Any) -> Any:
        if doing == "close it":
            closing.set()
        return real_guarded(doing, func, *args)

    journal._guarded = guarded  # type: ignore[method-assign]
    writing = asyncio.ensure_future(journal.submitted(KEY, "gen_1", ANSWER))
    assert await anyio.to_thread.run_sync(inside.wait, 10)
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing  # gone, while its write still runs
    closed = asyncio.ensure_future(journal.close())
    assert await anyio.to_thread.run_sync(closing.wait, 10)
    release.set()
    await closed
    [row] = (await reopened(file)).values()
    assert (row.state, row.generation_id) == (SUBMITTED, "gen_1")


async def test_a_new_run_waits_for_a_dropped_batchs_last_write_instead_of_refusing(
    tmp_path: Path,
) -> None:
    """A batch dropped while its journal writes (its close then waits for that write): a
    new batch of the process on the same file waits for that close, then opens it, rather
    than being refused as "in use by another batch of this process"."""
    file = tmp_path / "batch.db"
    journal, inside, release = await with_a_held_update(file)
    nxt = Journal(file)
    real_claim = nxt._claim
    claiming = threading.Event()

    def claim(key: object) -> None:
        claiming.set()
        real_claim(key)

    nxt._claim = claim  # type: ignore[method-assign]
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(journal.submitted, KEY, "gen_1", ANSWER)
        assert await anyio.to_thread.run_sync(inside.wait, 10)
        journal.close_now()  # deferred: the write still runs
        rows: list[dict[Any, Any]] = []

        async def reopen() -> None:
            rows.append(await nxt.open())

        tasks.start_soon(reopen)
        assert await anyio.to_thread.run_sync(claiming.wait, 10)
        release.set()
    try:
        [row] = rows[0].values()
        assert (row.state, row.generation_id) == (SUBMITTED, "gen_1")
    finally:
        await nxt.close()
