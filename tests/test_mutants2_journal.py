"""Promises of a batch's SQLite journal (`kolbo_async._journal`) that its mutation run found
untested (issue 18): each write's row as a rerun reads it, a write over an earlier run's row,
a taken-back intent that puts that row back as it was, and every refusal and failure naming
the file, what it was doing, and that nothing was sent.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from kolbo_async import _journal
from kolbo_async._exceptions import KolboError
from kolbo_async._journal import FINISHED, INTENT, REJECTED, SUBMITTED, Journal, request_key

pytestmark = pytest.mark.anyio

PATH = "/api/v1/generate/video"
BODY = {"prompt": "a cat", "duration": 5}
KEY = (request_key(PATH, BODY), 0)
OTHER = (request_key(PATH, {"prompt": "a dog"}), 0)
ANSWER = {"generation_id": "gen_1", "credits_charged": 50}
END = {"generation_id": "gen_1", "state": "failed", "error": "nsfw"}


def table(file: Path) -> list[tuple[Any, ...]]:
    """Every row as stored: (hash, occurrence, idx, path, body, state, generation_id,
    submission, status, error), in key order."""
    with closing(sqlite3.connect(file)) as db:
        return db.execute(
            "SELECT request_hash, occurrence, idx, path, body, state, generation_id,"
            " submission, status, error FROM items ORDER BY request_hash, occurrence"
        ).fetchall()


async def opened(file: Path) -> Journal:
    journal = Journal(file)
    await journal.open()
    return journal


async def test_each_write_leaves_the_row_a_rerun_reads(tmp_path: Path) -> None:
    file = tmp_path / "batch.db"
    journal = await opened(file)
    try:
        await journal.intent(3, KEY, PATH, BODY)
        [row] = table(file)
        assert row == (KEY[0], 0, 3, PATH, '{"prompt": "a cat", "duration": 5}', INTENT,
                       None, None, None, None)  # fmt: skip
        await journal.unknown(KEY, "ReadTimeout: timed out")
        assert table(file)[0][5:] == (INTENT, None, None, None, "ReadTimeout: timed out")
        await journal.submitted(KEY, "gen_1", ANSWER)  # the error is cleared
        assert table(file)[0][5:] == (
            SUBMITTED, "gen_1", '{"generation_id": "gen_1", "credits_charged": 50}', None, None
        )  # fmt: skip
        await journal.finished(KEY, "gen_1", END)  # the answer is kept
        assert table(file)[0][5:] == (
            FINISHED, "gen_1", '{"generation_id": "gen_1", "credits_charged": 50}',
            '{"generation_id": "gen_1", "state": "failed", "error": "nsfw"}', None,
        )  # fmt: skip
        assert await journal.holds(KEY) is True
        journal.handed(KEY)
    finally:
        await journal.close()
    rows = await (reread := Journal(file)).open()
    await reread.close()
    assert rows[KEY].state == FINISHED
    assert rows[KEY].submission == ANSWER
    assert rows[KEY].status == END


async def test_a_refusal_is_recorded_with_its_error_and_no_generation(tmp_path: Path) -> None:
    file = tmp_path / "batch.db"
    journal = await opened(file)
    try:
        await journal.intent(0, KEY, PATH, BODY)
        await journal.rejected(KEY, "400 bad prompt")
        assert table(file)[0][5:] == (REJECTED, None, None, None, "400 bad prompt")
    finally:
        await journal.close()


async def test_an_intent_over_an_earlier_runs_row_starts_it_afresh(tmp_path: Path) -> None:
    """A rerun sending an item again (refused with a 4xx last time) writes a clean intent:
    the new position, no id, no answer, no end, no error."""
    file = tmp_path / "batch.db"
    journal = await opened(file)
    await journal.intent(0, KEY, PATH, BODY)
    await journal.submitted(KEY, "gen_0", {"generation_id": "gen_0"})
    await journal.finished(KEY, "gen_0", {"generation_id": "gen_0", "state": "failed"})
    await journal.rejected(KEY, "400 bad prompt")
    await journal.close()
    journal = await opened(file)
    try:
        await journal.intent(7, KEY, PATH, BODY)
        [row] = table(file)
        assert row[2] == 7
        assert row[5:] == (INTENT, None, None, None, None)
    finally:
        await journal.close()


async def test_an_intent_taken_back_puts_the_earlier_row_back_as_it_was(
    tmp_path: Path,
) -> None:
    file = tmp_path / "batch.db"
    journal = await opened(file)
    await journal.intent(2, KEY, PATH, BODY)
    await journal.rejected(KEY, "400 bad prompt")
    await journal.close()
    before = table(file)
    journal = await opened(file)
    try:
        await journal.intent(5, KEY, PATH, BODY)
        await journal.intent(6, OTHER, PATH, {"prompt": "a dog"})
        await journal.unsent(KEY)
        await journal.unsent(OTHER)  # new in this run: no row at all
        assert table(file) == before
        # Taken back once: a second take-back finds nothing to put back.
        await journal.unsent(KEY)
        assert table(file) == []
    finally:
        await journal.close()


@pytest.mark.parametrize(
    ("write", "doing"),
    [
        ("intent", "record requests[4] before sending it"),
        ("unsent", "take back an intent"),
        ("submitted", "record generation gen_1"),
        ("unknown", "record an unknown outcome"),
        ("rejected", "record a refusal"),
        ("finished", "record the end of generation gen_1"),
    ],
)
async def test_a_failed_write_names_the_file_and_what_it_was_doing(
    tmp_path: Path, write: str, doing: str
) -> None:
    file = tmp_path / "batch.db"
    journal = await opened(file)
    try:
        await journal.intent(4, KEY, PATH, BODY)
        with closing(sqlite3.connect(file)) as db:
            db.execute("DROP TABLE items")
            db.commit()
        calls = {
            "intent": lambda: journal.intent(4, KEY, PATH, BODY),
            "unsent": lambda: journal.unsent(KEY),
            "submitted": lambda: journal.submitted(KEY, "gen_1", ANSWER),
            "unknown": lambda: journal.unknown(KEY, "boom"),
            "rejected": lambda: journal.rejected(KEY, "400"),
            "finished": lambda: journal.finished(KEY, "gen_1", END),
        }
        with pytest.raises(KolboError) as failed:
            await calls[write]()
        assert type(failed.value) is KolboError
        assert str(failed.value) == (
            f"Journal {file}: could not {doing} (OperationalError: no such table: items)."
        )
        assert failed.value.__cause__ is None and failed.value.__suppress_context__
    finally:
        await journal.close()


async def test_a_write_after_close_says_the_journal_is_closed(tmp_path: Path) -> None:
    file = tmp_path / "batch.db"
    journal = await opened(file)
    await journal.close()
    with pytest.raises(KolboError) as failed:
        await journal.intent(0, KEY, PATH, BODY)
    assert str(failed.value) == f"Journal {file}: it is closed (the batch was closed)."
    await journal.close()  # twice: nothing to do


async def test_a_second_run_in_this_process_is_refused_with_its_pid(tmp_path: Path) -> None:
    file = tmp_path / "batch.db"
    first = await opened(file)
    try:
        with pytest.raises(KolboError) as refused:
            await Journal(file).open()
        assert str(refused.value) == (
            f"The journal {file} is in use by another batch of this process "
            f"(pid {os.getpid()}): one journal is one run's at a time. Wait for that "
            "batch to end (or close it), then run again. Nothing was sent."
        )
    finally:
        await first.close()


async def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    file = tmp_path / "nowhere" / "batch.db"
    with pytest.raises(KolboError) as refused:
        await Journal(file).open()
    assert str(refused.value) == (
        f"Journal {file}: its directory {tmp_path / 'nowhere'} does not exist; create it "
        "first. Nothing was sent."
    )


async def test_a_directory_in_place_of_the_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "batch.db"
    file.mkdir()
    with pytest.raises(KolboError) as refused:
        await Journal(file).open()
    assert str(refused.value) == f"Journal {file}: it is not a regular file. Nothing was sent."
    await (journal := Journal(tmp_path / "other.db")).open()  # nothing held by the refusal
    await journal.close()


async def test_an_empty_file_is_made_a_journal(tmp_path: Path) -> None:
    file = tmp_path / "batch.db"
    file.touch()
    journal = await opened(file)
    try:
        await journal.intent(0, KEY, PATH, BODY)
    finally:
        await journal.close()
    assert len(table(file)) == 1


async def test_a_journal_another_program_holds_locked_is_refused_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``sqlite3`` shell's open write transaction: refused once the busy timeout (cut
    to a tenth of a second here) runs out, saying what to close; nothing changed."""
    file = tmp_path / "batch.db"
    journal = await opened(file)
    await journal.intent(0, KEY, PATH, BODY)
    await journal.close()
    monkeypatch.setattr(_journal, "BUSY_TIMEOUT", 0.1)
    with closing(sqlite3.connect(file, isolation_level=None)) as shell:
        shell.execute("BEGIN EXCLUSIVE")
        with pytest.raises(KolboError) as refused:
            await Journal(file).open()
        shell.execute("ROLLBACK")
    message = str(refused.value)
    assert message.startswith(f"Journal {file}: another program holds a lock on it (")
    assert message.endswith(
        "); close that program's transaction (an sqlite3 shell, a database browser), then "
        "run again. Nothing was sent."
    )
    assert "locked" in message
    assert len(table(file)) == 1
    await (again := Journal(file)).open()  # nothing held by the refusal
    await again.close()


# -- second pass: the locks a held journal takes, and why a file is refused ----------------------


async def test_a_held_journal_has_its_sidecar_and_its_flock(tmp_path: Path) -> None:
    """``batch.db.lock`` beside the file while a run holds it, and a ``flock`` on the file
    itself (Linux), which another open description of the file cannot take."""
    import fcntl

    file = tmp_path / "batch.db"
    journal = await opened(file)
    fd = os.open(file, os.O_RDONLY)  # closed only after the journal: SQLite's locks stay
    try:
        assert (tmp_path / "batch.db.lock").is_file()
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        await journal.close()
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once closed
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        await journal.close()
        os.close(fd)


async def test_a_hard_link_of_a_held_journal_is_refused_as_the_same_file(
    tmp_path: Path,
) -> None:
    file = tmp_path / "batch.db"
    first = await opened(file)
    link = tmp_path / "link.db"
    os.link(file, link)
    try:
        with pytest.raises(KolboError) as refused:
            await Journal(link).open()
        assert str(refused.value).startswith(
            f"The journal {link} is in use by another batch of this process (pid "
        )
        await first.intent(0, KEY, PATH, BODY)  # the first run goes on
    finally:
        await first.close()


async def test_a_journal_that_cannot_be_read_is_refused_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(This may run as root, who reads any file: the denial is simulated.)"""
    file = tmp_path / "batch.db"
    journal = await opened(file)
    await journal.close()
    real_open = Path.open

    def denied(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == file:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(KolboError) as refused:
        await Journal(file).open()
    assert str(refused.value) == (
        f"Journal {file}: it cannot be read (Permission denied). Nothing was sent."
    )


async def test_a_damaged_database_is_refused_as_no_readable_journal(tmp_path: Path) -> None:
    file = tmp_path / "batch.db"
    journal = await opened(file)
    await journal.intent(0, KEY, PATH, BODY)
    await journal.close()
    data = bytearray(file.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # the header intact, every page garbage
    file.write_bytes(bytes(data))
    with pytest.raises(KolboError) as refused:
        await Journal(file).open()
    message = str(refused.value)
    assert message.startswith(f"Journal {file}: it is not a readable journal (")
    assert message.endswith("). Nothing was sent.")
    assert file.read_bytes() == bytes(data)


async def test_a_sidecar_another_run_holds_refuses_naming_the_journal(tmp_path: Path) -> None:
    """Another run (here another open description of ``batch.db.lock`` in this process,
    as another process would hold it) keeps this one out, and the refusal names the
    journal."""
    import fcntl

    file = tmp_path / "batch.db"
    fd = os.open(tmp_path / "batch.db.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(KolboError) as refused:
            await Journal(file).open()
    finally:
        os.close(fd)
    assert str(refused.value).startswith(f"The journal {file} is in use by another run")
    await (journal := Journal(file)).open()  # free once that run let go
    await journal.close()


async def test_a_file_flocked_by_another_run_refuses_naming_the_journal(tmp_path: Path) -> None:
    import fcntl

    file = tmp_path / "batch.db"
    fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(KolboError) as refused:
            await Journal(file).open()
    finally:
        os.close(fd)
    assert str(refused.value).startswith(f"The journal {file} is in use")


async def test_two_journals_of_one_process_are_held_at_once(tmp_path: Path) -> None:
    first, second = await opened(tmp_path / "a.db"), await opened(tmp_path / "b.db")
    try:
        await first.intent(0, KEY, PATH, BODY)
        await second.intent(0, KEY, PATH, BODY)
    finally:
        await first.close()
        await second.close()


async def test_writes_to_one_journal_run_one_at_a_time(tmp_path: Path) -> None:
    """Concurrent writes of one journal (a batch's items) never overlap in their worker
    threads: each waits (briefly, at a barrier no second write reaches) alone."""
    import threading

    import anyio

    barrier = threading.Barrier(2, timeout=0.2)
    together: list[bool] = []

    class Watched(Journal):
        def _write(self, index: int, key: Any, path: str, body: str) -> None:
            try:
                barrier.wait()
                together.append(True)
            except threading.BrokenBarrierError:
                together.append(False)
                barrier.reset()
            super()._write(index, key, path, body)

    journal = Watched(tmp_path / "batch.db")
    await journal.open()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(journal.intent, 0, KEY, PATH, BODY)
            tg.start_soon(journal.intent, 1, OTHER, PATH, {"prompt": "a dog"})
    finally:
        await journal.close()
    assert together == [False, False]
    assert len(table(tmp_path / "batch.db")) == 2
