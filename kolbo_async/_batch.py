"""Batches: `AsyncBatch` (what `generate_many` and `as_completed` return) and `BatchOutcome`.

A batch is an iterator object, not an async generator: an async generator cannot safely hold
a task group across ``yield``. Each ``__anext__`` opens one, in which the submitter POSTs
(paced at the generation rate; the POST itself shielded, so a cancellation never loses an
answer Kolbo has charged for) while the batch listens on the client's shared poller, and
closes it again before returning an outcome. Between items nothing runs.
"""

from __future__ import annotations

import logging
import math
import os
import re
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import anyio
import anyio.lowlevel
import attrs

from ._convert import structure
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    InsufficientCreditsError,
    InvalidRequestError,
    KolboError,
    PermissionDeniedError,
    SubmissionOutcomeUnknownError,
    outcome_error,
)
from ._handles import AsyncGeneration, poller_of
from ._journal import FINISHED, INTENT, SUBMITTED, ItemKey, Journal, Row, item_keys
from ._models import GenerationStatus, Model, Submission
from ._poller import Listener, Poller, Track
from ._requests import BatchRequest, ImageToVideo, TextToVideo

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ["AsyncBatch", "BatchOutcome", "Nothing", "Submitter", "completion_batch", "journal_path"]

logger = logging.getLogger("kolbo_async")

H = TypeVar("H")

#: Errors after which no later POST of the batch can succeed: the rest are not sent.
_ACCOUNT_ERRORS = (InsufficientCreditsError, AuthenticationError, PermissionDeniedError)


@attrs.frozen
class BatchOutcome(Generic[H]):
    """How one item of a batch ended; `generate_many` and `as_completed` yield one per item.

    Attributes:
        index: the item's position in the requests (or handles) given.
        request: its `TextToVideo` / `ImageToVideo` (None from `as_completed`).
        generation: its handle, or None when no generation was created: the POST was
            refused, its outcome is unknown, or the batch stopped before sending it.
        status: the terminal `GenerationStatus`, or None when none was learnt.
        error: None when the video is ready. Otherwise why not: `GenerationFailedError`
            (`GenerationCancelledError`, or a completion without any URL), the API error of
            the POST or of polling, `SubmissionOutcomeUnknownError` (it may have been
            charged: check before sending it again), or a `KolboError` saying that the
            budget or an account error held it back unsent.

    Example:
        >>> async for outcome in client.videos.generate_many(requests):   # doctest: +SKIP
        ...     if outcome.error is None:
        ...         await outcome.generation.download(f"{outcome.index}.mp4")
    """

    index: int
    request: TextToVideo | ImageToVideo | None
    generation: H | None
    status: GenerationStatus | None
    error: Exception | None


class Submitter(Protocol):
    """What a batch of requests needs from its client, and nothing more."""

    async def admit(self) -> None:
        """Wait for the generation window (cancellably) and count one POST in it."""

    async def submit(self, path: str, body: dict[str, Any]) -> AsyncGeneration:
        """The generation POST, already admitted; run to its answer."""

    def attach(
        self, generation_id: str, submission: Submission, known: GenerationStatus | None
    ) -> AsyncGeneration:
        """A handle on a generation a journal remembers."""

    async def catalog(self) -> list[Model]:
        """Every model, with its prices (for `max_credits`)."""

    def closed(self) -> bool:
        """Whether the client is closed (nothing more may be sent)."""


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
        self._journal: Journal | None = None
        self._keys: list[ItemKey] = []
        self._max_credits = max_credits
        self._resubmit_unknown = resubmit_unknown
        self._listener = Listener(every=False)
        self._queue: deque[int] = deque()
        self._outcomes: deque[BatchOutcome[AsyncGeneration]] = deque()
        # Items per track: two handles on one id (attached twice, or a server answering two
        # POSTs with one id) share a track, and each still gets its outcome.
        self._running: dict[Track, list[tuple[int, AsyncGeneration]]] = {}
        self._posting = 0
        self._slot: anyio.Event | None = None
        self._spent = 0.0
        self._halted = False
        self._catalog: dict[str, Model] = {}
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
        if self._journal is not None:
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
                    tg.start_soon(_submit_loop, weakref.ref(self), tg, stop)
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
        rows: dict[ItemKey, Row] = {}
        if self._journal_path is not None:
            journal = Journal(self._journal_path)
            rows = await journal.open()  # locked and checked before anything is sent
            self._journal = journal
            self._keys = item_keys([(path, body) for _, path, body in self._items])
        paid: list[tuple[int, Submission]] = []
        for index, (request, _, _) in enumerate(self._items):
            row = rows.get(self._keys[index]) if rows else None
            if row is None or row.state not in (INTENT, SUBMITTED, FINISHED):
                self._queue.append(index)  # new, or refused with a 4xx last time
            elif row.state == INTENT:
                if self._resubmit_unknown:
                    self._queue.append(index)
                else:
                    error = _unknown(index, row.error)
                    self._outcomes.append(BatchOutcome(index, request, None, None, error))
            elif row.generation_id is None:  # written by hand, or by a broken disk
                self._outcomes.append(
                    BatchOutcome(index, request, None, None, _unknown(index, row.error))
                )
            else:
                submission = structure(row.submission or {}, Submission)
                paid.append((index, submission))
                assert self._submitter is not None  # a journal comes with generate_many
                if row.state == FINISHED and row.status is not None:
                    status = structure(row.status, GenerationStatus)
                    handle = self._submitter.attach(row.generation_id, submission, status)
                    self._outcomes.append(
                        BatchOutcome(index, request, handle, status, outcome_error(status))
                    )
                else:
                    handle = self._submitter.attach(row.generation_id, submission, None)
                    self._track(handle, index, fresh=True)
        if self._max_credits is not None and self._queue and self._submitter is not None:
            models = await self._submitter.catalog()
            self._catalog = {model.identifier: model for model in models}
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

    async def _post(self, index: int) -> None:
        journal = self._journal
        key = self._keys[index] if journal is not None else None
        try:
            if journal is not None and key is not None:
                with anyio.CancelScope(shield=True):  # a write that started is finished
                    if not await self._intend(index, journal, key):
                        return
            try:
                # The POST has not left yet: a cancellation that came meanwhile (Ctrl-C, a
                # timeout) sends nothing, and the item goes back to be sent later.
                await anyio.lowlevel.checkpoint_if_cancelled()
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await self._take_back(index, journal, key, None)
                raise
            # Shielded from here to the answer's record: once the POST may be on the wire,
            # a cancellation must not lose the id Kolbo charged for.
            with anyio.CancelScope(shield=True):
                try:
                    await self._send(index, journal, key)
                except Exception as exc:  # the SDK's own fault: stop, never an ExceptionGroup
                    self._fatal = self._fatal or exc
                    self._wake()
        finally:
            self._posting -= 1
            self._free_slot()

    async def _intend(self, index: int, journal: Journal, key: ItemKey) -> bool:
        """Record the intent; when it cannot be, send neither this item nor the rest."""
        request, path, body = self._items[index]
        try:
            await journal.intent(index, key, path, body)
        except KolboError as error:
            stop = KolboError(
                f"Not submitted: {error} Nothing is sent without its record in the journal; "
                "run the batch again with it once the journal can be written."
            )
            self._yield(BatchOutcome(index, request, None, None, stop))
            self._halt(stop)
            return False
        return True

    async def _take_back(
        self, index: int, journal: Journal | None, key: ItemKey | None, error: KolboError | None
    ) -> None:
        """Item `index` was certainly not sent: its intent is taken back, and it is queued
        again (`error` None: the batch was cancelled) or ends with `error`."""
        if journal is not None and key is not None:
            try:
                await journal.unsent(key)
            except KolboError as failed:
                logger.warning(
                    "requests[%d] was not sent, but %s A rerun with this journal reports it "
                    "as outcome-unknown: pass resubmit_unknown=True to send it.",
                    index,
                    failed,
                )
        if error is None:
            self._queue.appendleft(index)
        else:
            self._yield(BatchOutcome(index, self._items[index][0], None, None, error))

    async def _send(self, index: int, journal: Journal | None, key: ItemKey | None) -> None:
        assert self._submitter is not None  # items come with generate_many
        request, path, body = self._items[index]
        if self._client_closed():
            error = KolboError("Not submitted: the client was closed before its POST was sent.")
            await self._take_back(index, journal, key, error)
            return
        try:
            generation = await self._submitter.submit(path, body)
        except KolboError as error:
            if type(error) is KolboError and self._client_closed():
                # The SDK's own refusal of a closed client: no byte of the POST went out (a
                # POST on the wire keeps the client's connections open until it lands).
                await self._take_back(index, journal, key, error)
                return
            if _refused(error):
                await self._note(index, journal, key, "rejected", str(error))
                outcome_error: KolboError = error
            else:
                # It may have reached Kolbo: the journal keeps the intent, so a rerun
                # reports it instead of paying for it again.
                await self._note(index, journal, key, "unknown", f"{type(error).__name__}: {error}")
                outcome_error = _outcome_unknown(index, error, journal is not None)
            self._yield(BatchOutcome(index, request, None, None, outcome_error))
            if isinstance(error, _ACCOUNT_ERRORS):
                self._halt(error)
            return
        assert generation.submission is not None
        self._track(generation, index, fresh=False)
        if journal is not None and key is not None:
            try:
                await journal.submitted(key, generation.id, generation.submission.raw)
            except KolboError as failed:
                # The handle is kept (and yielded when it ends); the journal's intent row
                # makes a rerun report it rather than pay for it again.
                logger.error(
                    "Generation %s (requests[%d]) was created and charged, but %s Keep its id:"
                    " re-attach it with client.generations.attach(%r); a rerun with this "
                    "journal reports it as outcome-unknown.",
                    generation.id,
                    index,
                    failed,
                    generation.id,
                )
                self._halt(KolboError(
                    f"Not submitted: {failed} Nothing more is sent without its record in the "
                    "journal; run the batch again with it once the journal can be written."
                ))  # fmt: skip
        self._account(index, generation.submission)

    def _client_closed(self) -> bool:
        return self._submitter is not None and self._submitter.closed()

    async def _note(
        self, index: int, journal: Journal | None, key: ItemKey | None, what: str, error: str
    ) -> None:
        """Record a POST's failure; a journal that cannot take it keeps the intent row (a
        rerun then reports the item as outcome-unknown, never pays for it blindly)."""
        if journal is None or key is None:
            return
        try:
            await (journal.rejected if what == "rejected" else journal.unknown)(key, error)
        except KolboError as failed:
            logger.warning("requests[%d]: %s", index, failed)

    def _account(self, index: int, submission: Submission) -> None:
        """Add what item `index` was charged; with a budget, an unknown charge stops the rest."""
        charge = _stated(submission.credits_charged)
        limit = self._max_credits
        if limit is not None:
            # The dearer of what the answer states and what the catalog says: a stated 0 or
            # an understated charge must not let the rest of the budget through.
            estimate = self._price(index, submission)
            charge = estimate if charge is None else max(charge, estimate or 0.0)
            if charge is None:
                # Fail closed: an unknown charge may already have used up the budget.
                self._halt(KolboError(
                    f"Not submitted: Kolbo's answer to requests[{index}] (generation "
                    f"{submission.generation_id}) did not state what it charged, and its "
                    "price cannot be worked out from the model catalog, so "
                    f"max_credits={limit:g} could be overspent. Check the "
                    "charge on your Kolbo dashboard, then send the rest without max_credits "
                    "or with requests that name their model and duration."
                ))  # fmt: skip
                return
        self._spent += charge or 0.0

    def _price(self, index: int, submission: Submission | None = None) -> float | None:
        """What the catalog says item `index` costs, or None when that is not known.

        Read from the body sent, not the request's own fields: a model, duration or
        resolution given through `extra_body` is what Kolbo charges for. With a
        `submission`, the model Kolbo picked (Smart Select) counts too.
        """
        body = self._items[index][2]
        named = body.get("model")
        if named is None and submission is not None:
            named = submission.model
        resolution = body.get("resolution")
        if not isinstance(named, str) or not (resolution is None or isinstance(resolution, str)):
            return None
        model = self._catalog.get(named)
        if model is None:
            return None
        duration = _seconds(body.get("duration"))
        if duration is None and "duration" not in body and model.supported_durations:
            # Kolbo picks the duration: budget for the dearest it could pick (fail closed).
            duration = max(model.supported_durations)
        return None if duration is None else _stated(model.cost(duration, resolution))

    def _affordable(self, index: int) -> bool:
        limit = self._max_credits
        if limit is None:
            return True
        estimate = self._price(index)  # None: Smart Select, its price unknown until charged
        if estimate is None:
            if self._spent < limit:
                return True
            reason = f"the batch has spent {self._spent:g} credits, reaching max_credits={limit:g}"
        else:
            if self._spent + estimate <= limit:
                return True
            reason = (
                f"its estimated cost ({estimate:g} credits) would take the batch past "
                f"max_credits={limit:g} ({self._spent:g} spent)"
            )
        self._halt(KolboError(f"Not submitted: {reason}."))
        return False

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
            if self._journal is not None:
                try:
                    await self._journal.finished(self._keys[index], generation.id, status.raw)
                except KolboError as failed:
                    # Only the end is not recorded: a rerun re-attaches it and asks.
                    logger.warning("requests[%d]: %s", index, failed)
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


async def _submit_loop(
    ref: weakref.ref[AsyncBatch], tg: TaskGroup, stop: anyio.CancelScope
) -> None:
    with stop:
        await _submit(ref, tg)


async def _submit(ref: weakref.ref[AsyncBatch], tg: TaskGroup) -> None:
    while True:
        batch = ref()
        if batch is None or not batch._queue or batch._halted:
            return
        assert batch._submitter is not None
        wait: anyio.Event | None = None
        one_at_a_time = batch._max_credits is not None and batch._posting > 0
        if one_at_a_time or len(batch._running) + batch._posting >= batch._concurrency:
            batch._slot = wait = anyio.Event()
        elif not batch._affordable(batch._queue[0]):
            return
        admit = batch._submitter.admit
        del batch
        if wait is not None:
            await wait.wait()
            continue
        # Waited for (and counted) here, cancellably; the POST itself is shielded.
        await admit()
        batch = ref()
        if batch is None:
            return
        index = batch._queue.popleft()
        batch._posting += 1
        tg.start_soon(batch._post, index)
        del batch


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


def _seconds(value: object) -> float | None:
    """A duration as Kolbo would read it (a number, or a numeric string), or None."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def _stated(value: object) -> float | None:
    """A charge as a number of credits, or None when it is missing or not a usable one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _outcome_unknown(index: int, error: KolboError, journal: bool) -> SubmissionOutcomeUnknownError:
    if isinstance(error, SubmissionOutcomeUnknownError):
        return error
    rerun = (
        " A rerun with this journal reports it instead of sending it (resubmit_unknown=True "
        "sends it)."
        if journal
        else ""
    )
    unknown = SubmissionOutcomeUnknownError(
        f"requests[{index}]: the POST failed without Kolbo refusing it ({type(error).__name__}: "
        f"{error}); Kolbo may have created (and charged for) the generation. Check your Kolbo "
        f"dashboard before sending it again.{rerun}"
    )
    unknown.__cause__ = error
    return unknown


def _unknown(index: int, detail: str | None) -> SubmissionOutcomeUnknownError:
    why = f" ({detail})" if detail else ""
    return SubmissionOutcomeUnknownError(
        f"requests[{index}]: a previous run sent this POST but never learnt whether Kolbo "
        f"created it{why}; Kolbo may have created (and charged for) the generation. It was "
        "NOT sent again: check your Kolbo dashboard, then pass resubmit_unknown=True to send "
        "it anyway."
    )


def journal_path(journal: str | os.PathLike[str] | None) -> Path | None:
    """The journal argument as a path (None: no journal).

    A string may be an SQLite URL as SQLAlchemy writes them: ``sqlite:///batch.db`` is
    relative, ``sqlite:////var/batch.db`` absolute. Any other URL is refused here, before
    anything is sent or created.
    """
    if journal is None:
        return None
    if not isinstance(journal, (str, os.PathLike)):
        raise InvalidRequestError(
            "journal", f"must be a path or None, not {type(journal).__name__}"
        )
    if isinstance(journal, str) and _URL.match(journal):
        journal = _sqlite_url_path(journal)
    path = Path(journal)
    if path.is_dir():
        raise InvalidRequestError("journal", f"{str(path)!r} is a directory; name a file")
    return path


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SQLITE = "sqlite:///"


def _sqlite_url_path(url: str) -> str:
    scheme = url.partition("://")[0].lower()
    if scheme != "sqlite":
        raise InvalidRequestError(
            "journal",
            f"{scheme}:// journals are not supported; give a file path, or sqlite:///PATH "
            "(relative) or sqlite:////PATH (absolute)",
        )
    if not url.lower().startswith(_SQLITE) or len(url) == len(_SQLITE):
        raise InvalidRequestError(
            "journal",
            "an SQLite URL names a local file: sqlite:///relative.db or "
            "sqlite:////absolute/path.db (no host, and not in memory)",
        )
    path = url[len(_SQLITE) :]
    if "?" in path:
        raise InvalidRequestError(
            "journal", "an SQLite URL with query parameters is not supported; name the file only"
        )
    return path


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


class Nothing:
    """What `as_completed([])` returns: empty under ``for`` and ``async for`` alike."""

    unfinished: list[Any] = []  # noqa: RUF012 - never mutated

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __aiter__(self) -> Nothing:
        return self

    async def __anext__(self) -> Any:
        raise StopAsyncIteration

    def close(self) -> None:
        """Nothing to close."""

    async def aclose(self) -> None:
        """Nothing to close."""
