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

from ._batch_journal import BatchJournal
from ._batch_send import Created, Fault, post
from ._batch_types import BatchOutcome, Nothing, Submitter
from ._budget import Budget
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    InvalidRequestError,
    KolboError,
    SubmissionOutcomeUnknownError,
    outcome_error,
)
from ._handles import AsyncGeneration, poller_of
from ._journal import Journal, item_keys
from ._journal_path import journal_path
from ._models import Submission
from ._poller import Listener, Poller, Track
from ._requests import BatchRequest
from ._rerun import Ended, Send, Step, Unknown, plan, unknown_error

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

# Defined beside it, and imported from here by the client and the blocking wrapper.
__all__ = ["AsyncBatch", "BatchOutcome", "Nothing", "Submitter", "completion_batch", "journal_path"]

logger = logging.getLogger("kolbo_async")


class AsyncBatch:
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
        journal: Path | None = None,
        max_credits: float | None = None,
        resubmit_unknown: bool = False,
    ) -> None:
        self._poller = poller
        self._submitter = submitter
        self._items = items
        self._handles = handles
        self._concurrency = concurrency
        self._journal_path = journal
        self._journal = BatchJournal()  # the real one once opened
        self._budget = Budget(max_credits)
        self._resubmit_unknown = resubmit_unknown
        self._listener = Listener(every=False)
        self._queue: deque[int] = deque()
        self._outcomes: deque[BatchOutcome[AsyncGeneration]] = deque()
        # Items per track: two handles on one id (attached twice, or a server answering two
        # POSTs with one id) share a track, and each still gets its outcome.
        self._running: dict[Track, list[tuple[int, AsyncGeneration]]] = {}
        self._posting = 0
        self._slot: anyio.Event | None = None
        self._halted = False
        self._fatal: BaseException | None = None
        self._started = False
        self._closed = False

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
        with anyio.CancelScope(shield=True):
            await self._journal.close()

    def __del__(self) -> None:
        # `break` out of `async for` calls nothing, but CPython collects the batch at once.
        # (A Ctrl-C may have interrupted `__init__`: then there is nothing to do.)
        if not getattr(self, "_closed", True):
            self._warn_unfinished()
        journal = getattr(self, "_journal", None)
        if journal is not None:
            journal.close_now()

    async def __anext__(self) -> BatchOutcome[AsyncGeneration]:
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
            if not (self._running or self._posting or self._queue):
                await self.aclose()  # nothing is left to warn about
                raise StopAsyncIteration
            # The submitter stops (through its own scope) whenever an outcome is ready. A
            # cancellation leaves its exception in a reference cycle with the frames it
            # crossed, so neither this frame nor the loop's may be one: the loop holds the
            # batch only weakly, and then dropping the batch (``break``) collects it, and
            # warns, at once.
            stop = anyio.CancelScope()
            async with anyio.create_task_group() as tg:
                if self._queue and not self._halted:
                    tg.start_soon(AsyncBatch._submit_loop, weakref.ref(self), tg, stop)
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
        steps: list[Step] = [Send()] * len(self._items)
        if self._journal_path is not None:
            journal = Journal(self._journal_path)
            rows = await journal.open()  # locked and checked before anything is sent
            keys = item_keys([(path, body) for _, path, body in self._items])
            self._journal = BatchJournal(journal, keys)
            steps = plan(keys, rows, resubmit_unknown=self._resubmit_unknown)
        paid: list[tuple[int, Submission]] = []
        for index, ((request, _, _), step) in enumerate(zip(self._items, steps, strict=True)):
            if isinstance(step, Send):
                self._queue.append(index)
            elif isinstance(step, Unknown):
                error = unknown_error(index, step.detail)
                self._outcomes.append(BatchOutcome(index, request, None, None, error))
            else:
                paid.append((index, step.submission))
                assert self._submitter is not None  # a journal comes with generate_many
                if isinstance(step, Ended):
                    status = step.status
                    handle = self._submitter.attach(step.generation_id, step.submission, status)
                    self._outcomes.append(
                        BatchOutcome(index, request, handle, status, outcome_error(status))
                    )
                else:
                    handle = self._submitter.attach(step.generation_id, step.submission, None)
                    self._track(handle, index, fresh=True)
        if self._budget.limit is not None and self._queue and self._submitter is not None:
            models = await self._submitter.catalog()
            self._budget.catalog = {model.identifier: model for model in models}
        for index, submission in paid:
            self._account(index, submission)

    def _track(self, generation: AsyncGeneration, index: int, *, fresh: bool) -> None:
        poller = self._poller
        hint = None if generation.submission is None else generation.submission.poll_interval_hint
        track = poller.track(generation.id, fallback_hint=hint)
        # Just submitted: it is pending, so its first poll waits for the hint.
        due = None if fresh else poller.clock.now() + track.interval()
        items = self._running.get(track)
        if items is not None:
            items.append((index, generation))
            return
        self._running[track] = [(index, generation)]
        poller.watch(self._listener, track, fresh=fresh, due=due)

    # -- submitting ----------------------------------------------------------------------

    @staticmethod
    async def _submit_loop(
        ref: weakref.ref[AsyncBatch], tg: TaskGroup, stop: anyio.CancelScope
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
                # Waited for (and counted) here, cancellably; the POST itself is shielded.
                await admit()
                batch = ref()
                if batch is None:
                    return
                batch._launch(tg)
                del batch

    def _ready(self) -> anyio.Event | bool:
        """Whether the next item may be admitted now (True), once a slot frees (the event
        to wait for), or not at all (False: nothing to send, or the batch halted)."""
        if not self._queue or self._halted:
            return False
        one_at_a_time = self._budget.limit is not None and self._posting > 0
        if one_at_a_time or len(self._running) + self._posting >= self._concurrency:
            self._slot = wait = anyio.Event()
            return wait
        refusal = self._budget.refusal(self._items[self._queue[0]][2])
        if refusal is not None:
            self._halt(refusal)
            return False
        return True

    def _launch(self, tg: TaskGroup) -> None:
        """POST the next item (admitted in the generation window)."""
        if not self._queue or self._halted:
            return  # halted while it was being admitted
        index = self._queue.popleft()
        self._posting += 1
        tg.start_soon(self._post, index)

    async def _post(self, index: int) -> None:
        request, path, body = self._items[index]
        assert self._submitter is not None  # items come with generate_many
        try:
            # `_refused` is read here, each time: it is this module's rule (and tests swap it).
            answer = await post(index, path, body, self._submitter, self._journal, _refused)
        except anyio.get_cancelled_exc_class():
            self._queue.appendleft(index)  # not sent: it goes back to be sent later
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
        """Send nothing more: every item not yet sent ends with `error`."""
        self._halted = True
        while self._queue:
            index = self._queue.popleft()
            self._outcomes.append(BatchOutcome(index, self._items[index][0], None, None, error))
        self._wake()

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

    def _free_slot(self) -> None:
        if self._slot is not None:
            self._slot.set()
            self._slot = None

    def _warn_unfinished(self) -> None:
        left = [generation.id for generation in self.unfinished]
        if not left:
            return
        shown = ", ".join(left[:10]) + (", ..." if len(left) > 10 else "")
        logger.warning(
            "A batch stopped before reporting %d generation(s) it submitted (already paid; "
            "some may still be running on Kolbo): %s. Nothing was cancelled. "
            "Re-attach with kolbo_async.as_completed("
            "[client.generations.attach(id) for id in ids]), or run the batch again with the "
            "same journal=.",
            len(left),
            shown,
        )


def _refused(error: KolboError) -> bool:
    """Whether the POST certainly created nothing: Kolbo refused it (a 4xx), or the
    connection was never made (the send path raises a plain `APIConnectionError` only then;
    anything that may have reached Kolbo is `SubmissionOutcomeUnknownError`).

    Anything else (an outcome-unknown error, a 5xx, an unreadable answer, an error of the
    SDK's own) may have followed a POST that reached Kolbo.
    """
    if isinstance(error, APIConnectionError):
        return not isinstance(error, SubmissionOutcomeUnknownError)
    return isinstance(error, APIStatusError) and 400 <= error.status_code < 500


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
