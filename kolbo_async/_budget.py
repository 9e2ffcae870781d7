"""A batch's ``max_credits``: whether an item may be sent, and what a sent one counts for.

Pure: plain values in (the body sent, Kolbo's answer, the model catalog), answers out. The
batch asks `Budget.refusal` before each POST and tells `Budget.charge` each answer (and each
generation a journal remembers as paid); it halts on the errors they return.

Both fail closed. An item whose price the catalog cannot tell (Smart Select) may be sent only
while something is left; a charge that is neither stated nor in the catalog stops the rest,
since it may already have used up the budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from ._exceptions import KolboError
from ._models import Model, Submission

__all__ = ["Budget", "price", "seconds", "stated"]


@attrs.define
class Budget:
    """What a batch may spend (`limit`, None: no limit) and has spent.

    `catalog` (models by identifier) is what `price` reads; a batch without a limit, or
    with nothing left to send, never loads it.
    """

    limit: float | None
    catalog: Mapping[str, Model] = attrs.field(factory=dict)
    spent: float = 0.0

    def refusal(self, body: Mapping[str, Any]) -> KolboError | None:
        """None when the item with this body may be sent now; else why it may not."""
        limit = self.limit
        if limit is None:
            return None
        estimate = price(body, self.catalog)  # None: Smart Select, unknown until charged
        if estimate is None:
            if self.spent < limit:
                return None
            reason = f"the batch has spent {self.spent:g} credits, reaching max_credits={limit:g}"
        else:
            if self.spent + estimate <= limit:
                return None
            reason = (
                f"its estimated cost ({estimate:g} credits) would take the batch past "
                f"max_credits={limit:g} ({self.spent:g} spent)"
            )
        return KolboError(f"Not submitted: {reason}.")

    def charge(
        self, index: int, body: Mapping[str, Any], submission: Submission
    ) -> KolboError | None:
        """Count what item `index` (sent with `body`) was charged, as `submission` answered.

        Returns, when there is a limit and the charge cannot be known, the error that stops
        the rest of the batch (nothing is counted then).
        """
        charge = charged(body, submission, self.catalog, with_limit=self.limit is not None)
        if charge is None and self.limit is not None:
            return KolboError(
                f"Not submitted: Kolbo's answer to requests[{index}] (generation "
                f"{submission.generation_id}) did not state what it charged, and its price "
                f"cannot be worked out from the model catalog, so max_credits={self.limit:g} "
                "could be overspent. Check the charge on your Kolbo dashboard, then send the "
                "rest without max_credits or with requests that name their model and duration."
            )
        self.spent += charge or 0.0
        return None


def charged(
    body: Mapping[str, Any],
    submission: Submission,
    catalog: Mapping[str, Model],
    *,
    with_limit: bool,
) -> float | None:
    """What an item counts for, or None when that is not known.

    Without a limit, what the answer states. With one, the dearer of what it states and what
    the catalog says: a stated 0 or an understated charge must not let the rest through.
    """
    charge = stated(submission.credits_charged)
    if not with_limit:
        return charge
    estimate = price(body, catalog, submission.model)
    return estimate if charge is None else max(charge, estimate or 0.0)


def price(
    body: Mapping[str, Any], catalog: Mapping[str, Model], picked: str | None = None
) -> float | None:
    """What the catalog says a POST of `body` costs, or None when that is not known.

    Read from the body sent, not the request's own fields: a model, duration or resolution
    given through `extra_body` is what Kolbo charges for. `picked`: the model Kolbo's answer
    names, which counts when the body names none (Smart Select).
    """
    named = body.get("model")
    if named is None:
        named = picked
    resolution = body.get("resolution")
    if not isinstance(named, str) or not (resolution is None or isinstance(resolution, str)):
        return None
    model = catalog.get(named)
    if model is None:
        return None
    if model.per_image:  # Kolbo makes one image when the body asks for no number
        return stated(model.cost(resolution=resolution, num_images=body.get("num_images", 1)))
    duration = seconds(body.get("duration"))
    if duration is None and "duration" not in body and model.supported_durations:
        # Kolbo picks the duration: budget for the dearest it could pick (fail closed).
        duration = max(model.supported_durations)
    return None if duration is None else stated(model.cost(duration, resolution))


def seconds(value: object) -> float | None:
    """A duration as Kolbo would read it (a number, or a numeric string), or None."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def stated(value: object) -> float | None:
    """A charge as a number of credits, or None when it is missing or not a usable one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None
