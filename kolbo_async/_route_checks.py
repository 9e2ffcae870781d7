"""The checks the newer routes add to `_requests`' own: counts, keyframes, a bounding box.

Each is a `Check`: (parameter name, value given) -> the JSON value to send, or
`InvalidRequestError` naming the parameter (an item as ``keyframes[1].timestamp_seconds``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ._exceptions import InvalidRequestError
from ._local_files import Medium
from ._requests import check_media_item, check_sequence, show

__all__ = [
    "check_box",
    "check_count",
    "check_keyframes",
    "check_media_list",
    "keyframes_tuple",
    "media_tuple",
]


def check_count(field: str, value: object) -> int:
    """A positive whole number (``num_images=2``); not a bool, not 2.0."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(field, f"must be a positive integer, not {show(value)}")
    if value < 1:
        raise InvalidRequestError(field, f"must be a positive integer, not {value}")
    return value


def check_media_list(field: str, value: object) -> list[str]:
    """A non-empty list of media, each an http(s) URL or a local file (the pictures an edit
    starts from)."""
    items = check_sequence(field, value)
    if not items:
        raise InvalidRequestError(field, "must hold at least one URL or file")
    return [check_media_item(f"{field}[{i}]", item) for i, item in enumerate(items)]


def _seconds(field: str, value: object) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequestError(field, f"must be a number of seconds, not {show(value)}")
    if not math.isfinite(value) or value < 0:
        raise InvalidRequestError(field, f"must be a finite number >= 0, not {value}")
    return value


def check_keyframes(field: str, value: object) -> list[dict[str, Any]]:
    """Keyframes as Kolbo takes them: ``[{image_url, timestamp_seconds}, ...]``.

    Each item is a mapping with those two keys or an ``(image_url, timestamp_seconds)`` pair;
    the image an http(s) URL or a local file, the timestamp a finite number of seconds >= 0.
    """
    frames: list[dict[str, Any]] = []
    for i, item in enumerate(check_sequence(field, value)):
        where = f"{field}[{i}]"
        if isinstance(item, Mapping):
            unknown = set(item) - {"image_url", "timestamp_seconds"}
            if unknown:
                raise InvalidRequestError(
                    where,
                    f"has unknown keys {sorted(map(str, unknown))}; "
                    "a keyframe is {image_url, timestamp_seconds}",
                )
            url, seconds = item.get("image_url"), item.get("timestamp_seconds")
        elif isinstance(item, tuple) and len(item) == 2:
            url, seconds = item
        else:
            raise InvalidRequestError(
                where,
                "must be {'image_url': ..., 'timestamp_seconds': ...} or a "
                f"(url, seconds) pair, not {show(item)}",
            )
        frames.append({
            "image_url": check_media_item(f"{where}.image_url", url),
            "timestamp_seconds": _seconds(f"{where}.timestamp_seconds", seconds),
        })  # fmt: skip
    return frames


def media_tuple(value: Sequence[Medium]) -> Sequence[Medium]:
    """A required list of media kept hashable: a list becomes a tuple (anything else is left
    for the check to name)."""
    return tuple(value) if isinstance(value, list) else value


def keyframes_tuple(value: Sequence[Any]) -> Sequence[Any]:
    """Keyframes kept hashable: a list becomes a tuple, a mapping a (url, seconds) pair.

    A value of another shape is left for `check_keyframes` to name.
    """
    if not isinstance(value, (list, tuple)):
        return value
    return tuple(
        (item.get("image_url"), item.get("timestamp_seconds"))
        if isinstance(item, Mapping) and set(item) <= {"image_url", "timestamp_seconds"}
        else item
        for item in value
    )


def check_box(field: str, value: object) -> list[int | float]:
    """A bounding box ``[x, y, width, height]``: four finite numbers, width and height > 0."""
    items = check_sequence(field, value)
    if len(items) != 4:
        raise InvalidRequestError(field, f"must be [x, y, width, height], not {show(value)}")
    box: list[int | float] = []
    for i, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise InvalidRequestError(f"{field}[{i}]", f"must be a number, not {show(item)}")
        if not math.isfinite(item) or item < 0 or (i >= 2 and item == 0):
            raise InvalidRequestError(f"{field}[{i}]", f"is out of range: {item}")
        box.append(item)
    return box
