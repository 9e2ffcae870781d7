"""Promises of a batch's journal (`kolbo_async._journal`) that its mutation run found
untested: what a rerun reads back is what was written (the request sent, Kolbo's answer, the
end, and why an outcome is unknown), and a write's failure names what it was doing.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

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
