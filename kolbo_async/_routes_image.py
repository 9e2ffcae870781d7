"""The image routes, one declaration each: `TextToImage` and `ImageEdit` (kolbo-api.md §13).

Both answer like the video routes and are polled, cancelled and downloaded the same way; their
status carries ``type: "image"`` and their result is an `ImageResult` (several URLs when
`num_images` asks for more than one). Neither takes files (§13): a local file given for an
image is uploaded first through ``media.upload`` and sent as its URL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from ._lazy import public
from ._local_files import Medium, media_or_none
from ._requests import (
    Route,
    check_aspect_ratio,
    check_each,
    check_flag,
    check_media_item,
    check_text,
    checked,
    route_order,
    smart_select,
    tuple_or_none,
)
from ._route_checks import check_count, check_media_list, media_tuple

__all__ = ["IMAGE_EDIT_PATH", "TEXT_TO_IMAGE_PATH", "ImageEdit", "ImageRoute", "TextToImage"]

TEXT_TO_IMAGE_PATH = "/api/v1/generate/image"
IMAGE_EDIT_PATH = "/api/v1/generate/image-edit"


@attrs.frozen(kw_only=True, init=False, eq=False, repr=False)
class ImageRoute(Route):
    """The options both image routes take, keyword-only, `extra_body` last (a family)."""

    model: str | None = attrs.field(default=None, metadata=checked(check_text))
    aspect_ratio: str | None = attrs.field(default=None, metadata=checked(check_aspect_ratio))
    num_images: int | None = attrs.field(default=None, metadata=checked(check_count))
    resolution: str | None = attrs.field(default=None, metadata=checked(check_text))
    quality: str | None = attrs.field(default=None, metadata=checked(check_text))
    enhance_prompt: bool | None = attrs.field(default=None, metadata=checked(check_flag))
    reference_images: Sequence[Medium] | None = attrs.field(
        default=None, converter=media_or_none, metadata=checked(check_each(check_media_item))
    )
    visual_dna_ids: Sequence[str] | None = attrs.field(
        default=None,
        converter=tuple_or_none,
        metadata=checked(check_each(check_text), smart_select),
    )
    moodboard_id: str | None = attrs.field(default=None, metadata=checked(check_text))
    enable_web_search: bool | None = attrs.field(default=None, metadata=checked(check_flag))
    preset_id: str | None = attrs.field(default=None, metadata=checked(check_text))
    skip_color_palette: bool | None = attrs.field(default=None, metadata=checked(check_flag))
    project_id: str | None = attrs.field(default=None, metadata=checked(check_text))
    session_id: str | None = attrs.field(default=None, metadata=checked(check_text))
    extra_body: Mapping[str, Any] | None = attrs.field(default=None, hash=False)


@attrs.frozen(repr=False, field_transformer=route_order)
class TextToImage(ImageRoute):
    """One text-to-image request: the arguments of `client.images.generate`.

    ``POST /api/v1/generate/image``. `resolution` is one of the model's tiers (``"1K"`` to
    ``"4K"``); `num_images` a positive integer (the model caps it). Fields left as None are
    not sent.

    Example:
        >>> TextToImage("A lighthouse at dawn", num_images=2)
        TextToImage(prompt='A lighthouse at dawn', num_images=2)
    """

    _path: ClassVar[str] = TEXT_TO_IMAGE_PATH
    prompt: str = attrs.field(metadata=checked(check_text))


@attrs.frozen(repr=False, field_transformer=route_order)
class ImageEdit(ImageRoute):
    """One image-edit request: the arguments of `client.images.edit`.

    ``POST /api/v1/generate/image-edit``: `images` (at least one; http(s) URLs or local
    files, uploaded first) are the pictures to edit, sent as ``source_images``; `prompt` says
    what to change.

    Example:
        >>> ImageEdit(["https://example.com/room.png"], "Paint the walls green")
        ImageEdit(images=('https://example.com/room.png',), prompt='Paint the walls green')
    """

    _path: ClassVar[str] = IMAGE_EDIT_PATH
    images: Sequence[Medium] = attrs.field(
        converter=media_tuple, metadata=checked(check_media_list, send_as="source_images")
    )
    prompt: str = attrs.field(metadata=checked(check_text))


public(ImageEdit, TextToImage)
