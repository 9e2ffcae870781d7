"""The simulated generation routes: what each POST requires, which models it takes, its caps.

One `RouteSpec` per path of ``kolbo-api.md`` §2 and §13. The checks are the server's, not the
SDK's: a missing required field is 400 ``MISSING_FIELDS``, a model of another catalog type
400 ``WRONG_MODEL_TYPE``, and a list longer than the named model's cap a deterministic 400
naming the cap (Kolbo states the caps per model in its catalog). Durations and aspect ratios
are snapped, as on the video routes (`_catalog.snap`). A multipart body (local files) is read
as the route's controller reads it (`_forms`): its files stored on the CDN, their URLs put
where the route's JSON body would hold them; a route that takes no files reads none.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._catalog import CATALOG, Refused, model_for, price
from ._forms import Part, form_body, is_form, parse_form
from ._records import SimRequest

__all__ = ["IMAGE_KINDS", "ROUTE_SPECS", "RouteSpec", "image_count", "read_request"]

#: Credits per image when no model is named (Smart Select).
SMART_SELECT_IMAGE_CREDIT = 4.0
#: Images one request may ask for when the model states no cap.
DEFAULT_IMAGES_PER_REQUEST = 4


@attrs.frozen
class RouteSpec:
    """One generation route: its catalog types (a model must have one), required fields, and
    the caps it enforces as ``(field, catalog key)`` pairs."""

    kinds: tuple[str, ...]
    required: tuple[str, ...]
    caps: tuple[tuple[str, str], ...] = ()
    image: bool = False


_DNA = (("visual_dna_ids", "max_visual_dna"),)
ROUTE_SPECS: dict[str, RouteSpec] = {
    "/api/v1/generate/video": RouteSpec(("text_to_video",), ("prompt",), _DNA),
    "/api/v1/generate/video/from-image": RouteSpec(("img_to_video",), ("image_url",), _DNA),
    "/api/v1/generate/image": RouteSpec(
        ("text_to_img",), ("prompt",),
        (("reference_images", "max_reference_images"), *_DNA), image=True,
    ),
    "/api/v1/generate/image-edit": RouteSpec(
        ("image_editing",), ("prompt", "source_images"),
        (("reference_images", "max_reference_images"), *_DNA), image=True,
    ),
    "/api/v1/generate/first-last-frame": RouteSpec(
        ("firstlastgenerations",), ("first_frame_url", "last_frame_url"), _DNA
    ),
    "/api/v1/generate/elements": RouteSpec(
        ("elements",), ("prompt",),
        (
            ("reference_images", "elements_max_images"),
            ("reference_videos", "elements_max_videos"),
            ("reference_audio_urls", "elements_max_audio"),
            ("keyframes", "max_keyframes"),
            *_DNA,
        ),
    ),
    "/api/v1/generate/video-from-video": RouteSpec(
        ("video_to_video",), ("video_url",),
        (
            ("reference_images", "max_images"),
            ("reference_videos", "max_videos"),
            ("elements", "max_elements"),
            *_DNA,
        ),
    ),
    "/api/v1/generate/lipsync": RouteSpec(
        ("lipsync-image", "lipsync-video"), ("source_url", "audio_url")
    ),
}  # fmt: skip
#: The catalog types whose generations are images.
IMAGE_KINDS = frozenset({"text_to_img", "image_editing"})


def read_request(
    request: SimRequest, spec: RouteSpec, store: Callable[[Part], str] | None = None
) -> tuple[dict[str, Any], str, dict[str, Any] | None, float]:
    """The body, catalog type, model (None: Smart Select) and price of a generation POST.

    A multipart body's files are kept through `store` (which returns each one's URL).

    Raises:
        Refused: the request cannot be served (its code and message make the 400).
    """
    body: object
    content_type = request.headers.get("content-type")
    if is_form(content_type):
        assert content_type is not None
        fields, files = parse_form(content_type, request.body)
        if files and store is None:
            raise Refused("LIMIT_UNEXPECTED_FILE", f"Unexpected field: {files[0][0]}")
        body = form_body(request.path, fields, files, store or (lambda part: ""))
    else:
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            body = None
    if not isinstance(body, dict):
        raise Refused("MISSING_FIELDS", f"Missing required field: {spec.required[0]}")
    for name in spec.required:
        value = body.get(name)
        given = value if isinstance(value, list) else [value]
        if not given or not all(isinstance(v, str) and v.strip() for v in given):
            raise Refused("MISSING_FIELDS", f"Missing required field: {name}")
    kind = _kind(body, spec)
    model = model_for(body, kind)
    _check_caps(body, spec, model)
    if spec.image:
        return body, kind, model, image_price(model, body)
    return body, kind, model, price(model, body)


def image_count(body: Mapping[str, Any]) -> int:
    """How many images a request asks for (1 when it does not say)."""
    count = body.get("num_images", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        return 1
    return count


def image_price(model: Mapping[str, Any] | None, body: Mapping[str, Any]) -> float:
    """Credits for an image request: credit per image x images x resolution multiplier."""
    credit = float((model or {}).get("credit", SMART_SELECT_IMAGE_CREDIT))
    multiplier = float((model or {}).get("resolution_multipliers", {}).get(
        body.get("resolution"), 1.0))  # fmt: skip
    return credit * image_count(body) * multiplier


def _kind(body: Mapping[str, Any], spec: RouteSpec) -> str:
    # Lip-sync has two catalog types, by the face: a video (by its extension) or an image. A
    # named model that has only the other type is taken at its word.
    if len(spec.kinds) == 1:
        return spec.kinds[0]
    face = str(body.get("source_url", "")).lower().split("?")[0]
    wanted = "lipsync-video" if face.endswith((".mp4", ".mov", ".webm")) else "lipsync-image"
    named = next((m for m in CATALOG if m["identifier"] == body.get("model")), None)
    if named is not None and wanted not in named["types"]:
        return next((kind for kind in spec.kinds if kind in named["types"]), wanted)
    return wanted


def _check_caps(
    body: Mapping[str, Any], spec: RouteSpec, model: Mapping[str, Any] | None
) -> None:
    if spec.image:
        cap = (model or {}).get("images_per_request", DEFAULT_IMAGES_PER_REQUEST)
        asked = body.get("num_images", 1)
        if isinstance(asked, int) and not isinstance(asked, bool) and asked > cap:
            raise Refused(
                "TOO_MANY_IMAGES", f"At most {cap} images per request (images_per_request)"
            )
    if model is None:
        return
    for field, key in spec.caps:
        cap = model.get(key)
        given = body.get(field)
        if isinstance(cap, int) and isinstance(given, list) and len(given) > cap:
            raise Refused(
                "TOO_MANY_" + field.upper(),
                f"Model {model['identifier']} takes at most {cap} {field} ({key}), "
                f"got {len(given)}",
            )
    if body.get("keyframes") and model.get("supports_keyframes") is False:
        raise Refused("KEYFRAMES_NOT_SUPPORTED", f"Model {model['identifier']} takes no keyframes")
    low, high = model.get("min_output_duration"), model.get("max_output_duration")
    duration = body.get("duration")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool) and (
        not math.isfinite(duration)
        or (isinstance(low, (int, float)) and duration < low)
        or (isinstance(high, (int, float)) and duration > high)
    ):
        raise Refused("INVALID_DURATION", f"Duration must be between {low} and {high} seconds")

