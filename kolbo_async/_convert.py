"""The one cattrs converter that turns API JSON into the classes of `_models.py`.

Lenient by design: a null or absent field takes its default, unknown keys are ignored, and a
list that arrives as a string is rejected rather than split into characters. A payload that
still cannot be structured raises `ValueError`, which the pipeline reports as
`APIResponseValidationError` together with the raw body.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn

from . import _models
from ._models import Credits, Failure, GenerationStatus, Model, Submission, VideoResult

__all__ = ["structure"]

T = TypeVar("T")

# detailed_validation off: errors come out as one plain exception (never an ExceptionGroup)
# and the generated structuring functions are faster on the status-poll hot path.
_converter = cattrs.Converter(detailed_validation=False)

# What reading an odd value can raise: `float(10**400)` is an OverflowError, not a ValueError.
_UNREADABLE = (
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    OverflowError,
    cattrs.BaseValidationError,
)


def _str_tuple(value: object, _: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list of strings, got {type(value).__name__}")
    return tuple(item for item in value if isinstance(item, str))


def _float_tuple(value: object, _: object) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list of numbers, got {type(value).__name__}")
    return tuple(
        float(item)
        for item in value
        if isinstance(item, (int, float)) and not isinstance(item, bool)
    )


def _float_map(value: object, _: object) -> Mapping[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected an object, got {type(value).__name__}")
    return {
        str(k): float(v)
        for k, v in value.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _progress(value: object, _: object) -> int:
    # Kolbo documents an integer percent; a float or numeric string is rounded down and an
    # out-of-range value clamped, because a cosmetic field should never fail a poll.
    if isinstance(value, bool):
        raise ValueError("progress is a boolean")
    number = int(float(value))  # type: ignore[arg-type]
    return min(100, max(0, number))


def _number(value: object, _: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _text(value: object, _: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a string, got {type(value).__name__}")


def _as_is(value: object, _: object) -> object:
    return value


_ALIAS_HOOKS: dict[object, Callable[[Any, Any], Any]] = {
    tuple[str, ...]: _str_tuple,
    tuple[float, ...]: _float_tuple,
    Mapping[str, float]: _float_map,
    Mapping[str, Any]: _as_is,
}
# Generic aliases cannot go through singledispatch, hence a predicate and a factory.
_converter.register_structure_hook_factory(
    lambda t: t in _ALIAS_HOOKS, lambda t: _ALIAS_HOOKS[t]
)
_converter.register_structure_hook(float, _number)
_converter.register_structure_hook(str, _text)


def _lenient(
    cls: type[T], prepare: Callable[[dict[str, Any]], None] | None = None
) -> Callable[[Any, Any], T]:
    # Resolve the string annotations against `_models`' own names: the package re-labels these
    # classes `kolbo_async.X`, where `Mapping` and friends are not defined.
    attrs.resolve_types(cls, globalns=vars(_models))  # type: ignore[type-var]
    overrides = {}
    if cls is GenerationStatus:
        overrides["progress"] = cattrs.override(struct_hook=_progress)
    base = make_dict_structure_fn(cls, _converter, **overrides)  # type: ignore[arg-type]
    fields = attrs.fields(cls)  # type: ignore[arg-type]
    keeps_raw = "raw" in attrs.fields_dict(cls)  # type: ignore[arg-type]
    # Only a field without a default (the id of a Submission, the state of a status) may fail
    # the whole answer; an odd optional one is dropped and stays reachable in `raw`.
    optional = {
        field.name: field.type
        for field in fields
        if field.default is not attrs.NOTHING and field.name != "raw"
    }

    def hook(data: Any, _: Any) -> T:
        if not isinstance(data, Mapping):
            raise ValueError(f"expected an object for {cls.__name__}, got {type(data).__name__}")
        cleaned = {k: v for k, v in data.items() if v is not None}
        if prepare is not None:
            prepare(cleaned)
        if keeps_raw:
            cleaned["raw"] = data
        try:
            return base(cleaned, cls)
        except _UNREADABLE:
            # The slow path, taken only for an odd answer: find the optional fields that
            # cannot be read one by one, drop them, and try again.
            for name, kind in optional.items():
                if name in cleaned and not _readable(cleaned[name], kind, name, cls):
                    del cleaned[name]
            return base(cleaned, cls)

    return hook


def _readable(value: object, kind: Any, name: str, cls: type) -> bool:
    if cls is GenerationStatus and name == "progress":
        reader: Callable[[Any, Any], Any] = _progress
    else:
        reader = _converter.structure
    try:
        reader(value, kind)
    except _UNREADABLE:
        return False
    return True


def _prepare_model(data: dict[str, Any]) -> None:
    # Kolbo's own client tolerates camelCase twins and a single `type`; so do we.
    for key in [k for k in data if "_" not in k and any(c.isupper() for c in k)]:
        snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)
        data.setdefault(snake, data[key])
    if "types" not in data and isinstance(data.get("type"), str):
        data["types"] = [data["type"]]


_PREPARE: dict[type, Callable[[dict[str, Any]], None] | None] = {
    Submission: None,
    Failure: None,
    VideoResult: None,
    GenerationStatus: None,
    Credits: None,
    Model: _prepare_model,
}
# A factory, so the structuring code is generated on first use rather than at import time:
# `import kolbo_async` stays close to the cost of its dependencies.
_converter.register_structure_hook_factory(
    lambda t: t in _PREPARE, lambda t: _lenient(t, _PREPARE[t])
)


def structure(data: object, cls: type[T]) -> T:
    """Structure `data` into `cls`, raising `ValueError` with a readable reason on failure."""
    try:
        return _converter.structure(data, cls)
    except ValueError:
        raise
    except _UNREADABLE as exc:
        raise ValueError(f"cannot read {cls.__name__}: {exc}") from exc
