"""`Generation`, `Batch` and `as_completed`: blocking handles, forwarding to the async core.

Every method is one call onto the client's loop (`_runner.Runner`); no logic of the async
core is copied here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, cast, overload

from ._exceptions import InvalidRequestError
from ._handles import DEFAULT_WAIT, AsyncGeneration, ProgressCallback
from ._lazy import DeferredModule, public
from ._runner import Runner as _Runner

if TYPE_CHECKING:
    import kolbo_async

    from ._batch import AsyncBatch, BatchOutcome
    from ._models import GenerationStatus
    from ._progress import GenerationProgress
else:
    kolbo_async = DeferredModule("")  # public annotations: `typing.get_type_hints`

__all__ = ["Batch", "Generation", "as_completed"]


class Generation:
    """A handle on one generation; cheap, and rebuildable from its id alone.

    Same as `AsyncGeneration`, blocking. It keeps its client's event loop thread alive, so a
    handle outlives the `Kolbo` object it came from (not a `close()` of it).
    """

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: _Runner, inner: AsyncGeneration) -> None:
        self._runner = runner
        self._inner = inner

    @property
    def id(self) -> str:
        """The generation's id. Same as `AsyncGeneration.id`."""
        return self._inner.id

    @property
    def submission(self) -> kolbo_async.Submission | None:
        """The POST's answer, or None for an attached handle.

        Same as `AsyncGeneration.submission`.
        """
        return self._inner.submission

    def __repr__(self) -> str:
        return f"<Generation id={self.id!r}>"

    def status(self) -> kolbo_async.GenerationStatus:
        """Fetch the current status (one GET, retried on transient failures).

        Same as `AsyncGeneration.status`.
        """
        return self._runner.call(self._inner.status)

    def progress(
        self, timeout: float | None = DEFAULT_WAIT
    ) -> Iterator[kolbo_async.GenerationStatus]:
        """Stream the generation's status, one item per change of state or progress.

        Same as `AsyncGeneration.progress`, as a plain iterator: each item is yielded as
        soon as it is polled, not collected first. Leaving the loop early (``break``, an
        exception, Ctrl-C) stops the polling at once and leaves no task behind. `timeout`
        is validated now; its clock starts at the first ``next()``.

        Example:
            >>> for update in gen.progress():                    # doctest: +SKIP
            ...     print(update.state, update.progress)
        """
        return _stream(self._runner, self._inner.progress(timeout))

    def wait(self, timeout: float | None = DEFAULT_WAIT) -> kolbo_async.GenerationStatus:
        """Wait for the terminal status.

        Same as `AsyncGeneration.wait`; Ctrl-C interrupts it at once (the generation goes
        on server-side).
        """
        return self._runner.call(self._inner.wait, timeout)

    def result(self, timeout: float | None = DEFAULT_WAIT) -> kolbo_async.VideoResult:
        """Wait for the generation and return its `VideoResult`.

        Same as `AsyncGeneration.result`.
        """
        return self._runner.call(self._inner.result, timeout)

    def download(
        self,
        path: str | os.PathLike[str],
        *,
        index: int = 0,
        overwrite: bool = False,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = DEFAULT_WAIT,
    ) -> Path:
        """Wait for the video and stream ``result.urls[index]`` to `path`; return the path.

        Same as `AsyncGeneration.download`. `on_progress` runs inside the client's event
        loop (usually in the calling thread, the client's own thread when calls overlap):
        keep it quick, and do not call the client from it (that raises `KolboError`).
        """
        return self._runner.call(partial(
            self._inner.download, path, index=index, overwrite=overwrite,
            on_progress=on_progress, timeout=timeout,
        ))  # fmt: skip

    def download_thumbnail(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = DEFAULT_WAIT,
    ) -> Path:
        """Like `download`, for the result's thumbnail image.

        Same as `AsyncGeneration.download_thumbnail`; `on_progress` runs inside the client's
        event loop, as for `download`.
        """
        return self._runner.call(partial(
            self._inner.download_thumbnail, path, overwrite=overwrite,
            on_progress=on_progress, timeout=timeout,
        ))  # fmt: skip

    def cancel(self) -> kolbo_async.GenerationStatus:
        """Ask Kolbo to cancel the generation; return its status afterwards.

        Same as `AsyncGeneration.cancel` (a 409 returns the current status).
        """
        return self._runner.call(self._inner.cancel)


class Batch:
    """The iterator of `BatchOutcome` that `generate_many` and `as_completed` return.

    Same as `AsyncBatch`, as a plain iterator of outcomes holding blocking `Generation`
    handles. Leaving the loop early cancels nothing at Kolbo: `unfinished` lists what runs.
    """

    __slots__ = ("_handles", "_inner", "_runner")

    def __init__(
        self, runner: _Runner, inner: AsyncBatch, handles: Sequence[Generation] = ()
    ) -> None:
        self._runner = runner
        self._inner = inner
        self._handles = handles  # as_completed: outcomes carry the caller's own objects

    @property
    def unfinished(self) -> list[Generation]:
        """Handles submitted (or attached) by this batch whose outcome it has not yielded.

        Same as `AsyncBatch.unfinished`.
        """
        return [Generation(self._runner, handle) for handle in self._inner.unfinished]

    def __iter__(self) -> Batch:
        return self

    def __next__(self) -> BatchOutcome[Generation]:
        try:
            outcome = self._runner.call(self._inner.__anext__)
        except StopAsyncIteration:
            raise StopIteration from None
        generation: Generation | None = None
        if self._handles:
            generation = self._handles[outcome.index]
        elif outcome.generation is not None:
            generation = Generation(self._runner, outcome.generation)
        from ._batch_types import BatchOutcome  # loaded with the batch, which ran already

        return BatchOutcome(
            outcome.index, outcome.request, generation, outcome.status, outcome.error
        )

    def close(self) -> None:
        """Stop: nothing more is submitted or polled; running generations go on at Kolbo.

        Same as `AsyncBatch.aclose`.
        """
        if not self._runner.closed:
            self._runner.call(self._inner.aclose)

    def __enter__(self) -> Batch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _stream(runner: _Runner, updates: GenerationProgress) -> Iterator[GenerationStatus]:
    # A generator, so CPython closes it the moment a `for` loop breaks out of it (or the
    # iterator is dropped), which runs the `finally` below.
    try:
        while True:
            try:
                yield runner.call(updates.__anext__)
            except StopAsyncIteration:
                return
    finally:
        if not runner.closed:  # a closed client has nothing left to release
            runner.call(updates.aclose)


@overload
def as_completed(handles: Iterable[AsyncGeneration]) -> AsyncBatch: ...
@overload
def as_completed(handles: Iterable[Generation]) -> Batch: ...
def as_completed(handles: Iterable[AsyncGeneration] | Iterable[Generation]) -> AsyncBatch | Batch:
    """Wait for many generations; yield a `BatchOutcome` for each as it finishes.

    Handles made by the caller (submitted, attached, or left over by a stopped batch), all
    from one client. With `AsyncGeneration` handles it is an async iterator; with blocking
    `Generation` handles a plain one. The client's shared poller polls them within its rate
    budget; `outcome.index` is the handle's position in `handles`.

    Example:
        >>> handles = [client.generations.attach(i) for i in ids]          # doctest: +SKIP
        >>> async for outcome in kolbo_async.as_completed(handles):        # doctest: +SKIP
        ...     print(outcome.index, outcome.status.state if outcome.status else outcome.error)
    """
    # Imported here: the batch machinery costs import time single calls should not pay.
    from ._batch import Nothing, completion_batch

    items: list[object] = list(handles)
    if not items:
        return cast("AsyncBatch", Nothing())
    if all(isinstance(handle, AsyncGeneration) for handle in items):
        return completion_batch(cast("list[AsyncGeneration]", items))
    if all(isinstance(handle, Generation) for handle in items):
        blocking = cast("list[Generation]", items)
        runner = blocking[0]._runner
        if any(handle._runner is not runner for handle in blocking):
            raise InvalidRequestError("handles", "must all come from one client")
        batch = completion_batch([handle._inner for handle in blocking])
        return Batch(runner, batch, blocking)
    raise InvalidRequestError(
        "handles", "must all be AsyncGeneration handles, or all blocking Generation handles"
    )


public(Generation, as_completed)
