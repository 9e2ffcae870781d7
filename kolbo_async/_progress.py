"""`GenerationProgress`: the stream of one generation's statuses, fed by the shared poller."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from ._clock import Clock
from ._exceptions import GenerationTimeoutError, InvalidRequestError
from ._lazy import DeferredModule
from ._poller import Listener, Poller, Track

if TYPE_CHECKING:
    import kolbo_async

    from ._models import GenerationStatus

    TimeoutFactory = Callable[[float | None, GenerationStatus | None], GenerationTimeoutError]
else:
    kolbo_async = DeferredModule("")  # public annotations: `typing.get_type_hints`

__all__ = ["GenerationProgress", "check_timeout"]


class GenerationProgress:
    """The async iterator `AsyncGeneration.progress` returns.

    It holds no background task: the client's shared poller polls while ``__anext__``
    waits, so ``break``-ing out leaks nothing on asyncio or trio, and the generation leaves
    the poller's plan. ``aclose()`` (or ``async with``) ends it at once.
    """

    __slots__ = (
        "_clock",
        "_deadline",
        "_done",
        "_ends_only",
        "_ensure_open",
        "_last",
        "_listener",
        "_poller",
        "_seen",
        "_timed_out",
        "_timeout",
        "_track",
    )

    def __init__(
        self,
        *,
        poller: Poller,
        track: Callable[[], Track],
        clock: Clock,
        ensure_open: Callable[[], None],
        timed_out: TimeoutFactory,
        timeout: float | None,
        ends_only: bool = False,
    ) -> None:
        self._poller = poller
        self._track = track
        self._clock = clock
        self._ensure_open = ensure_open
        self._timed_out = timed_out
        self._timeout = check_timeout(timeout)
        self._deadline: float | None = None
        self._last: GenerationStatus | None = None
        self._seen = -1  # the track version last looked at; -1 before the first item
        self._done = False
        # `wait()` only needs the end: its caller is not woken (nor, when it drives, its
        # turn ended and others' polls on the wire cut short) at every change of progress.
        self._ends_only = ends_only
        self._listener = Listener(every=not ends_only)

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

    async def __anext__(self) -> kolbo_async.GenerationStatus:
        if self._done:
            raise StopAsyncIteration
        self._ensure_open()
        if self._deadline is None and self._timeout is not None:
            self._deadline = self._clock.now() + self._timeout
        poller = self._poller
        track = self._track()
        listener = self._listener
        # Listening only while waiting: between items nobody waits, and the poller drops
        # the generation from its plan at its next turn.
        poller.watch(listener, track, fresh=self._seen < 0)
        try:
            while True:
                if track.version == self._seen or (self._seen < 0 and not listener.ready):
                    await poller.wait(listener, self._deadline)
                listener.take()
                if listener.timed_out:
                    self._done = True
                    if track.outlasts(self._deadline):
                        assert track.last_error is not None
                        raise track.last_error  # the server asked for more than we have
                    last = self._last if track.status is None else track.status
                    raise self._timed_out(self._timeout, last) from track.last_error
                if track.error is not None:
                    # An API error ends the stream; a cancellation does not, so a caller
                    # that cancelled a wait may iterate again later.
                    self._done = True
                    raise track.error
                status = track.status
                if status is None or track.version == self._seen:
                    continue
                self._seen = track.version
                last = self._last
                self._last = status
                if status.done:
                    self._done = True
                    return status
                if self._ends_only:
                    continue
                if last is None or (status.state, status.progress) != (last.state, last.progress):
                    return status
        finally:
            poller.unwatch(listener, track)


def check_timeout(timeout: object) -> float | None:
    """`timeout` if it is a positive number of seconds or None, else `InvalidRequestError`."""
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not timeout > 0  # also catches NaN
    ):
        raise InvalidRequestError("timeout", f"must be a positive number or None, not {timeout!r}")
    return timeout
