"""A batch item as a request: `batch_request` makes each item of `generate_many` a request
object of its route, with its path and validated body (errors name the item)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._exceptions import InvalidRequestError
from ._requests import BatchRequest, ImageToVideo, Route, TextToVideo

__all__ = ["batch_request"]


def batch_request(index: int, item: object) -> tuple[BatchRequest, str, dict[str, Any]]:
    """Item `index` of a batch as a request object, its path and its validated body.

    A request object of any route is taken as it is; a mapping with ``image_url`` is an
    `ImageToVideo`, any other mapping a `TextToVideo`; errors name the item, as in
    ``requests[3].duration``.
    """
    where = f"requests[{index}]"
    request: Route
    if isinstance(item, Route):
        request = item
    elif isinstance(item, Mapping):
        cls: type[BatchRequest] = ImageToVideo if "image_url" in item else TextToVideo
        names = {field.name for field in attrs.fields(cls)}
        for key in item:
            if key not in names:
                raise InvalidRequestError(
                    f"{where}.{key}", f"is not a field of {cls.__name__}; known: "
                    + ", ".join(sorted(names)),
                )
        if cls is TextToVideo and "prompt" not in item:
            raise InvalidRequestError(f"{where}.prompt", "is required (or give an image_url)")
        try:
            request = cls(**item)
        except TypeError as exc:  # not str keys
            raise InvalidRequestError(where, str(exc)) from None
    else:
        raise InvalidRequestError(
            where, f"must be a request (TextToVideo, TextToImage, ...) or a dict, "
            f"not {type(item).__name__}"
        )
    try:
        path, body = request.body()
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{where}.{exc.field}", exc.message.partition(": ")[2]) from None
    return request, path, body
