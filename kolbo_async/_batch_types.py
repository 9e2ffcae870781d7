"""What a batch hands out and takes in: `BatchOutcome` (one per item), `Nothing` (the batch
`as_completed([])` returns) and `Submitter` (what a batch of requests needs from its client).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import attrs

from ._batch_send import Sender
from ._lazy import public
from ._models import GenerationStatus, Model, Submission
from ._requests import Route

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ._handles import AsyncGeneration

__all__ = ["BatchOutcome", "Nothing", "Submitter", "warn_unfinished"]

H = TypeVar("H")

logger = logging.getLogger("kolbo_async")


@attrs.frozen
class BatchOutcome(Generic[H]):
    """How one item of a batch ended; `generate_many` and `as_completed` yield one per item.

    Attributes:
        index: the item's position in the requests (or handles) given.
        request: its request, of any route: `TextToVideo`, `ImageToVideo`,
            `FramesToVideo`, `ElementsToVideo`, `VideoToVideo`, `Lipsync`, `TextToImage`
            or `ImageEdit` (a dict item comes back as the request made of it); None from
            `as_completed`.
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
    request: Route | None
    generation: H | None
    status: GenerationStatus | None
    error: Exception | None


class Submitter(Sender, Protocol):
    """What a batch of requests needs from its client, and nothing more: a `Sender` (the
    POST, and whether the client is closed), and:"""

    async def admit(self) -> None:
        """Wait for the generation window (cancellably) and count one POST in it."""

    def attach(
        self, generation_id: str, submission: Submission, known: GenerationStatus | None
    ) -> AsyncGeneration:
        """A handle on a generation a journal remembers."""

    async def catalog(self) -> list[Model]:
        """Every model, with its prices (for `max_credits`)."""


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


def warn_unfinished(left: list[str]) -> None:
    """Warn that a batch stopped before reporting the generations `left` (ids)."""
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


public(BatchOutcome)
