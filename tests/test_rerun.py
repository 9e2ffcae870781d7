"""What a rerun does with each journal row: plain rows in, steps out, no event loop."""

from __future__ import annotations

from typing import Any

import pytest

from kolbo_async import GenerationStatus, Submission, SubmissionOutcomeUnknownError
from kolbo_async._journal_schema import FINISHED, INTENT, REJECTED, SUBMITTED, Row
from kolbo_async._rerun import Ended, Reattach, Send, Unknown, plan, step, unknown_error

SUBMISSION: dict[str, Any] = {
    "generation_id": "gen_1",
    "model": "kling",
    "credits_charged": 90,
    "poll_interval_hint": 4,
}
DONE: dict[str, Any] = {
    "generation_id": "gen_1",
    "state": "completed",
    "progress": 100,
    "result": {"urls": ["https://cdn.example/v.mp4"]},
}


def row(state: str, generation_id: str | None = None, **fields: Any) -> Row:
    return Row(state, generation_id, fields.get("submission"), fields.get("status"),
               fields.get("error"))  # fmt: skip


class TestStep:
    def test_an_item_the_journal_does_not_know_is_sent(self) -> None:
        assert step(None, resubmit_unknown=False) == Send()

    def test_a_refused_item_is_sent_again(self) -> None:
        """Kolbo refused it with a 4xx last time: nothing was charged."""
        refused = row(REJECTED, error="400 bad prompt")
        assert step(refused, resubmit_unknown=False) == Send()

    def test_an_unknown_state_is_sent(self) -> None:
        """A state this version does not write counts as no record."""
        assert step(row("someday"), resubmit_unknown=False) == Send()

    def test_an_intent_is_reported_not_sent(self) -> None:
        """The POST may have reached Kolbo: never paid for twice by default."""
        intent = row(INTENT, error="ReadTimeout: timed out")
        assert step(intent, resubmit_unknown=False) == Unknown("ReadTimeout: timed out")

    def test_an_intent_is_sent_with_resubmit_unknown(self) -> None:
        assert step(row(INTENT), resubmit_unknown=True) == Send()

    @pytest.mark.parametrize("state", [SUBMITTED, FINISHED])
    @pytest.mark.parametrize("resubmit", [False, True])
    def test_a_paid_row_without_an_id_is_reported_even_with_resubmit(
        self, state: str, resubmit: bool
    ) -> None:
        """Written by hand or a broken disk: it says it was created, so it is never resent."""
        broken = row(state, None, submission=SUBMISSION, error="lost")
        assert step(broken, resubmit_unknown=resubmit) == Unknown("lost")

    def test_a_submitted_item_is_reattached(self) -> None:
        got = step(row(SUBMITTED, "gen_1", submission=SUBMISSION), resubmit_unknown=True)
        assert got == Reattach("gen_1", Submission("gen_1", model="kling", credits_charged=90,
                                                   poll_interval_hint=4))  # fmt: skip

    def test_a_finished_item_ends_with_its_status(self) -> None:
        finished = row(FINISHED, "gen_1", submission=SUBMISSION, status=DONE)
        got = step(finished, resubmit_unknown=False)
        assert isinstance(got, Ended)
        assert got.generation_id == "gen_1"
        assert got.submission.credits_charged == 90
        assert got.status == GenerationStatus("gen_1", "completed", progress=100,
                                              result=got.status.result)  # fmt: skip
        assert got.status.succeeded

    def test_a_finished_row_without_its_status_is_reattached(self) -> None:
        """Only the end was lost: re-attach and ask, never send again."""
        finished = row(FINISHED, "gen_1", submission=SUBMISSION)
        assert isinstance(step(finished, resubmit_unknown=False), Reattach)

    @pytest.mark.parametrize("status", [DONE, None])
    def test_a_row_whose_answer_was_not_recorded_still_has_its_id(
        self, status: dict[str, Any] | None
    ) -> None:
        """The `submitted` write failed but the end (which writes the id too) did not, or the
        answer's JSON is unreadable: the id is enough to re-attach, not a crash."""
        lost = row(FINISHED if status else SUBMITTED, "gen_1", status=status)
        got = step(lost, resubmit_unknown=False)
        assert isinstance(got, Ended if status else Reattach)
        assert got.submission == Submission("gen_1")


class TestPlan:
    def test_one_step_per_key_in_the_order_of_the_list(self) -> None:
        """Rows are found by key, whatever the list order; keys without a row are sent."""
        a, b, c = ("hash_a", 0), ("hash_a", 1), ("hash_c", 0)
        rows = {b: row(INTENT), c: row(SUBMITTED, "gen_c", submission={"generation_id": "gen_c"})}
        steps = plan([c, a, b], rows, resubmit_unknown=False)
        assert steps == [Reattach("gen_c", Submission("gen_c")), Send(), Unknown(None)]

    def test_resubmit_unknown_reaches_every_intent(self) -> None:
        keys = [("h", 0), ("h", 1)]
        rows = {key: row(INTENT) for key in keys}
        assert plan(keys, rows, resubmit_unknown=True) == [Send(), Send()]


def test_unknown_error_says_it_was_not_sent_and_how_to_send_it() -> None:
    error = unknown_error(3, "ReadTimeout: timed out")
    assert isinstance(error, SubmissionOutcomeUnknownError)
    text = str(error)
    assert text.startswith("requests[3]: ")
    assert "(ReadTimeout: timed out)" in text
    assert "NOT sent again" in text
    assert "resubmit_unknown=True" in text
    assert "()" not in str(unknown_error(0, None))
