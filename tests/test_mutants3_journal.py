"""Promises of a batch's SQLite journal (`kolbo_async._journal`) that its third mutation run
found untested (issue 18): a journal is never left held (a close that comes while it opens,
a journal that holds nothing), one journal stays one run's even once its file was deleted,
a foreign file is judged from its 100-byte header only, a write waits `BUSY_TIMEOUT` for
another program's lock and no longer, every failure names the file and what it was doing,
and a taken-back intent is never half-written.

Failures of the disk are simulated (the tests may run as root, who reads any file).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from kolbo_async import _journal
from kolbo_async._exceptions import KolboError
from kolbo_async._journal import INTENT, REJECTED, SUBMITTED, Journal
from kolbo_async._journal_schema import prepare

from .test_mutants2_journal import ANSWER, BODY, KEY, OTHER, PATH, opened, table

pytestmark = pytest.mark.anyio


async def reopen_and_close(file: Path) -> None:
    """The next run can have the journal (raises if it is still held)."""
    again = await opened(file)
    await again.close()


async def refusal(file: Path) -> str:
    """Why a run opening `file` is refused."""
    with pytest.raises(KolboError) as refused:
        await Journal(file).open()
    return str(refused.value)


# -- never left held ---------------------------------------------------------------------------


async def test_a_close_that_comes_while_the_journal_opens_lets_it_go_once_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch closed (by another task) while its journal is still being opened in a worker
    thread: the close waits for the open, then lets the journal go to the next run."""
    file = tmp_path / "batch.db"
    reached, go = threading.Event(), threading.Event()

    def slow_prepare(db: sqlite3.Connection) -> None:
        reached.set()
        go.wait(10)
        prepare(db)

    monkeypatch.setattr("kolbo_async._journal.prepare", slow_prepare)
    journal = Journal(file)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(journal.open)
            await anyio.to_thread.run_sync(reached.wait, 10)  # claimed, not open yet
            tg.start_soon(journal.close)
            await anyio.wait_all_tasks_blocked()
            go.set()
        await reopen_and_close(file)
    finally:
        go.set()
        await journal.close()


async def test_closing_a_journal_that_holds_nothing_is_immediate(tmp_path: Path) -> None:
    """Never opened, or closed already: closing it does nothing, so it needs no worker thread
    and a cancellation cannot cut it short."""
    file = tmp_path / "batch.db"
    done: list[str] = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        await Journal(file).close()
        done.append("never opened")
    journal = await opened(file)
    await journal.close()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await journal.close()
        done.append("closed twice")
    assert done == ["never opened", "closed twice"]


async def test_a_failure_to_close_names_the_file(tmp_path: Path) -> None:
    """(A disk error at close is simulated.)"""

    class Failing(Journal):
        def _close(self) -> None:
            super()._close()
            raise OSError(errno.EIO, "Input/output error")

    file = tmp_path / "batch.db"
    journal = Failing(file)
    await journal.open()
    with pytest.raises(KolboError) as failed:
        await journal.close()
    assert str(failed.value) == (
        f"Journal {file}: could not close it (OSError: [Errno 5] Input/output error)."
    )
    await reopen_and_close(file)


class WatchedLock:
    """A journal's lock on its SQLite work that says when a write comes to wait for it."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.waiting = threading.Event()

    def __enter__(self) -> None:
        if self.lock.locked():
            self.waiting.set()
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_write_queued_behind_a_natively_cancelled_one_lands_before_a_drop_closes(
    tmp_path: Path,
) -> None:
    """asyncio's own cancellation lets a caller leave while its write runs on; the next
    write then waits for it on a worker thread. The batch is dropped meanwhile (`close_now`):
    the journal closes once both writes are done, so the second id Kolbo answered with is
    recorded too, never refused as written to a closed journal."""
    import asyncio

    file = tmp_path / "batch.db"
    journal = await opened(file)
    await journal.intent(0, KEY, PATH, BODY)
    await journal.intent(1, OTHER, PATH, {"prompt": "a dog"})
    real_update = journal._update
    inside, release = threading.Event(), threading.Event()

    def held(*args: Any) -> None:
        if args[0] == KEY:
            inside.set()
            assert release.wait(10)
        real_update(*args)

    journal._update = held  # type: ignore[method-assign, assignment]
    watched = journal._one_at_a_time = WatchedLock(journal._one_at_a_time)  # type: ignore[assignment]
    try:
        first = asyncio.ensure_future(journal.submitted(KEY, "gen_1", ANSWER))
        assert await anyio.to_thread.run_sync(inside.wait, 10)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first  # gone, while its write still runs
        second = asyncio.ensure_future(journal.submitted(OTHER, "gen_2", ANSWER))
        assert await anyio.to_thread.run_sync(watched.waiting.wait, 10)
        journal.close_now()  # as `__del__` does
        release.set()
        await second
    finally:
        release.set()
        journal.close_now()
    rows = await (reread := Journal(file)).open()  # free again: the last write closed it
    await reread.close()
    assert {key: (row.state, row.generation_id) for key, row in rows.items()} == {
        KEY: (SUBMITTED, "gen_1"),
        OTHER: (SUBMITTED, "gen_2"),
    }


async def test_writes_queued_behind_a_slow_one_leave_the_programs_worker_threads_free(
    tmp_path: Path,
) -> None:
    """A write that takes long (a busy disk) and a batch's other writes queued behind it:
    they wait on the journal's own slot, not on worker threads of the program's shared pool,
    which stays free for the rest of the program (a download's file, a DNS lookup)."""
    file = tmp_path / "batch.db"
    journal = await opened(file)
    real_write = journal._write
    inside, release = threading.Event(), threading.Event()

    def slow(index: int, *args: Any) -> None:
        if index == 0:
            inside.set()
            assert release.wait(10)
        real_write(index, *args)

    journal._write = slow  # type: ignore[method-assign, assignment]
    shared = anyio.to_thread.current_default_thread_limiter()
    try:
        async with anyio.create_task_group() as tg:
            for index in range(3):
                tg.start_soon(journal.intent, index, (KEY[0], index), PATH, BODY)
            assert await anyio.to_thread.run_sync(inside.wait, 10)
            await anyio.wait_all_tasks_blocked()
            assert shared.borrowed_tokens == 0
            release.set()
    finally:
        release.set()
        await journal.close()
    assert [row[2] for row in table(file)] == [0, 1, 2]


# -- one run's at a time -------------------------------------------------------------------------


async def test_a_held_journal_deleted_meanwhile_is_still_refused_to_a_second_batch(
    tmp_path: Path,
) -> None:
    """Its file deleted while a batch holds it: a second batch of this process naming it is
    refused as before, and no new file appears in its place."""
    file = tmp_path / "batch.db"
    first = await opened(file)
    try:
        await first.intent(0, KEY, PATH, BODY)
        file.unlink()
        assert (await refusal(file)).startswith(
            f"The journal {file} is in use by another batch of this process (pid {os.getpid()})"
        )
        assert not file.exists()
    finally:
        await first.close()


# -- what opening reads, and how long it waits ------------------------------------------------


async def test_a_foreign_file_is_judged_from_its_100_byte_header_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large file that is not a journal (a video named by mistake) is refused after
    reading its first 100 bytes, never read whole."""
    file = tmp_path / "batch.db"
    file.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * (1 << 20))
    reads: list[int] = []
    real_open = Path.open

    class Counted:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __enter__(self) -> Counted:
            return self

        def __exit__(self, *exc: object) -> None:
            self.inner.close()

        def read(self, size: int | None = -1) -> bytes:
            data: bytes = self.inner.read(size)
            reads.append(len(data))
            return data

    def counted(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        return Counted(handle) if self == file else handle

    monkeypatch.setattr(Path, "open", counted)
    assert "it is not an SQLite database" in await refusal(file)
    assert sum(reads) == 100


async def test_a_write_waits_busy_timeout_for_another_programs_lock_and_no_longer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`BUSY_TIMEOUT` (cut to 50 ms here) is how long a write waits for an ``sqlite3``
    shell's lock before the batch learns it (SQLite's own default would be 5 s). Real time:
    SQLite's busy handler sleeps."""
    monkeypatch.setattr(_journal, "BUSY_TIMEOUT", 0.05)
    file = tmp_path / "batch.db"
    journal = await opened(file)
    try:
        with closing(sqlite3.connect(file, isolation_level=None)) as shell:
            shell.execute("BEGIN EXCLUSIVE")
            began = time.monotonic()
            with pytest.raises(KolboError, match="database is locked"):
                await journal.intent(0, KEY, PATH, BODY)
            waited = time.monotonic() - began
            shell.execute("ROLLBACK")
        assert waited < 2.5
    finally:
        await journal.close()


# -- every failure names the file and what it was doing ---------------------------------------


#: What fails while opening (simulated), and what the refusal says after the file's name.
OPEN_FAILURES: dict[str, tuple[object, str, Callable[[], Exception], str]] = {
    "a disk error": (
        Path, "exists", lambda: OSError(errno.EIO, "Input/output error"),
        "could not open it (OSError: [Errno 5] Input/output error).",
    ),
    "SQLite refusing the file (out of descriptors)": (
        sqlite3, "connect", lambda: sqlite3.OperationalError("unable to open database file"),
        "it cannot be opened (unable to open database file). Nothing was sent.",
    ),
}  # fmt: skip


@pytest.mark.parametrize("failure", OPEN_FAILURES)
async def test_a_failure_while_opening_names_the_file_and_holds_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    owner, name, error, says = OPEN_FAILURES[failure]
    file = tmp_path / "batch.db"
    real = getattr(owner, name)

    def failing(*args: Any, **kwargs: Any) -> Any:
        if Path(args[0]) == file:  # Path.exists's self, sqlite3.connect's database
            raise error()
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)
    assert await refusal(file) == f"Journal {file}: {says}"
    monkeypatch.undo()
    await reopen_and_close(file)


async def test_a_journal_whose_rows_are_damaged_is_refused_saying_it_cannot_be_read(
    tmp_path: Path,
) -> None:
    """Its first page (the header and the schema) intact, every page of rows garbage: the
    journal opens as a journal, then its rows cannot be read; the file is left as it was."""
    file = tmp_path / "batch.db"
    journal = await opened(file)
    for index in range(40):
        await journal.intent(index, (KEY[0], index), PATH, {"prompt": "x" * 200, "i": index})
    await journal.close()
    data = file.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    damaged = data[:page] + b"\xff" * (len(data) - page)
    file.write_bytes(damaged)
    message = await refusal(file)
    assert message.startswith(f"Journal {file}: it cannot be read (")
    assert message.endswith("). Nothing was sent.")
    assert file.read_bytes() == damaged


# -- nothing half-written --------------------------------------------------------------------------


async def test_a_take_back_that_fails_midway_leaves_the_row_it_found(tmp_path: Path) -> None:
    """An earlier run's row (here a refusal), replaced by this run's intent, then taken back
    when the POST was certainly not sent. The take-back fails after its first statement
    (simulated with a trigger standing for a crash or a disk error there): the row is still
    either the intent or the earlier row, never gone, as the batch's warning promises ("a
    rerun with this journal reports it as outcome-unknown")."""
    file = tmp_path / "batch.db"
    journal = await opened(file)
    try:
        await journal.intent(0, KEY, PATH, BODY)
        await journal.rejected(KEY, "400: bad prompt")
        await journal.intent(0, KEY, PATH, BODY)
        with closing(sqlite3.connect(file)) as db:
            db.execute(
                "CREATE TRIGGER fail BEFORE INSERT ON items BEGIN"
                " SELECT RAISE(ABORT, 'disk I/O error'); END"
            )
            db.commit()
        with pytest.raises(KolboError, match="could not take back an intent"):
            await journal.unsent(KEY)
    finally:
        await journal.close()
    states = [row[5] for row in table(file)]
    assert states in ([INTENT], [REJECTED])
