"""Batches: `AsyncBatch`, what `generate_many` and `as_completed` return.

A batch is an iterator object, not an async generator: an async generator cannot safely hold
a task group across ``yield``. Each ``__anext__`` opens one, in which the submitter POSTs
(paced at the generation rate; the POST itself shielded, so a cancellation never loses an
answer Kolbo has charged for) while the batch listens on the client's shared poller, and
closes it again before returning an outcome. Between items nothing runs.
"""

from __future__ import annotations

import logging
import weakref
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from ._batch_feed import open_feed, resolve
from ._batch_submit import SubmittingBatch
from ._batch_types import BatchOutcome, Nothing, Submitter, warn_unfinished
from ._budget import Budget
from ._exceptions import InvalidRequestError, KolboError, outcome_error
from ._handles import AsyncGeneration, poller_of, track_of
from ._journal_path import SharedSpec, journal_spec
from ._models import Submission
from ._poller import Listener, Poller, Track
from ._requests import BatchRequest
from ._rerun import Step
from ._runtime import forks

if TYPE_CHECKING:
    pass

# Defined beside it, and imported from here by the client and the blocking wrapper.
__all__ = ["AsyncBatch", "BatchOutcome", "Nothing", "Submitter", "completion_batch", "journal_spec"]

logger = logging.getLogger("kolbo_async")


class AsyncBatch(SubmittingBatch):
    """The async iterator of `BatchOutcome` that `generate_many` and `as_completed` return.

    Outcomes come in completion order, one per item; one failure never stops the rest. Work
    happens while you iterate: each ``__anext__`` submits, polls and returns, and between
    items nothing runs (hand slow per-item work to a task group). Stopping early (``break``,
    `aclose`, a cancellation) cancels nothing on Kolbo's side: `unfinished` lists what is
    still running, and a warning on the ``kolbo_async`` logger says how to re-attach.
    """

    def __init__(
        self,
        poller: Poller,
        *,
        submitter: Submitter | None = None,
        items: Sequence[tuple[BatchRequest, str, dict[str, Any]]] = (),
        handles: Sequence[AsyncGeneration] = (),
        concurrency: int = 8,
        journal: Path | SharedSpec | None = None,
        max_credits: float | None = None,
        resubmit_unknown: bool = False,
    ) -> None:
        self._poller = poller
        self._submitter = submitter
        self._items = items
        self._handles = handles
        self._concurrency = concurrency
        self._feed = open_feed(journal, [(path, body) for _, path, body in items],
                               resubmit_unknown=resubmit_unknown, budget=max_credits)  # fmt: skip
        self._budget = Budget(max_credits)
        self._listener = Listener(every=False)
        self._outcomes: deque[BatchOutcome[AsyncGeneration]] = deque()
        # Items per track: two handles on one id (attached twice, or a server answering two
        # POSTs with one id) share a track, and each still gets its outcome.
        self._running: dict[Track, list[tuple[int, AsyncGeneration]]] = {}
        self._posting = 0
        self._slot = None
        self._halted = None
        self._fatal = None
        self._started = False
        self._closed = False
        self._forks = forks()  # a forked child's copy is its parent's batch, not its own

    @property
    def unfinished(self) -> list[AsyncGeneration]:
        """Handles submitted (or attached) by this batch whose outcome it has not yielded.

        Pass them to `kolbo_async.as_completed` to go on waiting after stopping early.
        """
        queued = [outcome.generation for outcome in self._outcomes if outcome.generation]
        running = [generation for items in self._running.values() for _, generation in items]
        return running + queued

    def __aiter__(self) -> AsyncBatch:
        return self

    async def __aenter__(self) -> AsyncBatch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop: nothing more is submitted or polled; running generations go on at Kolbo.

        Logs a warning naming the generations still running, and how to re-attach them.
        """
        if self._closed:
            return
        self._closed = True
        for track in list(self._running):
            self._poller.unwatch(self._listener, track)
        self._warn_unfinished()
        try:
            with anyio.CancelScope(shield=True):
                await self._journal.close()
        except BaseException:
            # asyncio's own cancellation gets through the shield, maybe before the close
            # reached its thread, and a second `aclose` returns at once: let go from here
            # (a write still running closes the journal when it ends).
            self._journal.close_now()
            raise

    def __del__(self) -> None:
        # `break` out of `async for` calls nothing, but CPython collects the batch at once.
        # (A Ctrl-C may have interrupted `__init__`: then there is nothing to do.)
        if getattr(self, "_forks", None) != forks():
            return  # the parent runs it on; its journal forgets itself in the child
        if not getattr(self, "_closed", True):
            self._warn_unfinished()
            for track in self._running:  # what it listened to no longer waits on it
                self._poller.unwatch(self._listener, track)
        feed = getattr(self, "_feed", None)
        if feed is not None:
            feed.journal.close_now()

    async def __anext__(self) -> BatchOutcome[AsyncGeneration]:
        while True:
            outcome = await self._next()
            try:
                if await self._journal.holds(outcome.index):
                    break
            except KolboError as error:
                # Out of reach: give it (a worker that took it over gives it too: at least once).
                logger.warning("requests[%d]: %s", outcome.index, error)
                break
            # Another worker took it over (this one was paused past its lease): it reports it.
        self._journal.handed(outcome.index)  # a shared journal hands it to nobody else
        return outcome

    async def _next(self) -> BatchOutcome[AsyncGeneration]:
        if self._outcomes:
            return self._outcomes.popleft()
        if self._closed:
            raise StopAsyncIteration
        if not self._started:
            await self._start()
        poller = self._poller
        listener = self._listener
        while not self._outcomes:
            if self._fatal is not None:
                fatal, self._fatal = self._fatal, None
                await self.aclose()
                raise fatal
            if not (self._running or self._posting or self._feed.waiting()):
                await self.aclose()  # nothing is left to warn about
                raise StopAsyncIteration
            # The submitter stops (through its own scope) whenever an outcome is ready. A
            # cancellation leaves its exception in a reference cycle with the frames it
            # crossed, so neither this frame nor the loop's may be one: the loop holds the
            # batch only weakly, and then dropping the batch (``break``) collects it, and
            # warns, at once.
            stop = anyio.CancelScope()
            async with anyio.create_task_group() as tg:
                if self._feed.waiting() and self._halted is None:
                    ref: weakref.ref[SubmittingBatch] = weakref.ref(self)
                    tg.start_soon(SubmittingBatch._submit_loop, ref, tg, stop)
                listener.woken = False  # its own flag: set by `_wake` from the submitter
                await poller.wait(listener, None)
                stop.cancel()
            with anyio.CancelScope(shield=True):
                await self._collect()
        return self._outcomes.popleft()

    # -- starting, and resuming from a journal ------------------------------------------

    async def _start(self) -> None:
        self._started = True
        try:
            await self._resume()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.aclose()  # lets the journal go to the next run
            raise

    async def _resume(self) -> None:
        for index, handle in enumerate(self._handles):
            self._track(handle, index, fresh=True)
        steps = await self._feed.open()  # locked and checked before anything is sent
        paid = self._dispatch(steps)
        if self._budget.limit is not None and self._feed.waiting() and self._submitter:
            models = await self._submitter.catalog()
            self._budget.catalog = {model.identifier: model for model in models}
        for index, submission in paid:
            self._account(index, submission)

    def _dispatch(self, steps: list[tuple[int, Step]]) -> list[tuple[int, Submission]]:
        """Act on what a journal says of items not to send: report or yield them, or
        re-attach and poll them; returns what earlier runs paid for them."""
        if not steps:
            return []
        assert self._submitter is not None  # a journal comes with generate_many
        acts = resolve(steps, [request for request, _, _ in self._items], self._submitter)
        self._outcomes.extend(acts.outcomes)
        for index, handle in acts.attached:
            self._track(handle, index, fresh=True)
        return acts.paid

    def _track(self, generation: AsyncGeneration, index: int, *, fresh: bool) -> None:
        poller = self._poller
        track = track_of(generation)
        # Just submitted: it is pending, so its first poll waits for the hint.
        due = None if fresh else poller.clock.now() + track.interval()
        items = self._running.get(track)
        if items is not None:
            items.append((index, generation))
            return
        self._running[track] = [(index, generation)]
        poller.watch(self._listener, track, fresh=fresh, due=due)

    # -- outcomes ------------------------------------------------------------------------

    async def _collect(self) -> None:
        for track in self._listener.take():
            if not track.finished:
                continue
            self._poller.unwatch(self._listener, track)
            for index, generation in self._running.pop(track, ()):
                await self._finished(index, generation, track)

    async def _finished(self, index: int, generation: AsyncGeneration, track: Track) -> None:
        status = track.status
        request = self._items[index][0] if self._items else None
        error = track.error
        if error is None:
            assert status is not None
            error = outcome_error(status)
            await self._journal.finished(index, generation.id, status.raw)
        self._outcomes.append(BatchOutcome(index, request, generation, status, error))
        self._free_slot()

    def _yield(self, outcome: BatchOutcome[AsyncGeneration]) -> None:
        self._outcomes.append(outcome)
        self._wake()

    def _wake(self) -> None:
        self._poller.poke(self._listener)

    def _warn_unfinished(self) -> None:
        warn_unfinished([generation.id for generation in self.unfinished])


def completion_batch(handles: Sequence[AsyncGeneration]) -> AsyncBatch:
    """The batch `as_completed` returns for async handles (checked: one client, no twice)."""
    seen: set[int] = set()
    for index, handle in enumerate(handles):
        if id(handle) in seen:
            raise InvalidRequestError(f"handles[{index}]", "appears twice")
        seen.add(id(handle))
    pollers = {id(poller_of(handle)) for handle in handles}
    if len(pollers) > 1:
        raise InvalidRequestError("handles", "must all come from one client")
    return AsyncBatch(poller_of(handles[0]), handles=handles)
