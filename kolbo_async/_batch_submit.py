"""The submitting half of a batch: `SubmittingBatch`, the base of `AsyncBatch`.

It claims each item from the batch's feed, waits for (and counts) its place in the generation
window, and POSTs it (shielded from the moment it may be on the wire), at most `concurrency`
in flight. An item is claimed before its admission is waited for: workers of a shared batch
racing for its last items would otherwise spend places in the shared window on items another
worker took. The outcome side (polling, journal rows of finished items, yielding) is
`AsyncBatch`'s, which provides the four hooks declared at the end.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio

from ._batch_feed import Feed, Look
from ._batch_journal import BatchJournal
from ._batch_send import Created, Fault, post
from ._batch_types import BatchOutcome, Submitter
from ._budget import Budget
from ._exceptions import KolboError
from ._handles import AsyncGeneration
from ._models import Submission
from ._poller import Track
from ._requests import BatchRequest
from ._rerun import Step

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ["SubmittingBatch"]


class SubmittingBatch:
    """What a batch needs to submit its items (see the module docstring)."""

    _feed: Feed
    _submitter: Submitter | None
    _items: Sequence[tuple[BatchRequest, str, dict[str, Any]]]
    _concurrency: int
    _budget: Budget
    _outcomes: deque[BatchOutcome[AsyncGeneration]]
    _running: dict[Track, list[tuple[int, AsyncGeneration]]]
    _posting: int  # items claimed and not yet answered (or given back)
    _slot: anyio.Event | None  # set when one of the `concurrency` places frees
    _halted: KolboError | None  # why nothing more is sent
    _fatal: BaseException | None

    @property
    def _journal(self) -> BatchJournal:
        return self._feed.journal

    @staticmethod
    async def _submit_loop(
        ref: weakref.ref[SubmittingBatch], tg: TaskGroup, stop: anyio.CancelScope
    ) -> None:
        # Holds the batch only between awaits (see `__anext__`).
        with stop:
            while True:
                batch = ref()
                if batch is None:
                    return
                ready = batch._ready()
                admit = batch._submitter.admit if batch._submitter is not None else None
                del batch
                if ready is False or admit is None:
                    return
                if isinstance(ready, anyio.Event):
                    await ready.wait()
                    continue
                look = await SubmittingBatch._look(ref)
                if look is None:
                    return
                if look.steps or not look.send:  # slots taken over, or others hold the rest
                    if not look.steps:
                        await anyio.sleep(look.wait)  # the journal's clock: real seconds
                    continue
                # The item is claimed before its admission is waited for: an admission spent
                # on an item another worker claimed first would be a generation's place in
                # the shared window lost (workers racing for a batch's last items).
                index = await SubmittingBatch._claim(ref)
                if index is None:
                    continue
                try:
                    # Waited for (and counted) here, cancellably; the POST itself is shielded.
                    await admit()
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await SubmittingBatch._release(ref, index)
                    raise
                batch = ref()
                if batch is None:
                    return
                if batch._halted is None:
                    batch._launch(tg, index)
                    del batch
                    continue
                del batch
                with anyio.CancelScope(shield=True):  # halted while it was being admitted
                    await SubmittingBatch._release(ref, index)
                return

    @staticmethod
    async def _claim(ref: weakref.ref[SubmittingBatch]) -> int | None:
        """Take the next item to send, counted as posting from now (None: none after all)."""
        batch = ref()
        if batch is None:
            return None
        feed = batch._feed
        batch._posting += 1
        del batch
        index = None
        try:
            index = await feed.take()
        except KolboError as error:  # the shared journal stayed unreachable
            batch = ref()
            if batch is not None:
                batch._halt(batch._journal.lost(error))
        finally:
            batch = ref()
            if index is None and batch is not None:
                batch._posting -= 1
                batch._free_slot()
        return index

    @staticmethod
    async def _release(ref: weakref.ref[SubmittingBatch], index: int) -> None:
        """Item `index` was claimed and its POST never started: it goes back to be sent
        (by this run later, or by another worker of a shared batch), or, when the batch
        halted meanwhile, ends like the other items not sent."""
        batch = ref()
        if batch is None:
            return
        feed = batch._feed
        batch._posting -= 1
        batch._free_slot()
        del batch
        await feed.release(index)
        batch = ref()
        if batch is not None and batch._halted is not None:
            batch._halt(batch._halted)  # takes what was just given back

    @staticmethod
    async def _look(ref: weakref.ref[SubmittingBatch]) -> Look | None:
        """Ask the feed what to do, and act on the items it took over (None: stop)."""
        batch = ref()
        feed = batch._feed if batch is not None else None
        del batch
        try:
            look = None if feed is None else await feed.look()
        except KolboError as error:  # the shared journal stayed unreachable
            look, failed = None, error
        batch = ref()
        if batch is None or look is None:
            if batch is not None and feed is not None:
                batch._halt(batch._journal.lost(failed))
            return None
        for index, submission in batch._dispatch(look.steps):
            batch._account(index, submission)
        if look.steps or not batch._feed.waiting():
            batch._wake()
        return look if batch._feed.waiting() else None

    def _ready(self) -> anyio.Event | bool:
        """Whether the next item may be admitted now (True), once a slot frees (the event
        to wait for), or not at all (False: nothing to send, or the batch halted)."""
        if not self._feed.waiting() or self._halted is not None:
            return False
        one_at_a_time = self._budget.limit is not None and self._posting > 0
        if one_at_a_time or len(self._running) + self._posting >= self._concurrency:
            self._slot = wait = anyio.Event()
            return wait
        first = self._feed.peek()
        refusal = None if first is None else self._budget.refusal(self._items[first][2])
        if refusal is not None:
            self._halt(refusal)
            return False
        return True

    def _launch(self, tg: TaskGroup, index: int) -> None:
        """POST item `index` (claimed, counted as posting, admitted in the generation
        window)."""
        tg.start_soon(self._post, index)

    async def _post(self, index: int) -> None:
        assert self._submitter is not None  # items come with generate_many
        request, path, body = self._items[index]
        try:
            answer = await post(index, path, body, self._submitter, self._journal)
        except anyio.get_cancelled_exc_class():
            self._feed.put_back(index)  # not sent: it goes back to be sent later
            raise
        finally:
            self._posting -= 1
            self._free_slot()
        if isinstance(answer, Fault):
            self._fatal = self._fatal or answer.error
            self._wake()
            return
        submission = None
        if isinstance(answer, Created):
            submission = answer.generation.submission
            self._track(answer.generation, index, fresh=False)
        else:
            self._yield(BatchOutcome(index, request, None, None, answer.error))
        if answer.halt is not None:
            self._halt(answer.halt)
        if submission is not None:
            self._account(index, submission)

    def _account(self, index: int, submission: Submission) -> None:
        """Count what item `index` was charged; an unknown charge under a budget halts."""
        stop = self._budget.charge(index, self._items[index][2], submission)
        if stop is not None:
            self._halt(stop)

    def _halt(self, error: KolboError) -> None:
        """Send nothing more: every item not yet sent ends with `error`. A worker of a shared
        batch cannot speak for the items it did not claim: it raises `error` once the
        outcomes in hand are given, so that its caller (a task queue) knows the batch did
        not finish here."""
        self._halted = error
        for index in self._feed.halt():
            self._outcomes.append(BatchOutcome(index, self._items[index][0], None, None, error))
        if self._feed.shared:
            self._fatal = self._fatal or error
        self._wake()

    def _free_slot(self) -> None:
        if self._slot is not None:
            self._slot.set()
            self._slot = None

    # -- the outcome side's hooks ----------------------------------------------------------

    def _dispatch(self, steps: list[tuple[int, Step]]) -> list[tuple[int, Submission]]:
        """Act on items the feed took over; what earlier runs paid for them."""
        raise NotImplementedError

    def _track(self, generation: AsyncGeneration, index: int, *, fresh: bool) -> None:
        """Poll item `index`'s generation until it ends."""
        raise NotImplementedError

    def _yield(self, outcome: BatchOutcome[AsyncGeneration]) -> None:
        """Queue `outcome` and wake the caller."""
        raise NotImplementedError

    def _wake(self) -> None:
        """Wake the caller waiting for the next outcome."""
        raise NotImplementedError
