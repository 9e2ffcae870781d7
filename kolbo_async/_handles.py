"""`AsyncGeneration`: one generation on Kolbo's side, and everything you can do with it."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import anyio

from ._convert import structure
from ._download import download_to
from ._exceptions import (
    ConflictError,
    GenerationCancelledError,
    GenerationFailedError,
    GenerationTimeoutError,
    InvalidRequestError,
    KolboError,
    RateLimitError,
)
from ._models import GenerationStatus, Submission, VideoResult
from ._pipeline import Call, DeadlineExceeded, Pipeline
from ._poller import Entry, Listener
from ._retries import poll_delay

__all__ = ["DEFAULT_WAIT", "AsyncGeneration", "GenerationProgress", "outcome_error"]

logger = logging.getLogger("kolbo_async")

#: Default whole-call deadline of `progress`, `wait`, `result` and `download`: 30 minutes,
#: well past Kolbo's slowest models (about 12 minutes under load).
DEFAULT_WAIT = 1800.0

ProgressCallback = Callable[[int, "int | None"], object]


class AsyncGeneration:
    """A handle on one generation; cheap, and rebuildable from its id alone.

    Get one from ``client.videos.generate(...)``, ``client.videos.from_image(...)`` or
    ``client.generations.attach(id)``.

    Example:
        >>> gen = await client.videos.generate("A drone over snowy peaks")  # doctest: +SKIP
        >>> async for update in gen.progress():                            # doctest: +SKIP
        ...     print(update.state, update.progress)
        >>> path = await gen.download("drone.mp4")                         # doctest: +SKIP
    """

    __slots__ = ("_entry", "_final", "_pipeline", "_segment", "_status_call", "id", "submission")

    def __init__(
        self, generation_id: str, *, pipeline: Pipeline, submission: Submission | None = None
    ) -> None:
        self.id = generation_id
        self.submission = submission
        self._pipeline = pipeline
        # A terminal status never changes, so once seen, waiting calls reuse it.
        self._final: GenerationStatus | None = None
        # Built from the id, never from `poll_url`: a URL from an answer could point anywhere,
        # and the key goes only where the SDK itself decides.
        self._segment = quote(generation_id, safe="")
        self._status_call: Call | None = None
        self._entry: Entry | None = None  # the shared poller's record, made on first wait

    @property
    def _status(self) -> Call:
        # Parsed on first use: a handle that is never polled (a batch item) costs no parsing.
        if self._status_call is None:
            self._status_call = self._pipeline.prepared(
                "GET", f"/api/v1/generate/{self._segment}/status"
            )
        return self._status_call

    def __repr__(self) -> str:
        return f"<AsyncGeneration id={self.id!r}>"

    async def status(self) -> GenerationStatus:
        """Fetch the current status (one GET, retried on transient failures)."""
        return await self._pipeline.call(self._status, self._parse_status)

    def progress(self, timeout: float | None = DEFAULT_WAIT) -> GenerationProgress:
        """Stream the generation's status, one item per change of state or progress.

        Polls at once, then at the server's ``poll_interval_hint``; ends after the terminal
        status and does not raise for a failed or cancelled generation. Transient errors
        are retried until the deadline. `timeout` is the whole stream's deadline in seconds,
        counted from the first ``__anext__`` (None waits forever); when it passes,
        `GenerationTimeoutError` names the id to re-attach.

        Example:
            >>> async with gen.progress() as updates:          # doctest: +SKIP
            ...     async for update in updates:
            ...         print(update.state, update.progress)
        """
        return GenerationProgress(self, timeout)

    async def wait(self, timeout: float | None = DEFAULT_WAIT) -> GenerationStatus:
        """Wait for the terminal status.

        Raises:
            GenerationFailedError: the generation failed (`GenerationCancelledError` when
                cancelled).
            GenerationTimeoutError: `timeout` seconds passed first; the generation goes on.
        """
        last: GenerationStatus | None = None
        async with self.progress(timeout) as updates:
            async for last in updates:  # noqa: B007
                pass
        # progress() ends only after a terminal status (or raises).
        assert last is not None
        error = outcome_error(last) if last.state in ("cancelled", "failed") else None
        if error is not None:
            raise error
        return last

    async def result(self, timeout: float | None = DEFAULT_WAIT) -> VideoResult:
        """Wait for the generation and return its `VideoResult`.

        Raises:
            GenerationFailedError: failed, cancelled, or completed without any video URL
                (content filters do that).
            GenerationTimeoutError: `timeout` seconds passed first.
        """
        final = await self.wait(timeout)
        error = outcome_error(final)
        if error is not None:
            raise error
        assert final.result is not None  # outcome_error checked it
        return final.result

    async def download(
        self,
        path: str | os.PathLike[str],
        *,
        index: int = 0,
        overwrite: bool = False,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = DEFAULT_WAIT,
    ) -> Path:
        """Wait for the video and stream ``result.urls[index]`` to `path`; return the path.

        The file is written to a temporary file beside `path` and put in place only when
        complete and of the announced length, so `path` never holds half a video. Without
        `overwrite`, a file that appears at `path` while the call runs is never replaced;
        with it, the old file is replaced atomically. The API key is never sent to the CDN,
        and downloads never hold up API calls (they have their own connections).
        `on_progress(done_bytes, total_bytes_or_None)` is called as bytes arrive. `timeout`
        is one deadline for the whole call, waiting included.

        Raises:
            InvalidRequestError: `path` exists (checked before waiting) and `overwrite` is
                False, names a directory or a missing directory, or `index` is out of range.
            FileExistsError: a file appeared at `path` during the call and `overwrite` is
                False (also a `KolboError`); it is left untouched.
            GenerationTimeoutError: `timeout` passed, while waiting or transferring.
            APIResponseValidationError: the CDN answered with something that is not the
                media (a web page, a broken encoding); nothing is left at `path`.
        """
        return await self._download(path, "video", index, overwrite, on_progress, timeout)

    async def download_thumbnail(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = DEFAULT_WAIT,
    ) -> Path:
        """Like `download`, for the result's thumbnail image."""
        return await self._download(path, "thumbnail", 0, overwrite, on_progress, timeout)

    async def cancel(self) -> GenerationStatus:
        """Ask Kolbo to cancel the generation; return its status afterwards.

        Retried like a GET. When the generation had already finished (HTTP 409), returns its
        current status instead of raising.
        """
        try:
            return await self._pipeline.call(
                Call("POST", f"/api/v1/generate/{self._segment}/cancel", json={}),
                self._parse_status,
            )
        except ConflictError:
            logger.debug("cancel of %s: already finished (409); fetching its status", self.id)
            return await self.status()

    def _parse_status(self, data: dict[str, Any]) -> GenerationStatus:
        if not isinstance(data.get("state"), str):
            raise ValueError("the status has no 'state'")
        if not isinstance(data.get("generation_id"), str):
            data = {**data, "generation_id": self.id}
        return structure(data, GenerationStatus)

    def _hint(self, status: GenerationStatus | None) -> float:
        hint = None if status is None else status.raw.get("poll_interval_hint")
        if hint is None and self.submission is not None:
            hint = self.submission.poll_interval_hint
        return poll_delay(hint)

    def _timeout_error(
        self, timeout: float | None, last: GenerationStatus | None
    ) -> GenerationTimeoutError:
        seen = f" (last seen: {last.state}, {last.progress}%)" if last is not None else ""
        return GenerationTimeoutError(
            f"Generation {self.id} did not finish within {timeout} s{seen}. It goes on "
            f"running on Kolbo's side: re-attach with client.generations.attach({self.id!r}).",
            generation_id=self.id,
            last_status=last,
        )

    async def _download(
        self,
        path: str | os.PathLike[str],
        what: str,
        index: int,
        overwrite: bool,
        on_progress: ProgressCallback | None,
        timeout: float | None,
    ) -> Path:
        target = _target_path(path)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise InvalidRequestError("index", f"must be a non-negative integer, not {index!r}")
        if not isinstance(overwrite, bool):
            raise InvalidRequestError("overwrite", f"must be True or False, not {overwrite!r}")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
        ):
            raise InvalidRequestError(
                "timeout", f"must be a positive number or None, not {timeout!r}"
            )
        try:
            is_dir, exists, parent_ok = await anyio.to_thread.run_sync(
                lambda: (target.is_dir(), target.exists(), target.parent.is_dir())
            )
        except OSError as exc:  # a name too long, a directory that cannot be read, ...
            raise InvalidRequestError("path", f"{str(target)[:80]!r}: {exc.strerror}") from None
        if is_dir:
            raise InvalidRequestError("path", f"{str(target)!r} is a directory; name a file")
        if not parent_ok:
            raise InvalidRequestError(
                "path", f"the directory of {str(target)!r} does not exist"
            )
        # Checked now, before a wait of up to `timeout`, so a mistake costs no waiting; the
        # last step of the transfer checks again, atomically (a file may appear meanwhile).
        if exists and not overwrite:
            raise InvalidRequestError(
                "path", f"{str(target)!r} exists; pass overwrite=True to replace it"
            )
        clock = self._pipeline.clock
        # One deadline for the whole call: time spent waiting counts against the transfer.
        deadline = None if timeout is None else clock.now() + timeout
        result = await self.result(timeout)
        if what == "thumbnail":
            url = result.thumbnail_url
            if not url:
                raise KolboError(f"Generation {self.id} has no thumbnail")
        else:
            if index >= len(result.urls):
                raise InvalidRequestError(
                    "index", f"is {index}, but generation {self.id} has {len(result.urls)} URL(s)"
                )
            url = result.urls[index]
        try:
            return await download_to(
                self._pipeline,
                url,
                target,
                overwrite=overwrite,
                on_progress=on_progress,
                deadline=deadline,
            )
        except DeadlineExceeded:
            raise self._timeout_error(timeout, None) from None


class GenerationProgress:
    """The async iterator `AsyncGeneration.progress` returns.

    It holds no background task: the client's shared poller polls while ``__anext__``
    waits, so ``break``-ing out leaks nothing on asyncio or trio, and the generation leaves
    the poller's plan. ``aclose()`` (or ``async with``) ends it at once.
    """

    __slots__ = ("_deadline", "_done", "_generation", "_last", "_listener", "_seen", "_timeout")

    def __init__(self, generation: AsyncGeneration, timeout: float | None) -> None:
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not timeout > 0  # also catches NaN
        ):
            raise InvalidRequestError(
                "timeout", f"must be a positive number or None, not {timeout!r}"
            )
        self._generation = generation
        self._timeout = timeout
        self._deadline: float | None = None
        self._last: GenerationStatus | None = None
        self._seen = -1  # the entry version last looked at; -1 before the first item
        self._done = False
        self._listener = Listener(terminal_only=False)

    def __aiter__(self) -> GenerationProgress:
        return self

    async def __aenter__(self) -> GenerationProgress:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the stream; nothing else is polled."""
        self._done = True

    async def __anext__(self) -> GenerationStatus:
        if self._done:
            raise StopAsyncIteration
        generation = self._generation
        pipeline = generation._pipeline
        pipeline.ensure_open()
        if self._deadline is None and self._timeout is not None:
            self._deadline = pipeline.clock.now() + self._timeout
        poller = pipeline.poller
        entry = poller.entry(generation)
        listener = self._listener
        # Listening only while waiting: between items nobody waits, and the poller drops
        # the generation from its plan at its next turn.
        poller.watch(listener, entry, fresh=self._seen < 0)
        try:
            while True:
                if entry.version == self._seen or (self._seen < 0 and not listener.ready):
                    await poller.wait(listener, self._deadline)
                listener.ready.clear()
                if listener.timed_out:
                    self._done = True
                    error = entry.last_error
                    if isinstance(error, RateLimitError) and entry.due >= (self._deadline or 0):
                        raise error  # the server asked for more time than the caller has
                    raise generation._timeout_error(self._timeout, self._last) from (
                        entry.last_error
                    )
                if entry.error is not None:
                    # An API error ends the stream; a cancellation does not, so a caller
                    # that cancelled a wait may iterate again later.
                    self._done = True
                    raise entry.error
                status = entry.status
                if status is None or entry.version == self._seen:
                    continue
                self._seen = entry.version
                last = self._last
                self._last = status
                if status.done:
                    self._done = True
                    return status
                if last is None or (status.state, status.progress) != (last.state, last.progress):
                    return status
        finally:
            poller.unwatch(listener, entry)


def _target_path(path: object) -> Path:
    """`path` as a `Path` to download to, or `InvalidRequestError` naming ``path``."""
    if not isinstance(path, (str, os.PathLike)):
        kind = type(path).__name__
        raise InvalidRequestError("path", f"must be a str or os.PathLike, not {kind}")
    try:
        target = Path(path)
    except TypeError:  # a PathLike that gives bytes
        raise InvalidRequestError("path", "must name a file as text, not bytes") from None
    if "\x00" in str(target):
        raise InvalidRequestError("path", "contains a NUL character")
    if not target.name:
        raise InvalidRequestError("path", f"{str(target)!r} names no file")
    return target


def outcome_error(status: GenerationStatus) -> GenerationFailedError | None:
    """Why a terminal `status` gave no video, or None when it did."""
    if status.state == "cancelled":
        return GenerationCancelledError(
            f"Generation {status.generation_id} was cancelled", status=status
        )
    if status.state == "failed":
        return GenerationFailedError(_failure_message(status), status=status)
    if status.result is None or not status.result.urls:
        return GenerationFailedError(
            f"Generation {status.generation_id} completed without any video URL "
            "(a content filter or an upstream failure removed the output)",
            status=status,
        )
    return None


def _failure_message(status: GenerationStatus) -> str:
    reason = status.error or (status.failure.message if status.failure else None)
    message = f"Generation {status.generation_id} failed"
    if status.failure is not None and status.failure.code:
        message += f" [{status.failure.code}]"
    return f"{message}: {reason}" if reason else message
