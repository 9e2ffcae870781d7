"""`AsyncGeneration`: one generation on Kolbo's side, and everything you can do with it."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio

from ._exceptions import (
    ConflictError,
    GenerationTimeoutError,
    InvalidRequestError,
    KolboError,
    outcome_error,
)
from ._lazy import DeferredModule
from ._pipeline import Call, Pipeline
from ._poller import Poller, Track
from ._progress import GenerationProgress, check_timeout
from ._transfers import Transfers

if TYPE_CHECKING:
    import kolbo_async

    from . import _convert, _download, _models
    from ._models import GenerationStatus
else:  # loaded on first use (attrs classes, cattrs, the download machinery)
    _convert = DeferredModule("_convert")
    _download = DeferredModule("_download")
    _models = DeferredModule("_models")
    kolbo_async = DeferredModule("")  # public annotations: `typing.get_type_hints`

__all__ = [
    "DEFAULT_WAIT",
    "AsyncGeneration",
    "fetch_status",
    "parse_status",
    "poller_of",
    "track_of",
    "status_call",
]

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

    __slots__ = ("_pipeline", "_poller", "_status_call", "_track", "_transfers", "id",
                 "submission")  # fmt: skip

    def __init__(
        self,
        generation_id: str,
        *,
        pipeline: Pipeline,
        poller: Poller,
        transfers: Transfers,
        submission: kolbo_async.Submission | None = None,
        known: kolbo_async.GenerationStatus | None = None,
    ) -> None:
        self.id = generation_id
        self.submission = submission
        self._pipeline = pipeline
        self._poller = poller
        self._transfers = transfers
        self._status_call: Call | None = None
        # The shared poller's record, made on first wait; at once for a terminal status
        # `known` from elsewhere (a batch journal), which then costs no poll.
        self._track: Track | None = None
        if known is not None:
            self._track = poller.track(generation_id, known=known, via=pipeline)

    @property
    def _status(self) -> Call:
        # Parsed on first use: a handle that is never polled (a batch item) costs no parsing.
        if self._status_call is None:
            self._status_call = status_call(self._pipeline, self.id)
        return self._status_call

    def _tracked(self) -> Track:
        if self._track is None:
            hint = None if self.submission is None else self.submission.poll_interval_hint
            self._track = self._poller.track(self.id, fallback_hint=hint, via=self._pipeline)
        return self._track

    def _dropped_by_ctrl_c(self) -> None:
        # The blocking portal's call for a Ctrl-C that came as this handle was returned.
        if self.submission is not None:  # just charged for (an attached handle is not news)
            logger.warning(
                "Ctrl-C came as a generation POST was answered: generation %s was created "
                "and charged. Re-attach with client.generations.attach(%r).", self.id, self.id,
            )  # fmt: skip

    def __repr__(self) -> str:
        return f"<AsyncGeneration id={self.id!r}>"

    async def status(self) -> kolbo_async.GenerationStatus:
        """Fetch the current status (one GET, retried on transient failures)."""
        return await self._pipeline.call(self._status, partial(parse_status, self.id))

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
        return self._progress(timeout)

    def _progress(self, timeout: float | None, *, ends_only: bool = False) -> GenerationProgress:
        return GenerationProgress(
            poller=self._poller,
            track=self._tracked,
            clock=self._pipeline.clock,
            ensure_open=self._pipeline.ensure_open,
            timed_out=self._timeout_error,
            timeout=timeout,
            ends_only=ends_only,
        )

    async def wait(self, timeout: float | None = DEFAULT_WAIT) -> kolbo_async.GenerationStatus:
        """Wait for the terminal status.

        Raises:
            GenerationFailedError: the generation failed (`GenerationCancelledError` when
                cancelled).
            GenerationTimeoutError: `timeout` seconds passed first; the generation goes on.
        """
        async with self._progress(timeout, ends_only=True) as updates:
            last = await updates.__anext__()  # the terminal status (or it raises)
        error = outcome_error(last) if last.state in ("cancelled", "failed") else None
        if error is not None:
            raise error
        return last

    async def result(self, timeout: float | None = DEFAULT_WAIT) -> kolbo_async.VideoResult:
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

    async def cancel(self) -> kolbo_async.GenerationStatus:
        """Ask Kolbo to cancel the generation; return its status afterwards.

        Retried like a GET. When the generation had already finished (HTTP 409), returns its
        current status instead of raising.
        """
        try:
            return await self._pipeline.call(
                Call("POST", f"/api/v1/generate/{quote(self.id, safe='')}/cancel", json={}),
                partial(parse_status, self.id),
            )
        except ConflictError:
            logger.debug("cancel of %s: already finished (409); fetching its status", self.id)
            return await self.status()

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
        check_timeout(timeout)
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
            return await _download.download_to(
                self._pipeline,
                self._transfers,
                url,
                target,
                overwrite=overwrite,
                on_progress=on_progress,
                deadline=deadline,
            )
        except _download.DeadlineExceeded:
            raise self._timeout_error(timeout, None) from None


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


def status_call(pipeline: Pipeline, generation_id: str) -> Call:
    """The status poll of `generation_id`, its URL parsed once.

    Built from the id, never from `poll_url`: a URL from an answer could point anywhere, and
    the key goes only where the SDK itself decides.
    """
    return pipeline.prepared("GET", f"/api/v1/generate/{quote(generation_id, safe='')}/status")


def parse_status(generation_id: str, data: dict[str, Any]) -> GenerationStatus:
    """A status answer of `generation_id` as a `GenerationStatus` (ValueError if it is none)."""
    if not isinstance(data.get("state"), str):
        raise ValueError("the status has no 'state'")
    if not isinstance(data.get("generation_id"), str):
        data = {**data, "generation_id": generation_id}
    return _convert.structure(data, _models.GenerationStatus)


def poller_of(generation: AsyncGeneration) -> Poller:
    """The shared poller of the client `generation` came from (for a batch of handles)."""
    return generation._poller


def track_of(generation: AsyncGeneration) -> Track:
    """`generation`'s track in its poller, polled through the handle's own client settings."""
    return generation._tracked()


async def fetch_status(pipeline: Pipeline, generation_id: str) -> GenerationStatus:
    """One status poll for the shared poller (paced by it; `Retryable` when worth another)."""
    call = status_call(pipeline, generation_id)
    return await pipeline.once(call, partial(parse_status, generation_id))
