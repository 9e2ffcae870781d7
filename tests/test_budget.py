"""A batch's max_credits on plain numbers: what may be sent, and what a sent item counts for."""

from __future__ import annotations

import math
from typing import Any

import pytest

from kolbo_async import KolboError, Model, Submission
from kolbo_async._budget import Budget, price, seconds, stated

KLING = Model(identifier="kling", credit=10, supported_durations=(5, 10),
              resolution_multipliers={"1080p": 1.5})  # fmt: skip
FLUX = Model(identifier="flux", credit=4, types=("text_to_img", "image_editing"),
             resolution_multipliers={"2K": 1.5})  # fmt: skip
CATALOG = {"kling": KLING, "flux": FLUX}


def budget(limit: float | None, spent: float = 0.0) -> Budget:
    return Budget(limit, CATALOG, spent)


def answer(charged: Any = None, model: str | None = None) -> Submission:
    return Submission("gen_1", model=model, credits_charged=charged)


class TestPrice:
    def test_from_the_body_sent(self) -> None:
        """Model, duration and resolution as the body has them (extra_body included)."""
        assert price({"model": "kling", "duration": 5}, CATALOG) == 50
        assert price({"model": "kling", "duration": 5, "resolution": "1080p"}, CATALOG) == 75
        assert price({"model": "kling", "duration": "10"}, CATALOG) == 100

    def test_a_duration_left_to_kolbo_costs_the_dearest_it_could_pick(self) -> None:
        assert price({"model": "kling"}, CATALOG) == 100

    def test_a_duration_given_but_unreadable_has_no_price(self) -> None:
        """Not the dearest: Kolbo would refuse it, and it is not budgeted as if valid."""
        for duration in (None, "five", True, 0, -5, math.inf):
            assert price({"model": "kling", "duration": duration}, CATALOG) is None, duration

    def test_unknown_models_have_no_price(self) -> None:
        assert price({"duration": 5}, CATALOG) is None  # Smart Select
        assert price({"model": "veo", "duration": 5}, CATALOG) is None
        assert price({"model": 3, "duration": 5}, CATALOG) is None
        assert price({"model": "kling", "duration": 5, "resolution": 1080}, CATALOG) is None

    def test_the_model_kolbo_picked_counts_when_the_body_names_none(self) -> None:
        assert price({"duration": 5}, CATALOG, picked="kling") == 50
        assert price({"model": "veo", "duration": 5}, CATALOG, picked="kling") is None


    def test_image_models_cost_per_image(self) -> None:
        """An image model's credit is per image: one when the body asks for no number."""
        assert price({"model": "flux", "prompt": "a"}, CATALOG) == 4
        assert price({"model": "flux", "num_images": 3}, CATALOG) == 12
        assert price({"model": "flux", "num_images": 2, "resolution": "2K"}, CATALOG) == 12
        for count in ("two", 0, True, 1.5):
            assert price({"model": "flux", "num_images": count}, CATALOG) is None, count


class TestRefusal:
    def test_without_a_limit_everything_may_be_sent(self) -> None:
        assert budget(None, spent=10**9).refusal({"model": "kling", "duration": 10}) is None

    def test_an_item_that_fits_exactly_is_sent(self) -> None:
        assert budget(100, spent=50).refusal({"model": "kling", "duration": 5}) is None

    def test_an_item_that_would_overspend_is_refused(self) -> None:
        error = budget(100, spent=60).refusal({"model": "kling", "duration": 5})
        assert type(error) is KolboError
        assert str(error) == (
            "Not submitted: its estimated cost (50 credits) would take the batch past "
            "max_credits=100 (60 spent)."
        )

    def test_an_unpriced_item_is_sent_only_while_something_is_left(self) -> None:
        assert budget(100, spent=99.5).refusal({"prompt": "smart select"}) is None
        error = budget(100, spent=100).refusal({"prompt": "smart select"})
        assert str(error) == (
            "Not submitted: the batch has spent 100 credits, reaching max_credits=100."
        )


class TestCharge:
    def test_without_a_limit_what_the_answer_states(self) -> None:
        counted = budget(None)
        assert counted.charge(0, {"model": "kling", "duration": 5}, answer(7)) is None
        assert counted.charge(1, {}, answer(None)) is None  # not stated: nothing to add
        assert counted.spent == 7

    @pytest.mark.parametrize(("charged", "counted"), [(50, 50), (0, 50), (20, 50), (80, 80),
                                                      (None, 50), (-1, 50), (True, 50)])  # fmt: skip
    def test_with_a_limit_the_dearer_of_stated_and_catalog(
        self, charged: Any, counted: float
    ) -> None:
        """A stated 0 or an understated charge must not let the rest of the budget through."""
        limited = budget(1000, spent=5)
        assert limited.charge(0, {"model": "kling", "duration": 5}, answer(charged)) is None
        assert limited.spent == 5 + counted

    def test_with_a_limit_the_model_kolbo_picked_is_priced(self) -> None:
        limited = budget(1000)
        assert limited.charge(0, {"duration": 10}, answer(None, model="kling")) is None
        assert limited.spent == 100

    def test_with_a_limit_an_unknown_charge_halts(self) -> None:
        """Fail closed: neither stated nor in the catalog, it may have used up the budget."""
        limited = budget(300, spent=12)
        error = limited.charge(4, {"prompt": "smart select"}, answer(None, model="auto"))
        assert type(error) is KolboError
        text = str(error)
        assert text.startswith("Not submitted: Kolbo's answer to requests[4] (generation gen_1)")
        assert "max_credits=300 could be overspent" in text
        assert limited.spent == 12

    def test_with_a_limit_a_stated_charge_is_enough(self) -> None:
        limited = budget(300)
        assert limited.charge(0, {"prompt": "smart select"}, answer(42)) is None
        assert limited.spent == 42


def test_stated_takes_only_usable_numbers() -> None:
    assert stated(0) == 0.0
    assert stated(12.5) == 12.5
    for value in (None, -1, math.nan, math.inf, True, "12"):
        assert stated(value) is None, value


def test_seconds_reads_numbers_and_numeric_strings() -> None:
    assert seconds(5) == 5.0
    assert seconds("7.5") == 7.5
    for value in (None, 0, -2, "x", False, math.nan, "inf"):
        assert seconds(value) is None, value
