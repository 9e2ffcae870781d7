"""What a batch run does with each item, given what its journal remembers of it.

Pure: a journal `Row` (or none) in, one step out. The batch acts on the steps: it sends
`Send` items, reports `Unknown` ones as outcome-unknown without sending them, re-attaches and
polls `Reattach` ones, and yields `Ended` ones at once. The last two were paid for by an
earlier run, and count against ``max_credits``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from ._convert import structure
from ._exceptions import SubmissionOutcomeUnknownError
from ._journal_keys import ItemKey
from ._journal_schema import FINISHED, INTENT, SUBMITTED, Row
from ._models import GenerationStatus, Submission

__all__ = ["Ended", "Reattach", "Send", "Step", "Unknown", "plan", "step", "unknown_error"]


@attrs.frozen
class Send:
    """Send it: new, refused with a 4xx last time, or an unknown outcome to resubmit."""


@attrs.frozen
class Unknown:
    """An earlier POST may have created it: report that, and send nothing."""

    detail: str | None


@attrs.frozen
class Reattach:
    """Created and paid for, its end not recorded: re-attach it and poll."""

    generation_id: str
    submission: Submission


@attrs.frozen
class Ended:
    """Created, paid for and ended: its outcome is `status`, no request needed."""

    generation_id: str
    submission: Submission
    status: GenerationStatus


Step = Send | Unknown | Reattach | Ended


def step(row: Row | None, *, resubmit_unknown: bool) -> Step:
    """What to do with an item whose journal row is `row` (None: the journal has none)."""
    if row is None or row.state not in (INTENT, SUBMITTED, FINISHED):
        return Send()  # new, or refused with a 4xx last time
    if row.state == INTENT:
        return Send() if resubmit_unknown else Unknown(row.error)
    if row.generation_id is None:  # written by hand, or by a broken disk
        return Unknown(row.error)
    # Only the id, when the answer's write failed and the end's (which writes it too) did not.
    answer = dict(row.submission or {})
    answer.setdefault("generation_id", row.generation_id)
    submission = structure(answer, Submission)
    if row.state == FINISHED and row.status is not None:
        status = structure(row.status, GenerationStatus)
        return Ended(row.generation_id, submission, status)
    return Reattach(row.generation_id, submission)


def plan(
    keys: Sequence[ItemKey], rows: Mapping[ItemKey, Row], *, resubmit_unknown: bool
) -> list[Step]:
    """One step per item, in the order of `keys` (the items' keys in this run's list)."""
    return [step(rows.get(key), resubmit_unknown=resubmit_unknown) for key in keys]


def unknown_error(index: int, detail: str | None) -> SubmissionOutcomeUnknownError:
    """What an `Unknown` item ends with."""
    why = f" ({detail})" if detail else ""
    return SubmissionOutcomeUnknownError(
        f"requests[{index}]: a previous run sent this POST but never learnt whether Kolbo "
        f"created it{why}; Kolbo may have created (and charged for) the generation. It was "
        "NOT sent again: check your Kolbo dashboard, then pass resubmit_unknown=True to send "
        "it anyway."
    )
