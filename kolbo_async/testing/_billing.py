"""The simulated account's credits: three balance buckets, charged in order, refunded in kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._lifecycle import GenerationRecord
from ._records import number

__all__ = ["BUCKETS", "Balance"]

#: Kolbo's documented order of spending: plan credits first, then credit packs, then
#: redemptions.
BUCKETS = ("plan_credits", "credit_pack", "redemption")


class Balance:
    """The account's credits, by bucket.

    Args:
        credits: a number (plan credits), or a mapping of some of `BUCKETS`.

    Raises:
        ValueError: a mapping names a bucket Kolbo does not have.

    Example:
        >>> balance = Balance({"plan_credits": 10, "credit_pack": 50})
        >>> balance.charge(35)
        {'plan_credits': 10.0, 'credit_pack': 25.0}
    """

    def __init__(self, credits: float | Mapping[str, float]) -> None:
        self.buckets = dict.fromkeys(BUCKETS, 0.0)
        if isinstance(credits, Mapping):
            unknown = set(credits) - set(BUCKETS)
            if unknown:
                raise ValueError(f"credit buckets are {list(BUCKETS)}, not {sorted(unknown)}")
            self.buckets.update({k: float(v) for k, v in credits.items()})
        else:
            self.buckets["plan_credits"] = float(credits)

    def total(self) -> float:
        """The total balance."""
        return sum(self.buckets.values())

    def report(self) -> dict[str, Any]:
        """The balance as ``GET /account/credits`` reports it."""
        return {"total": number(self.total()),
                **{k: number(v) for k, v in self.buckets.items()}}

    def charge(self, amount: float) -> dict[str, float]:
        """Take `amount` bucket by bucket, in `BUCKETS` order; returns what each gave."""
        taken: dict[str, float] = {}
        for bucket in BUCKETS:
            take = min(amount, self.buckets[bucket])
            if take > 0:
                self.buckets[bucket] -= take
                taken[bucket] = take
            amount -= take
        return taken

    def refund(self, record: GenerationRecord) -> float:
        """Give back what `record` was charged, once; returns the credits given back."""
        if record.refunded:
            return 0.0
        record.refunded = True
        # Back where it came from, so a refund never turns pack credits into plan credits.
        for bucket, amount in record.charged.items():
            self.buckets[bucket] += amount
        return sum(record.charged.values())
