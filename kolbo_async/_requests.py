"""Request shapes: one declaration of each route's fields, read by everything else.

A route is a frozen attrs class: its path, and one line per field holding the type the calls
show (their signatures are the class's, through `arguments_of`, for mypy and IDEs alike) and
the check run before any byte goes out (raising `InvalidRequestError` naming the field), which
makes the JSON body. Fields left as None are not sent, so Kolbo's own defaults (Smart Select
when `model` is omitted) apply. Adding a field to a route is one line here; a new route is one
class (its path and fields, on `Route` or a family such as `VideoRoute`) and its two calls.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import attrs
import httpx

from ._exceptions import InvalidRequestError
from ._lazy import public
from ._local_files import MAX_FILE_BYTES, Medium, check_utf8, is_url, local_file, media_or_none
from ._route_files import PART, REPEAT, ROUTES, SEND_AS, TOGETHER, Part

__all__ = [
    "TEXT_TO_VIDEO_PATH",
    "BatchRequest",
    "ImageToVideo",
    "TextToVideo",
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

# Kolbo's own client passes the catalog's values through untouched: W:H with positive decimal
# numbers (the catalog holds ratios such as 2.39:1) or one of the catalog's words.
_RATIO_SIDE = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_RATIO_WORDS = frozenset({"auto", "adaptive"})

#: A field's check: (field name, value given) -> the value to send, or InvalidRequestError.
Check = Callable[[str, Any], Any]
#: A field's rule: (request, checked value) -> None, or InvalidRequestError.
Rule = Callable[[Any, Any], None]
#: Field metadata keys: its check, and a rule on the checked value that needs the request.
_CHECK = "kolbo_async.check"
_RULE = "kolbo_async.rule"


# --- Checks: (field name, value given) -> the value to send ------------------------------------


def check_text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidRequestError(field, f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise InvalidRequestError(field, "must not be empty or blank")
    if "\x00" in value:
        raise InvalidRequestError(field, "contains a NUL character")
    return check_utf8(field, value)


def check_url(field: str, value: object) -> str:
    text = check_text(field, value)
    try:
        url = httpx.URL(text.strip())
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidRequestError(field, f"is not a valid URL: {show(text)}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidRequestError(field, f"must be an http(s) URL with a host, not {show(text)}")
    return text.strip()


def check_medium(max_bytes: int = MAX_FILE_BYTES) -> Check:
    """A medium's check: an http(s) URL is sent as it is; an `os.PathLike` or a `str` that
    is not a URL is a local file, checked now (exists, readable, at most `max_bytes`) and
    kept as a `LocalFile` for the send path to stream or upload."""

    def check(field: str, value: object) -> str:
        if isinstance(value, str) and is_url(value.strip()):
            return check_url(field, value)
        return local_file(field, value, max_bytes)

    return check


#: One medium, a URL or a local file of up to 500 MiB.
check_media_item = check_medium()


def check_aspect_ratio(field: str, value: object) -> str:
    if not isinstance(value, str) or not (value in _RATIO_WORDS or _is_ratio(value)):
        raise InvalidRequestError(
            field, f"must be W:H ('16:9', '2.39:1'), 'auto' or 'adaptive', not {show(value)}"
        )
    return value


def _is_ratio(text: str) -> bool:
    sides = text.split(":")
    return len(sides) == 2 and all(
        _RATIO_SIDE.fullmatch(side) and float(side) > 0 for side in sides
    )


def check_duration(field: str, value: object) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequestError(field, f"must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequestError(field, f"must be a positive number of seconds, not {value}")
    return value


def check_flag(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequestError(field, f"must be True or False, not {show(value)}")
    return value


def check_sequence(field: str, value: object) -> Sequence[object]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidRequestError(field, f"must be a list, not {type(value).__name__}")
    return value


def check_each(check: Check) -> Check:
    """A list whose items pass `check`; an error names the item, as in ``field[2]``."""

    def check_items(field: str, value: object) -> list[Any]:
        items = check_sequence(field, value)
        return [check(f"{field}[{i}]", item) for i, item in enumerate(items)]

    return check_items


def smart_select(request: Any, ids: Sequence[str]) -> None:
    if request.model is None and len(ids) > MAX_VISUAL_DNA_SMART_SELECT:
        raise InvalidRequestError(
            "visual_dna_ids",
            f"Smart Select takes at most {MAX_VISUAL_DNA_SMART_SELECT} ids, got {len(ids)}; "
            "name a model that allows more (see Model.max_visual_dna)",
        )


def _merge_extra(body: dict[str, Any], extra_body: object) -> dict[str, Any]:
    if extra_body is not None:
        if not isinstance(extra_body, Mapping):
            raise InvalidRequestError(
                "extra_body", f"must be a mapping, not {type(extra_body).__name__}"
            )
        for key, value in extra_body.items():
            if not isinstance(check_utf8("extra_body", key), str):
                raise InvalidRequestError("extra_body", f"keys must be strings, not {key!r}")
            if key in body:
                raise InvalidRequestError(
                    "extra_body", f"{key!r} is already set by its own argument"
                )
            body[key] = check_utf8("extra_body", value)
        try:
            # httpx would raise from deep inside on NaN or an object json cannot encode. The
            # SDK's own fields are already known to be JSON, so only extra_body is checked.
            json.dumps(extra_body, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError("extra_body", f"is not JSON-serialisable: {exc}") from exc
    return body


def show(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- The declaration: a route is a class of checked fields ---------------------------------------


def checked(
    check: Check,
    rule: Rule | None = None,
    *,
    send_as: str | None = None,
    part: Part | None = None,
    together: tuple[str, ...] = (),
    repeat: bool = False,
) -> dict[str, Any]:
    """A field's metadata: `check` makes its JSON value; `rule(request, value)` may refuse it
    for what other fields hold (run right after the check, so errors keep the field order);
    `send_as` is its JSON name when Kolbo's differs from the parameter's (``first_frame`` is
    sent as ``first_frame_url``). Errors name the parameter.

    How a local file given in it is sent (kolbo-api.md §13): `part` names the multipart part
    it goes in where the route takes files (a name, or a function of the `LocalFile`), and
    without one it is uploaded first through ``media.upload`` and sent as its URL. With
    `together` (JSON names), it goes as a part only when every one of those fields is a
    local file (else it is uploaded). `repeat`: in a multipart body, the field's URLs are
    repeated fields rather than one JSON string.

    A field is ``attrs.field(metadata=checked(...))``, with ``default=None`` when it may be
    left out (then it is not sent): what mypy, IDEs and attrs all read as the same thing.
    """
    return {
        _CHECK: check, _RULE: rule, SEND_AS: send_as,
        PART: part, TOGETHER: together, REPEAT: repeat,
    }  # fmt: skip


def tuple_or_none(value: Sequence[str] | None) -> Sequence[str] | None:
    # Lists become tuples so a request stays hashable and immutable; anything else is left
    # for validation to name.
    return tuple(value) if isinstance(value, list) else value


def route_order(cls: type, fields: list[attrs.Attribute[Any]]) -> list[attrs.Attribute[Any]]:
    # A route's own fields first (its positional ones lead), then its families', extra_body
    # last: the order of the call's parameters, of the repr, of the checks and of the body.
    own = inspect.get_annotations(cls)
    return sorted(fields, key=lambda field: (field.name == "extra_body", field.name not in own))


#: A checked field, as `Route.body` reads it: (name, check, rule, JSON name, left out when).
_Checked = tuple[str, Check, Rule | None, str, tuple[object, ...]]


def _checks(cls: type[Route]) -> tuple[_Checked, ...]:
    # Each checked field of a route, in order. Read once per class, so building a body costs
    # a loop, not a walk through attrs' metadata. A field defaulting to None is left out when
    # None; one defaulting to an empty tuple (a list of media) also when empty.
    try:
        return _CHECKS[cls]
    except KeyError:
        checks = _CHECKS[cls] = tuple(
            (
                field.name,
                field.metadata[_CHECK],
                field.metadata[_RULE],
                field.metadata.get(SEND_AS) or field.name,
                (None,) if field.default is None else (None, ()) if field.default == () else (),
            )
            for field in attrs.fields(cls)
            if _CHECK in field.metadata  # not extra_body, which is merged last
        )
        return checks


_CHECKS: dict[type[Route], tuple[_Checked, ...]] = {}


class Route:
    """What every route has: its path, `extra_body`, `body()` and a repr of what was set.

    A route is an attrs class (frozen, ``field_transformer=route_order``) deriving from this
    one through a family such as `VideoRoute`, which declares the options its routes share
    and `extra_body` last. This class adds no attrs field of its own, so a route's
    parameters read in their call order everywhere, IDEs included.
    """

    __slots__ = ()
    __attrs_attrs__: ClassVar[Any]  # a route is an attrs class
    _path: ClassVar[str]
    extra_body: Mapping[str, Any] | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_path" in cls.__dict__:  # attrs remakes the class: the last one made stays
            ROUTES[cls._path] = cls

    def body(self) -> tuple[str, dict[str, Any]]:
        """The endpoint path and validated JSON body (raises `InvalidRequestError`)."""
        body: dict[str, Any] = {}
        for name, check, rule, send_as, omitted in _checks(type(self)):
            value = getattr(self, name)
            if any(value is left or value == left for left in omitted):
                continue  # left out: Kolbo's default applies
            body[send_as] = check_utf8(name, check(name, value))
            if rule is not None:
                rule(self, body[send_as])
        return self._path, _merge_extra(body, self.extra_body)

    def __repr__(self) -> str:
        # Only the fields that were set: a batch of 500 requests prints readably.
        shown = [
            f"{field.name}={value!r}"
            for field in attrs.fields(type(self))
            if (value := getattr(self, field.name)) is not None and value != ()
        ]
        return f"{type(self).__name__}({', '.join(shown)})"


@attrs.frozen(kw_only=True, init=False, eq=False, repr=False)
class VideoOptions(Route):
    """The options every video route takes, keyword-only, `extra_body` last (a family).

    Never made itself: no ``__init__`` or ``__eq__`` of its own, its routes have theirs
    (``init=False, eq=False`` also spare the import the building of them).
    """

    model: str | None = attrs.field(default=None, metadata=checked(check_text))
    aspect_ratio: str | None = attrs.field(default=None, metadata=checked(check_aspect_ratio))
    duration: float | None = attrs.field(default=None, metadata=checked(check_duration))
    enhance_prompt: bool | None = attrs.field(default=None, metadata=checked(check_flag))
    visual_dna_ids: Sequence[str] | None = attrs.field(
        default=None,
        converter=tuple_or_none,
        metadata=checked(check_each(check_text), smart_select),
    )
    resolution: str | None = attrs.field(default=None, metadata=checked(check_text))
    sound_enabled: bool | None = attrs.field(default=None, metadata=checked(check_flag))
    # Every route files its generation under a project and a session (Kolbo's client passes
    # the submit answer's session_id back to keep a series together).
    project_id: str | None = attrs.field(default=None, metadata=checked(check_text))
    session_id: str | None = attrs.field(default=None, metadata=checked(check_text))
    extra_body: Mapping[str, Any] | None = attrs.field(default=None, hash=False)


@attrs.frozen(kw_only=True, init=False, eq=False, repr=False)
class VideoRoute(VideoOptions):
    """The text- and image-to-video family: the video options and `skip_color_palette`."""

    skip_color_palette: bool | None = attrs.field(default=None, metadata=checked(check_flag))


@attrs.frozen(repr=False, field_transformer=route_order)
class TextToVideo(VideoRoute):
    """One text-to-video request: the arguments of `client.videos.generate`.

    A batch item of `generate_many`, validated before anything is sent; fields left as None
    are not sent.

    Example:
        >>> TextToVideo("A drone over snowy peaks", duration=5)
        TextToVideo(prompt='A drone over snowy peaks', duration=5)
    """

    _path: ClassVar[str] = TEXT_TO_VIDEO_PATH
    prompt: str = attrs.field(metadata=checked(check_text))
    # Only the text route takes these (Kolbo's from-image route does not).
    reference_images: Sequence[Medium] | None = attrs.field(
        default=None, kw_only=True, converter=media_or_none,
        metadata=checked(check_each(check_media_item)),
    )  # fmt: skip
    preset_id: str | None = attrs.field(default=None, kw_only=True, metadata=checked(check_text))


@attrs.frozen(repr=False, field_transformer=route_order)
class ImageToVideo(VideoRoute):
    """One image-to-video request: the arguments of `client.videos.from_image`.

    `image_url` is an http(s) URL or a local file, uploaded first (the route takes no files).

    Example:
        >>> ImageToVideo("https://example.com/photo.jpg", prompt="Slow zoom in")
        ImageToVideo(image_url='https://example.com/photo.jpg', prompt='Slow zoom in')
    """

    _path: ClassVar[str] = IMAGE_TO_VIDEO_PATH
    image_url: Medium = attrs.field(metadata=checked(check_media_item))
    prompt: str | None = attrs.field(default=None, kw_only=True, metadata=checked(check_text))


#: A batch item's type: a request of any route (`BatchOutcome.request` says the same).
BatchRequest = Route


def text_to_video_body(prompt: Any, **options: Any) -> dict[str, Any]:
    """The validated JSON body of ``POST /api/v1/generate/video``.

    Example:
        >>> text_to_video_body("A drone over snowy peaks", duration=5)
        {'prompt': 'A drone over snowy peaks', 'duration': 5}
    """
    return TextToVideo(prompt, **options).body()[1]


def image_to_video_body(image_url: Any, **options: Any) -> dict[str, Any]:
    """The validated JSON body of ``POST /api/v1/generate/video/from-image``."""
    return ImageToVideo(image_url, **options).body()[1]


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


public(ImageToVideo, TextToVideo)
