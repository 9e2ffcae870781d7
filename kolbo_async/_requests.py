"""Pure validation and JSON-body building for the generation calls.

Everything here runs before any byte goes out, and raises `InvalidRequestError` naming the
field. Fields left as None are not sent, so Kolbo's own defaults (Smart Select when `model`
is omitted) apply.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import httpx

from ._exceptions import InvalidRequestError

__all__ = [
    "TEXT_TO_VIDEO_PATH",
    "BatchRequest",
    "ImageToVideo",
    "TextToVideo",
    "batch_request",
    "IMAGE_TO_VIDEO_PATH",
    "MAX_VISUAL_DNA_SMART_SELECT",
    "image_to_video_body",
    "text_to_video_body",
    "validate_generation_id",
]

TEXT_TO_VIDEO_PATH = "/api/v1/generate/video"
IMAGE_TO_VIDEO_PATH = "/api/v1/generate/video/from-image"
#: Kolbo's docs allow 3 Visual DNA ids; a named model may allow more (the server decides).
MAX_VISUAL_DNA_SMART_SELECT = 3

_ASPECT_RATIO = re.compile(r"[1-9][0-9]{0,4}:[1-9][0-9]{0,4}")


def text_to_video_body(
    prompt: object,
    *,
    model: object = None,
    aspect_ratio: object = None,
    duration: object = None,
    enhance_prompt: object = None,
    visual_dna_ids: object = None,
    reference_images: object = None,
    resolution: object = None,
    sound_enabled: object = None,
    extra_body: object = None,
) -> dict[str, Any]:
    """The validated JSON body of ``POST /api/v1/generate/video``.

    Example:
        >>> text_to_video_body("A drone over snowy peaks", duration=5)
        {'prompt': 'A drone over snowy peaks', 'duration': 5}
    """
    body: dict[str, Any] = {"prompt": _text("prompt", prompt)}
    _common(
        body,
        model=model,
        aspect_ratio=aspect_ratio,
        duration=duration,
        enhance_prompt=enhance_prompt,
        visual_dna_ids=visual_dna_ids,
        reference_images=reference_images,
        resolution=resolution,
        sound_enabled=sound_enabled,
    )
    return _merge_extra(body, extra_body)


def image_to_video_body(
    image_url: object,
    *,
    prompt: object = None,
    model: object = None,
    aspect_ratio: object = None,
    duration: object = None,
    enhance_prompt: object = None,
    visual_dna_ids: object = None,
    reference_images: object = None,
    resolution: object = None,
    sound_enabled: object = None,
    extra_body: object = None,
) -> dict[str, Any]:
    """The validated JSON body of ``POST /api/v1/generate/video/from-image``."""
    body: dict[str, Any] = {"image_url": _url("image_url", image_url)}
    if prompt is not None:
        body["prompt"] = _text("prompt", prompt)
    _common(
        body,
        model=model,
        aspect_ratio=aspect_ratio,
        duration=duration,
        enhance_prompt=enhance_prompt,
        visual_dna_ids=visual_dna_ids,
        reference_images=reference_images,
        resolution=resolution,
        sound_enabled=sound_enabled,
    )
    return _merge_extra(body, extra_body)


def validate_generation_id(generation_id: object) -> str:
    """A generation id as given, if it is a non-blank string without control characters."""
    if not isinstance(generation_id, str):
        raise InvalidRequestError(
            "generation_id", f"must be a string, not {type(generation_id).__name__}"
        )
    if not generation_id.strip():
        raise InvalidRequestError("generation_id", "must not be empty")
    if len(generation_id) > 256:
        raise InvalidRequestError("generation_id", f"is too long ({len(generation_id)} chars)")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in generation_id):
        raise InvalidRequestError("generation_id", "contains a control character")
    return generation_id


def _common(
    body: dict[str, Any],
    *,
    model: object,
    aspect_ratio: object,
    duration: object,
    enhance_prompt: object,
    visual_dna_ids: object,
    reference_images: object,
    resolution: object,
    sound_enabled: object,
) -> None:
    if model is not None:
        body["model"] = _text("model", model)
    if aspect_ratio is not None:
        if not isinstance(aspect_ratio, str) or not _ASPECT_RATIO.fullmatch(aspect_ratio):
            raise InvalidRequestError(
                "aspect_ratio", f"must look like '16:9' (W:H), not {_show(aspect_ratio)}"
            )
        body["aspect_ratio"] = aspect_ratio
    if duration is not None:
        body["duration"] = _duration(duration)
    if enhance_prompt is not None:
        body["enhance_prompt"] = _flag("enhance_prompt", enhance_prompt)
    if visual_dna_ids is not None:
        ids = [
            _text(f"visual_dna_ids[{i}]", item)
            for i, item in enumerate(_sequence("visual_dna_ids", visual_dna_ids))
        ]
        if model is None and len(ids) > MAX_VISUAL_DNA_SMART_SELECT:
            raise InvalidRequestError(
                "visual_dna_ids",
                f"Smart Select takes at most {MAX_VISUAL_DNA_SMART_SELECT} ids, got {len(ids)}; "
                "name a model that allows more (see Model.max_visual_dna)",
            )
        body["visual_dna_ids"] = ids
    if reference_images is not None:
        body["reference_images"] = [
            _url(f"reference_images[{i}]", url)
            for i, url in enumerate(_sequence("reference_images", reference_images))
        ]
    if resolution is not None:
        body["resolution"] = _text("resolution", resolution)
    if sound_enabled is not None:
        body["sound_enabled"] = _flag("sound_enabled", sound_enabled)


def _text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidRequestError(field, f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise InvalidRequestError(field, "must not be empty or blank")
    if "\x00" in value:
        raise InvalidRequestError(field, "contains a NUL character")
    return value


def _url(field: str, value: object) -> str:
    text = _text(field, value)
    try:
        url = httpx.URL(text.strip())
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidRequestError(field, f"is not a valid URL: {_show(text)}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidRequestError(field, f"must be an http(s) URL with a host, not {_show(text)}")
    return text.strip()


def _duration(value: object) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequestError(
            "duration", f"must be a number of seconds, not {type(value).__name__}"
        )
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequestError("duration", f"must be a positive number of seconds, not {value}")
    return value


def _flag(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequestError(field, f"must be True or False, not {_show(value)}")
    return value


def _sequence(field: str, value: object) -> Sequence[object]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidRequestError(field, f"must be a list, not {type(value).__name__}")
    return value


def _merge_extra(body: dict[str, Any], extra_body: object) -> dict[str, Any]:
    if extra_body is not None:
        if not isinstance(extra_body, Mapping):
            raise InvalidRequestError(
                "extra_body", f"must be a mapping, not {type(extra_body).__name__}"
            )
        for key, value in extra_body.items():
            if not isinstance(key, str):
                raise InvalidRequestError("extra_body", f"keys must be strings, not {key!r}")
            if key in body:
                raise InvalidRequestError(
                    "extra_body", f"{key!r} is already set by its own argument"
                )
            body[key] = value
        try:
            # httpx would raise from deep inside on NaN or an object json cannot encode. The
            # SDK's own fields are already known to be JSON, so only extra_body is checked.
            json.dumps(extra_body, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError("extra_body", f"is not JSON-serialisable: {exc}") from exc
    return body


def _show(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tuple_or_none(value: object) -> object:
    # Lists become tuples so a request stays hashable and immutable; anything else is left
    # for validation to name.
    return tuple(value) if isinstance(value, list) else value


def _field(**kwargs: Any) -> Any:
    return attrs.field(default=None, kw_only=True, **kwargs)


@attrs.frozen
class TextToVideo:
    """One text-to-video request of a batch: the arguments of `client.videos.generate`.

    Validated by `generate_many` before anything is sent; fields left as None are not sent.

    Example:
        >>> TextToVideo("A drone over snowy peaks", duration=5)
        TextToVideo(prompt='A drone over snowy peaks', duration=5)
    """

    prompt: str
    model: str | None = _field()
    aspect_ratio: str | None = _field()
    duration: float | None = _field()
    enhance_prompt: bool | None = _field()
    visual_dna_ids: Sequence[str] | None = _field(converter=_tuple_or_none)
    reference_images: Sequence[str] | None = _field(converter=_tuple_or_none)
    resolution: str | None = _field()
    sound_enabled: bool | None = _field()
    extra_body: Mapping[str, Any] | None = _field(hash=False)

    def __repr__(self) -> str:
        return _repr(self)

    def body(self) -> tuple[str, dict[str, Any]]:
        """The endpoint path and validated JSON body (raises `InvalidRequestError`)."""
        fields = attrs.asdict(self, recurse=False)
        return TEXT_TO_VIDEO_PATH, text_to_video_body(fields.pop("prompt"), **fields)


@attrs.frozen
class ImageToVideo:
    """One image-to-video request of a batch: the arguments of `client.videos.from_image`.

    Example:
        >>> ImageToVideo("https://example.com/photo.jpg", prompt="Slow zoom in")
        ImageToVideo(image_url='https://example.com/photo.jpg', prompt='Slow zoom in')
    """

    image_url: str
    prompt: str | None = _field()
    model: str | None = _field()
    aspect_ratio: str | None = _field()
    duration: float | None = _field()
    enhance_prompt: bool | None = _field()
    visual_dna_ids: Sequence[str] | None = _field(converter=_tuple_or_none)
    reference_images: Sequence[str] | None = _field(converter=_tuple_or_none)
    resolution: str | None = _field()
    sound_enabled: bool | None = _field()
    extra_body: Mapping[str, Any] | None = _field(hash=False)

    def __repr__(self) -> str:
        return _repr(self)

    def body(self) -> tuple[str, dict[str, Any]]:
        """The endpoint path and validated JSON body (raises `InvalidRequestError`)."""
        fields = attrs.asdict(self, recurse=False)
        return IMAGE_TO_VIDEO_PATH, image_to_video_body(fields.pop("image_url"), **fields)


BatchRequest = TextToVideo | ImageToVideo


def batch_request(index: int, item: object) -> tuple[BatchRequest, str, dict[str, Any]]:
    """Item `index` of a batch as a request object, its path and its validated body.

    A mapping with ``image_url`` is an `ImageToVideo`, any other mapping a `TextToVideo`;
    errors name the item, as in ``requests[3].duration``.
    """
    where = f"requests[{index}]"
    request: BatchRequest
    if isinstance(item, (TextToVideo, ImageToVideo)):
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
            where, f"must be a TextToVideo, an ImageToVideo or a dict, not {type(item).__name__}"
        )
    try:
        path, body = request.body()
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{where}.{exc.field}", exc.message.partition(": ")[2]) from None
    return request, path, body


def _repr(request: TextToVideo | ImageToVideo) -> str:
    # Only the fields that were set: a batch of 500 requests prints readably.
    shown = [
        f"{field.name}={value!r}"
        for field in attrs.fields(type(request))
        if (value := getattr(request, field.name)) is not None
    ]
    return f"{type(request).__name__}({', '.join(shown)})"
