"""`kolbo batch --dry-run`: what a file would cost, from the model catalog; nothing is sent.

An item naming its model is priced with `Model.cost` (a duration left to Kolbo at the
model's longest listed duration, as `max_credits` budgets it). An item left to Smart Select
has no price until Kolbo picks its model, so it is counted apart, with the range the catalog
allows for its route.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TextIO

import attrs

from kolbo_async import AsyncKolbo, Model

from ._cli_batch_input import CATALOG_TYPES, Item
from ._cli_outcome import EXIT_OK, line

__all__ = ["Price", "preview", "price"]


@attrs.frozen
class Price:
    """One item's price: `credits` for a named, known model; a range for Smart Select."""

    index: int
    line: int
    route: str
    model: str | None
    duration: float | None
    credits: float | None = None
    smart_select: bool = False
    credits_min: float | None = None
    credits_max: float | None = None
    problem: str | None = None


def price(index: int, item: Item, catalog: Mapping[str, Model]) -> Price:
    """What item `index` would cost, by the catalog (pure: no request)."""
    request = item.request
    extra: Mapping[str, Any] = getattr(request, "extra_body", None) or {}
    named = getattr(request, "model", None) or extra.get("model")
    duration = _seconds(getattr(request, "duration", None) or extra.get("duration"))
    resolution = getattr(request, "resolution", None) or extra.get("resolution")
    if not isinstance(resolution, str):
        resolution = None
    images = getattr(request, "num_images", None) or extra.get("num_images")
    base = Price(index, item.line, item.route, named, duration)
    if named is None:
        kind = CATALOG_TYPES.get(item.route)
        costs = [
            cost
            for model in catalog.values()
            if kind in model.types
            and (cost := _cost(model, duration, resolution, images)) is not None
        ]
        return attrs.evolve(
            base,
            smart_select=True,
            credits_min=min(costs, default=None),
            credits_max=max(costs, default=None),
        )
    model = catalog.get(str(named))
    if model is None:
        return attrs.evolve(base, problem="not in the model catalog: Kolbo will refuse it")
    cost = _cost(model, duration, resolution, images)
    if cost is None:
        return attrs.evolve(base, problem="the catalog gives no price for it")
    return attrs.evolve(base, credits=cost)


async def preview(client: AsyncKolbo, items: list[Item], out: TextIO, *, as_json: bool) -> int:
    """Print the price of every item and the total; send nothing but the catalog's GET."""
    models = await client.models.list(type=None)
    catalog = {model.identifier: model for model in models}
    prices = [price(index, item, catalog) for index, item in enumerate(items)]
    named = [p for p in prices if p.credits is not None]
    smart = [p for p in prices if p.smart_select]
    unpriced = [p for p in prices if p.problem is not None]
    total = sum(p.credits or 0.0 for p in named)
    low = sum(p.credits_min or 0.0 for p in smart)
    high = sum(p.credits_max or 0.0 for p in smart)
    if as_json:
        for p in prices:
            line({k: v for k, v in attrs.asdict(p).items() if v not in (None, False)}, out)
        line(
            {
                "dry_run": True,
                "items": len(prices),
                "credits": total,
                "priced_items": len(named),
                "smart_select_items": len(smart),
                "smart_select_credits_min": low,
                "smart_select_credits_max": high,
                "unpriced_items": len(unpriced),
            },
            out,
        )
        return EXIT_OK
    rows = [("LINE", "ROUTE", "MODEL", "SECONDS", "CREDITS")]
    for p in prices:
        if p.smart_select:
            cost = f"{_num(p.credits_min)}-{_num(p.credits_max)}" if p.credits_max else "?"
        else:
            cost = _num(p.credits) if p.credits is not None else f"? ({p.problem})"
        shown = p.model or "Smart Select"
        seconds = _num(p.duration) if p.duration is not None else "(model's)"
        rows.append((str(p.line), p.route, shown, seconds, cost))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)))
        out.write("  " + row[4] + "\n")
    out.write(
        f"\n{len(prices)} item(s), nothing sent (dry run).\n"
        f"  {len(named)} with a named model: {_num(total)} credits"
        " (a duration left to Kolbo counted at the model's longest)\n"
    )
    if smart:
        out.write(
            f"  {len(smart)} with Smart Select, priced once Kolbo picks the model: "
            f"{_num(low)} to {_num(high)} credits by today's catalog\n"
        )
    if unpriced:
        where = ", ".join(str(p.line) for p in unpriced[:10])
        out.write(f"  {len(unpriced)} without a price (lines {where}): see the table\n")
    return EXIT_OK


def _cost(
    model: Model, duration: float | None, resolution: str | None, images: Any
) -> float | None:
    if model.per_image:
        return model.cost(resolution=resolution, num_images=images if images else None)
    if duration is None:
        durations = model.supported_durations or ()
        duration = max(durations) if durations else None
    return None if duration is None else model.cost(duration, resolution)


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"
