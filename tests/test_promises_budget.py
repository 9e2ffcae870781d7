"""Promises of a batch's ``max_credits`` (`kolbo_async._budget`) that its mutation run found
untested: a charge Kolbo states is counted as stated when the catalog cannot price the item;
a duration of a second or less is priced, not taken for unknown; the error that halts a batch
whose charges cannot be known says what to do next.
"""

from __future__ import annotations

from kolbo_async import Model, Submission
from kolbo_async._budget import Budget, price, seconds

KLING = Model(identifier="kling", credit=10, supported_durations=(1, 5, 10))
CATALOG = {"kling": KLING}


def test_a_stated_charge_counts_as_stated_when_the_catalog_cannot_price_it() -> None:
    """Smart Select (no model named, none in the answer): Kolbo's stated 0.5 credits is what
    the item counts for, no more (the catalog adds nothing it does not know)."""
    budget = Budget(10, CATALOG)
    assert budget.charge(0, {"prompt": "a cat"}, Submission("gen_1", credits_charged=0.5)) is None
    assert budget.spent == 0.5
    assert budget.charge(1, {"prompt": "a dog"}, Submission("gen_2", credits_charged=0)) is None
    assert budget.spent == 0.5


def test_a_one_second_generation_is_priced() -> None:
    """Durations of a second or less are real durations, priced as such (fail closed)."""
    assert seconds(1) == 1.0 and seconds(0.5) == 0.5 and seconds("1") == 1.0
    assert price({"model": "kling", "duration": 1}, CATALOG) == 10
    assert Budget(9, CATALOG).refusal({"model": "kling", "duration": 1}) is not None


def test_an_unknowable_charge_halts_with_what_to_do() -> None:
    budget = Budget(100, CATALOG)
    error = budget.charge(4, {"prompt": "a cat"}, Submission("gen_9"))
    assert error is not None
    assert str(error) == (
        "Not submitted: Kolbo's answer to requests[4] (generation gen_9) did not state what "
        "it charged, and its price cannot be worked out from the model catalog, so "
        "max_credits=100 could be overspent. Check the charge on your Kolbo dashboard, then "
        "send the rest without max_credits or with requests that name their model and "
        "duration."
    )
    assert budget.spent == 0
