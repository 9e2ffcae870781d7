"""Promises of a batch rerun's plan (`kolbo_async._rerun`) that its mutation run found
untested: an item an earlier run may have paid for, and that is not sent again, ends with an
error that says why (the earlier failure, when recorded) and exactly how to send it anyway.
"""

from __future__ import annotations

import pytest

import kolbo_async as k
from kolbo_async._rerun import unknown_error

HOW = (
    "Kolbo may have created (and charged for) the generation. It was NOT sent again: check "
    "your Kolbo dashboard, then pass resubmit_unknown=True to send it anyway."
)


@pytest.mark.parametrize(
    ("detail", "why"),
    [("ReadTimeout: timed out", " (ReadTimeout: timed out)"), (None, ""), ("", "")],
)
def test_an_unknown_outcome_says_why_and_how_to_send_it_anyway(
    detail: str | None, why: str
) -> None:
    error = unknown_error(2, detail)
    assert isinstance(error, k.SubmissionOutcomeUnknownError)
    assert str(error) == (
        "requests[2]: a previous run sent this POST but never learnt whether Kolbo created "
        f"it{why}; {HOW}"
    )
