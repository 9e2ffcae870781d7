"""One item's POST in a batch, and what came of it.

Its intent goes to the journal first (nothing is sent without it); a cancellation that comes
before the POST leaves takes the intent back and sends nothing; from there on the POST and
the record of its answer are shielded, so a cancellation never loses an id Kolbo charged for.
`post` says what came of it: a generation `Created`, or the item `Ends` with an error (and
perhaps stops the rest), or the SDK's own `Fault`. The batch acts on that. An item that
ends before its generation POST left whole (an upload first failed, a file could not be
read: `_exceptions.was_nothing_sent`) is recorded as refused, so a rerun sends it.
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio
import anyio.lowlevel
import attrs

from ._batch_journal import BatchJournal
from ._ctrl_c import protect_from_ctrl_c
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    InsufficientCreditsError,
    KolboError,
    PermissionDeniedError,
    SubmissionOutcomeUnknownError,
    was_nothing_sent,
)
from ._handles import AsyncGeneration

__all__ = ["Created", "Ends", "Fault", "Sender", "post", "refused"]

#: Errors after which no later POST of the batch can succeed: the rest are not sent.
ACCOUNT_ERRORS = (InsufficientCreditsError, AuthenticationError, PermissionDeniedError)


class Sender(Protocol):
    """What one POST needs from the client."""

    async def submit(self, path: str, body: dict[str, Any]) -> AsyncGeneration:
        """The generation POST, already admitted; run to its answer."""

    def closed(self) -> bool:
        """Whether the client is closed (nothing more may be sent)."""


@attrs.frozen
class Created:
    """Kolbo created `generation` (and charged for it). `halt`: its id could not be
    recorded, so nothing more may be sent; every item not yet sent ends with it."""

    generation: AsyncGeneration
    halt: KolboError | None = None


@attrs.frozen
class Ends:
    """No generation to follow: the item ends with `error`; with `halt`, so does every item
    not yet sent (no later POST can succeed, or none may be sent)."""

    error: KolboError
    halt: KolboError | None = None


@attrs.frozen
class Fault:
    """An error of the SDK's own while sending: the batch stops and raises it."""

    error: Exception


Answer = Created | Ends | Fault


def refused(error: KolboError) -> bool:
    """Whether the POST certainly created nothing: Kolbo refused it (a 4xx), or the
    connection was never made (the send path raises a plain `APIConnectionError` only then;
    anything that may have reached Kolbo is `SubmissionOutcomeUnknownError`).

    Anything else (an outcome-unknown error, a 5xx, an unreadable answer, an error of the
    SDK's own) may have followed a POST that reached Kolbo.
    """
    if isinstance(error, APIConnectionError):
        return not isinstance(error, SubmissionOutcomeUnknownError)
    return isinstance(error, APIStatusError) and 400 <= error.status_code < 500


async def post(
    index: int, path: str, body: dict[str, Any], sender: Sender, journal: BatchJournal
) -> Answer:
    """Send item `index` (admitted in the generation window) and record what came of it.

    A cancellation before the POST leaves is raised, with the intent taken back.
    """
    protect_from_ctrl_c(post)  # on trio: Ctrl-C goes to the main task, not into the POST
    with anyio.CancelScope(shield=True):  # a write that started is finished
        stop = await journal.intent(index, path, body)
    if stop is not None:
        return Ends(stop, halt=stop)
    try:
        # The POST has not left yet: a cancellation that came meanwhile (Ctrl-C, a
        # timeout) sends nothing, and the item goes back to be sent later.
        await anyio.lowlevel.checkpoint_if_cancelled()
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            await journal.unsent(index)
        raise
    # Shielded from here to the answer's record: once the POST may be on the wire,
    # a cancellation must not lose the id Kolbo charged for.
    answer: Answer
    with anyio.CancelScope(shield=True):
        try:
            answer = await _send(index, path, body, sender, journal)
        except Exception as exc:  # the SDK's own fault: stop, never an ExceptionGroup
            answer = Fault(exc)
    return answer


async def _send(
    index: int, path: str, body: dict[str, Any], sender: Sender, journal: BatchJournal
) -> Answer:
    if sender.closed():
        await journal.unsent(index)
        return Ends(KolboError("Not submitted: the client was closed before its POST was sent."))
    try:
        generation = await sender.submit(path, body)
    except KolboError as error:
        if type(error) is KolboError and sender.closed():
            # The SDK's own refusal of a closed client: no byte of the POST went out (a
            # POST on the wire keeps the client's connections open until it lands).
            await journal.unsent(index)
            return Ends(error)
        if refused(error) or was_nothing_sent(error):
            # Nothing created: Kolbo refused it, or its generation POST never left whole
            # (an upload first failed, a file could not be read): a rerun sends it.
            await journal.rejected(index, str(error))
            ends = error
        else:
            # It may have reached Kolbo: the journal keeps the intent, so a rerun
            # reports it instead of paying for it again.
            await journal.unknown(index, f"{type(error).__name__}: {error}")
            ends = outcome_unknown(index, error, journal.kept)
        return Ends(ends, halt=error if isinstance(error, ACCOUNT_ERRORS) else None)
    assert generation.submission is not None
    halt = await journal.submitted(index, generation.id, generation.submission.raw)
    return Created(generation, halt)


def outcome_unknown(index: int, error: KolboError, journal: bool) -> SubmissionOutcomeUnknownError:
    """What an item whose POST failed without Kolbo refusing it ends with."""
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
