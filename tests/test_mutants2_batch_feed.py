"""Promises of a batch's feed that its mutation run found untested (issue 18).

The feeds are driven directly: `LocalFeed` over a list (with and without an SQLite journal
left by an earlier run), `SharedFeed` over the session's PostgreSQL
(``$KOLBO_TEST_POSTGRES_URL``; skipped without it), and `resolve` with a submitter that only
records what it is asked to attach.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, cast

import anyio
import attrs
import pytest

from kolbo_async import GenerationFailedError, InvalidRequestError, SubmissionOutcomeUnknownError
from kolbo_async._batch_feed import LocalFeed, Look, SharedFeed, open_feed, resolve
from kolbo_async._batch_types import Submitter
from kolbo_async._convert import structure
from kolbo_async._journal import Journal
from kolbo_async._journal_keys import item_keys
from kolbo_async._journal_path import SharedSpec
from kolbo_async._models import GenerationStatus, Submission
from kolbo_async._requests import BatchRequest
from kolbo_async._rerun import Ended, Reattach, Send, Step, Unknown

PATH = "/v1/video/generate"
ITEMS = [(PATH, {"prompt": f"p {i}"}) for i in range(4)]


def submission(generation_id: str) -> Submission:
    return structure({"generation_id": generation_id, "credits_charged": 5}, Submission)


def status(generation_id: str, state: str) -> GenerationStatus:
    data: dict[str, Any] = {"generation_id": generation_id, "state": state}
    if state == "completed":
        data["result"] = {"urls": ["https://cdn.example/v.mp4"]}
    return structure(data, GenerationStatus)


class Attacher:
    """A submitter that only attaches: each handle is the tuple it was asked for."""

    def __init__(self) -> None:
        self.attached: list[tuple[str, Submission, GenerationStatus | None]] = []

    def attach(
        self, generation_id: str, submission: Submission, known: GenerationStatus | None
    ) -> Any:
        self.attached.append((generation_id, submission, known))
        return ("handle", generation_id)


# -- resolve ------------------------------------------------------------------------------------


def test_resolve_reports_unknowns_attaches_the_paid_and_hands_out_nothing_to_send() -> None:
    requests = cast("list[BatchRequest]", ["r0", "r1", "r2", "r3", "r4"])
    done, failed = status("g3", "completed"), status("g4", "failed")
    steps: list[tuple[int, Step]] = [
        (0, Unknown("connection reset")),
        (1, Send()),
        (2, Reattach("g2", submission("g2"))),
        (3, Ended("g3", submission("g3"), done)),
        (4, Ended("g4", submission("g4"), failed)),
    ]
    submitter = Attacher()
    acts = resolve(steps, requests, cast(Submitter, submitter))

    assert submitter.attached == [
        ("g2", submission("g2"), None),
        ("g3", submission("g3"), done),
        ("g4", submission("g4"), failed),
    ]
    assert cast("list[Any]", acts.attached) == [(2, ("handle", "g2"))]
    assert acts.paid == [(2, submission("g2")), (3, submission("g3")), (4, submission("g4"))]
    seen: list[tuple[Any, ...]] = [
        (o.index, o.request, o.generation, o.status) for o in acts.outcomes
    ]
    assert seen == [
        (0, "r0", None, None),
        (3, "r3", ("handle", "g3"), done),
        (4, "r4", ("handle", "g4"), failed),
    ]
    unknown, ended, lost = (o.error for o in acts.outcomes)
    assert isinstance(unknown, SubmissionOutcomeUnknownError)
    assert str(unknown).startswith("requests[0]: a previous run sent this POST")
    assert "(connection reset)" in str(unknown)
    assert ended is None
    assert isinstance(lost, GenerationFailedError)


# -- open_feed ----------------------------------------------------------------------------------


class TestOpenFeed:
    def test_max_credits_does_not_go_with_a_shared_journal(self) -> None:
        spec = SharedSpec("postgresql://nowhere/x", "b", 30.0)
        with pytest.raises(InvalidRequestError) as raised:
            open_feed(spec, ITEMS, resubmit_unknown=False, budget=10.0)
        assert raised.value.field == "max_credits"
        assert str(raised.value) == (
            "max_credits: bounds one process's spending: it does not go with a journal "
            "shared by many workers (postgresql://)"
        )

    def test_a_shared_journal_gives_a_shared_feed(self) -> None:
        spec = SharedSpec("postgresql://nowhere/x", "b", 30.0)
        feed = open_feed(spec, ITEMS, resubmit_unknown=False)
        assert isinstance(feed, SharedFeed)
        assert feed.shared

    @pytest.mark.parametrize("journal", [None, Path("batch.db")])
    def test_a_local_journal_or_none_gives_a_local_feed(self, journal: Path | None) -> None:
        """`max_credits` goes with a journal of one run (or none)."""
        feed = open_feed(journal, ITEMS, resubmit_unknown=False, budget=10.0)
        assert isinstance(feed, LocalFeed)
        assert not feed.shared


# -- LocalFeed ----------------------------------------------------------------------------------


@pytest.mark.anyio
class TestLocalFeed:
    async def test_the_list_is_handed_out_in_order_and_given_back_first(self) -> None:
        feed = LocalFeed(None, ITEMS, resubmit_unknown=False)
        assert await feed.open() == []
        assert not feed.journal.kept  # no journal: none is kept
        assert feed.waiting()
        assert feed.peek() == 0
        assert await feed.look() == Look([], True, 0.0)
        assert await feed.take() == 0
        assert await feed.take() == 1
        assert feed.peek() == 2
        feed.put_back(1)
        assert feed.peek() == 1
        assert await feed.take() == 1
        await feed.release(1)  # taken, never started: sent again, first
        assert await feed.take() == 1
        assert await feed.take() == 2
        assert feed.halt() == [3]
        assert not feed.waiting()
        assert feed.peek() is None
        assert await feed.take() is None
        assert await feed.look() == Look([], False, 0.0)
        assert feed.halt() == []

    async def test_the_last_item_taken_leaves_nothing_waiting(self) -> None:
        feed = LocalFeed(None, ITEMS[:1], resubmit_unknown=False)
        await feed.open()
        assert await feed.take() == 0
        assert not feed.waiting()
        assert await feed.look() == Look([], False)

    @pytest.mark.parametrize("resubmit", [False, True])
    async def test_an_earlier_runs_journal_says_what_not_to_send(
        self, tmp_path: Path, resubmit: bool
    ) -> None:
        """Item 0 was paid for, item 2's POST may have reached Kolbo: neither is handed out
        (unless `resubmit_unknown`), both come back as steps; the journal is kept open."""
        path = tmp_path / "batch.db"
        keys = item_keys(list(ITEMS))
        earlier = Journal(path)
        await earlier.open()
        await earlier.intent(0, keys[0], PATH, ITEMS[0][1])
        await earlier.submitted(keys[0], "g0", {"generation_id": "g0", "credits_charged": 5})
        await earlier.intent(2, keys[2], PATH, ITEMS[2][1])
        await earlier.unknown(keys[2], "timed out")
        await earlier.close()

        feed = LocalFeed(path, ITEMS, resubmit_unknown=resubmit)
        steps = await feed.open()
        try:
            assert feed.journal.kept
            if resubmit:
                assert steps == [(0, Reattach("g0", submission("g0")))]
                assert [await feed.take() for _ in range(3)] == [1, 2, 3]
            else:
                assert steps == [(0, Reattach("g0", submission("g0"))), (2, Unknown("timed out"))]
                assert [await feed.take() for _ in range(2)] == [1, 3]
            assert not feed.waiting()
        finally:
            await feed.journal.close()


# -- SharedFeed (PostgreSQL) --------------------------------------------------------------------


@pytest.fixture
def spec() -> SharedSpec:
    url = os.environ.get("KOLBO_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("no PostgreSQL ($KOLBO_TEST_POSTGRES_URL)")
    pytest.importorskip("psycopg")
    return SharedSpec(url, f"mutants2-{os.getpid()}-{time.time_ns()}", 30.0)


@pytest.mark.anyio
class TestSharedFeed:
    async def test_items_come_one_claim_at_a_time(self, spec: SharedSpec) -> None:
        feed = SharedFeed(spec, ITEMS[:2], resubmit_unknown=False)
        kept = [feed.journal.kept]
        assert await feed.open() == []
        try:
            kept.append(feed.journal.kept)
            assert kept == [False, True]
            assert feed.waiting()
            assert feed.peek() is None  # not known before it is claimed
            look = await feed.look()
            assert (look.steps, look.send) == ([], True)
            assert await feed.take() == 0
            assert await feed.take() == 1
            assert await feed.take() is None
            look = await feed.look()
            assert look.send is False
            # Both are this worker's: nothing more may come from others.
            assert not feed.waiting()
            feed.put_back(1)  # nothing to do: `release` gives it back
            await feed.release(1)
            assert feed.waiting()
            look = await feed.look()
            assert look.send is True
            assert await feed.take() == 1
            assert feed.halt() == []
            assert not feed.waiting()
        finally:
            await feed.journal.close()

    async def test_a_claim_made_under_cancellation_is_still_handed_over(
        self, spec: SharedSpec
    ) -> None:
        """A caller cancelled while claiming still gets the claimed item (to use or give
        back): never a row claimed by nobody's run."""
        feed = SharedFeed(spec, ITEMS[:1], resubmit_unknown=False)
        await feed.open()
        try:
            taken: list[int | None] = []
            with anyio.CancelScope() as scope:
                scope.cancel()
                taken.append(await feed.take())
            assert taken == [0]
        finally:
            await feed.journal.close()

    async def test_every_item_handed_out_ends_the_wait(self, spec: SharedSpec) -> None:
        feed = SharedFeed(spec, ITEMS[:1], resubmit_unknown=False)
        await feed.open()
        try:
            assert await feed.take() == 0
            await feed.journal.submitted(0, "g0", {"generation_id": "g0"})
            await feed.journal.finished(0, "g0", {"generation_id": "g0", "state": "failed"})
            feed.journal.handed(0)
            look = await feed.look()
            assert look == Look([], False, look.wait)
            assert not feed.waiting()
        finally:
            await feed.journal.close()


def _expire_leases(spec: SharedSpec) -> None:
    """Every lease of the batch ran out (its worker was paused, or died)."""
    import psycopg

    with psycopg.connect(spec.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE kolbo_journal_items SET lease_until = now() - interval '1 hour'"
            " WHERE batch_id = %s AND lease_until IS NOT NULL",
            (spec.batch_id,),
        )


@pytest.mark.anyio
@pytest.mark.parametrize("resubmit", [False, True])
async def test_a_dead_workers_unknown_post_is_resent_only_when_asked(
    spec: SharedSpec, resubmit: bool
) -> None:
    """Item 0's POST was about to go out when its worker died: another worker reports it as
    outcome-unknown, or sends it again with ``resubmit_unknown=True``."""
    dead = SharedFeed(spec, ITEMS[:2], resubmit_unknown=False)
    await dead.open()
    # A taker's lease must also have passed since PostgreSQL started (a restarted server
    # gives live workers a lease to renew): a short one here, so the test does not depend on
    # the server having run for 30 s. The dead worker's renewals stay 10 s apart.
    heir = open_feed(attrs.evolve(spec, lease=1.0), ITEMS[:2], resubmit_unknown=resubmit)
    try:
        assert await dead.take() == 0
        assert await dead.journal.intent(0, PATH, ITEMS[0][1]) is None
        _expire_leases(spec)
        await heir.open()
        look = await heir.look()
        if resubmit:
            assert (look.steps, look.send) == ([], True)
            assert {await heir.take(), await heir.take()} == {0, 1}
        else:
            [(index, step)] = look.steps
            assert index == 0
            assert isinstance(step, Unknown)
            assert await heir.take() == 1
        assert await heir.take() is None
    finally:
        await heir.journal.close()
        await dead.journal.close()


@pytest.mark.anyio
@pytest.mark.parametrize("resubmit", [False, True])
async def test_open_feed_passes_the_journal_items_and_resubmit_unknown_on(
    tmp_path: Path, resubmit: bool
) -> None:
    """Through `open_feed`: the earlier run's journal is read (item 1's unknown outcome is
    held back unless `resubmit_unknown`), and each item's journal writes go to its own row."""
    path = tmp_path / "batch.db"
    keys = item_keys(list(ITEMS))
    earlier = Journal(path)
    await earlier.open()
    await earlier.intent(1, keys[1], PATH, ITEMS[1][1])
    await earlier.close()

    feed = open_feed(path, ITEMS, resubmit_unknown=resubmit, budget=None)
    steps = await feed.open()
    try:
        assert feed.journal.kept
        assert steps == ([] if resubmit else [(1, Unknown(None))])
        assert await feed.journal.intent(3, PATH, ITEMS[3][1]) is None
    finally:
        await feed.journal.close()
    rows = await (reread := Journal(path)).open()
    await reread.close()
    assert set(rows) == {keys[1], keys[3]}


@pytest.mark.anyio
async def test_one_item_another_worker_holds_keeps_this_one_waiting(spec: SharedSpec) -> None:
    """Nothing to send, but another worker's claim may come back (its lease running out):
    this worker keeps looking, no later than the journal's next look."""
    from kolbo_async._journal_pg import LOOK_EVERY

    other = SharedFeed(spec, ITEMS[:1], resubmit_unknown=False)
    await other.open()
    this = SharedFeed(spec, ITEMS[:1], resubmit_unknown=False)
    try:
        assert await other.take() == 0
        await this.open()
        look = await this.look()
        assert (look.steps, look.send) == ([], False)
        assert this.waiting()
        assert 0 < look.wait <= LOOK_EVERY
    finally:
        await this.journal.close()
        await other.journal.close()


@pytest.mark.anyio
async def test_with_nobody_else_the_next_look_is_the_journals_default(spec: SharedSpec) -> None:
    from kolbo_async._journal_pg import LOOK_EVERY

    feed = SharedFeed(spec, ITEMS[:1], resubmit_unknown=False)
    await feed.open()
    try:
        look = await feed.look()
        assert look.wait == LOOK_EVERY
    finally:
        await feed.journal.close()
