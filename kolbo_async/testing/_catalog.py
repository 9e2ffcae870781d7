"""The simulator's model catalog, shaped like Kolbo's ``GET /api/v1/models`` answer."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CATALOG",
    "SMART_SELECT_CREDIT",
    "Refused",
    "listing",
    "matches_type",
    "model_for",
    "price",
    "snap",
    "snap_ratio",
]

#: Credits per second when no model is named; 5 s cost 35, as in Kolbo's docs example.
SMART_SELECT_CREDIT = 7.0

# The aliases Kolbo documents for `?type=` (kolbo-api.md section 5), mapped to the raw catalog
# types they list; a raw type stands for itself.
_ALIASES: dict[str, tuple[str, ...]] = {
    "video": ("text_to_video",),
    "video_from_image": ("img_to_video",),
    "image": ("text_to_img",),
    "image_edit": ("image_editing",),
    "video_from_video": ("video_to_video",),
    "first_last_frame": ("firstlastgenerations",),
    "lipsync": ("lipsync-image", "lipsync-video"),
}

CATALOG: list[dict[str, Any]] = [
    {
        "identifier": "seedance-2",
        "name": "Seedance 2.0",
        "provider": "ByteDance",
        "types": ["text_to_video", "img_to_video"],
        "credit": 30,
        "supported_durations": [5, 10],
        "supported_aspect_ratios": ["16:9", "9:16", "1:1"],
        "supported_resolutions": ["720p", "1080p"],
        "resolution_multipliers": {"720p": 1, "1080p": 1.5},
        "recommended": True,
        "new_model": False,
        "max_visual_dna": 3,
        "summary": "Cinematic motion with strong prompt adherence.",
    },
    {
        "identifier": "seedance-2-fast",
        "name": "Seedance 2.0 Fast",
        "provider": "ByteDance",
        "types": ["text_to_video", "img_to_video"],
        "credit": 12,
        "supported_durations": [5, 10],
        "supported_aspect_ratios": ["16:9", "9:16", "1:1"],
        "recommended": False,
        "new_model": True,
        "max_visual_dna": 3,
        "summary": "Faster, cheaper Seedance.",
    },
    {
        "identifier": "fal-ai/kling-video/v3/pro/text-to-video",
        "name": "Kling 3.0 Pro",
        "provider": "Kuaishou",
        "types": ["text_to_video"],
        "credit": 18,
        "supported_durations": [5, 10],
        "supported_aspect_ratios": ["16:9", "9:16", "1:1"],
        "supported_resolutions": ["720p", "1080p"],
        "resolution_multipliers": {"720p": 1, "1080p": 1.25},
        "recommended": True,
        "new_model": False,
        "max_visual_dna": 3,
    },
    {
        "identifier": "fal-ai/kling-video/v3/pro/image-to-video",
        "name": "Kling 3.0 Pro (image)",
        "provider": "Kuaishou",
        "types": ["img_to_video"],
        "credit": 18,
        "supported_durations": [5, 10],
        "supported_aspect_ratios": ["16:9", "9:16", "1:1"],
        "recommended": False,
        "new_model": False,
    },
    {
        "identifier": "seedance-2-img-to-video",
        "name": "Seedance 2.0 (image)",
        "provider": "ByteDance",
        "types": ["img_to_video"],
        "credit": 30,
        "supported_durations": [5, 10],
        "supported_aspect_ratios": ["16:9", "9:16", "1:1"],
        "recommended": False,
        "new_model": False,
    },
    {
        "identifier": "veo3",
        "name": "Veo 3",
        "provider": "Google",
        "types": ["text_to_video"],
        "credit": 40,
        "supported_durations": [4, 6, 8],
        "supported_aspect_ratios": ["16:9", "9:16"],
        "sound_generation_type": "native",
        "sound_enabled_by_default": True,
        "sound_credit_multiplier": 1.5,
        "recommended": False,
        "new_model": False,
    },
    {
        "identifier": "minimax-h3",
        "name": "Hailuo 3",
        "provider": "MiniMax",
        "types": ["text_to_video", "img_to_video"],
        "credit": 10,
        "supported_durations": [6, 10],
        "supported_aspect_ratios": ["16:9", "9:16", "1:1"],
        "supported_resolutions": ["768P", "1080P"],
        "resolution_multipliers": {"768P": 1, "1080P": 2},
        "recommended": False,
        "new_model": False,
        "max_visual_dna": 20,
    },
    # The routes of kolbo-api.md section 13, each with the caps its catalog entry states.
    {
        "identifier": "flux-2-pro",
        "name": "FLUX.2 Pro",
        "provider": "Black Forest Labs",
        "types": ["text_to_img", "image_editing"],
        "credit": 4,  # per image
        "supported_aspect_ratios": ["1:1", "16:9", "9:16", "4:3", "3:4"],
        "supported_resolutions": ["1K", "2K", "4K"],
        "resolution_multipliers": {"1K": 1, "2K": 1.5, "4K": 2},
        "images_per_request": 4,
        "max_reference_images": 4,
        "max_visual_dna": 3,
        "recommended": True,
        "new_model": False,
    },
    {
        "identifier": "nano-banana",
        "name": "Nano Banana",
        "provider": "Google",
        "types": ["text_to_img", "image_editing"],
        "credit": 3,
        "supported_aspect_ratios": ["1:1", "16:9", "9:16"],
        "images_per_request": 2,
        "max_reference_images": 2,
        "recommended": False,
        "new_model": True,
    },
    {
        "identifier": "kling-o1-first-last-frame",
        "name": "Kling O1 (first and last frame)",
        "provider": "Kuaishou",
        "types": ["firstlastgenerations"],
        "credit": 20,
        "supported_durations": [5, 10],
        "supported_aspect_ratios": ["16:9", "9:16", "1:1"],
        "recommended": True,
        "new_model": False,
    },
    {
        "identifier": "kling-o3-elements",
        "name": "Kling O3 Elements",
        "provider": "Kuaishou",
        "types": ["elements"],
        "credit": 25,
        "supported_durations": [5, 10],
        "supported_aspect_ratios": ["16:9", "9:16", "1:1"],
        "elements_max_images": 4,
        "elements_max_videos": 1,
        "elements_max_audio": 1,
        "supports_keyframes": True,
        "max_keyframes": 3,
        "recommended": True,
        "new_model": True,
    },
    {
        "identifier": "runway-aleph",
        "name": "Runway Aleph",
        "provider": "Runway",
        "types": ["video_to_video"],
        "credit": 20,
        "min_output_duration": 1,
        "max_output_duration": 10,
        "supported_aspect_ratios": ["16:9", "9:16", "1:1"],
        "max_images": 1,
        "max_videos": 1,
        "max_elements": 2,
        "recommended": True,
        "new_model": False,
    },
    {
        "identifier": "sync-lipsync-2",
        "name": "Sync Lipsync 2",
        "provider": "Sync Labs",
        "types": ["lipsync-image", "lipsync-video"],
        "credit": 6,
        "recommended": True,
        "new_model": False,
    },
]


class Refused(Exception):
    """The catalog refuses a request: Kolbo's error `code` and `message` for the 400."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def listing(wanted: str | None) -> list[dict[str, Any]]:
    """The models ``GET /models?type=wanted`` lists (copies)."""
    return [dict(m) for m in CATALOG if matches_type(m, wanted)]


def model_for(body: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    """The catalog entry a generation request names (None: Smart Select picks).

    Raises:
        Refused: no such model, one that cannot do `kind`, or too many Visual DNA ids.
    """
    model_id = body.get("model")
    model = None
    if model_id is not None:
        model = next((m for m in CATALOG if m["identifier"] == model_id), None)
        if model is None:
            raise Refused("MODEL_NOT_FOUND", "Model not found")
        if kind not in model["types"]:
            raise Refused("WRONG_MODEL_TYPE", f"Model {model_id} cannot do {kind}")
    dna = body.get("visual_dna_ids") or []
    max_dna = (model or {}).get("max_visual_dna", 3)
    if isinstance(dna, list) and len(dna) > max_dna:
        raise Refused("TOO_MANY_VISUAL_DNA", f"At most {max_dna} Visual DNA ids")
    return model


def matches_type(model: dict[str, Any], wanted: str | None) -> bool:
    """Whether `model` is listed for ``?type=wanted`` (an SDK alias or a raw type)."""
    if wanted is None:
        return True
    return any(kind in model["types"] for kind in _ALIASES.get(wanted, (wanted,)))


def price(model: Mapping[str, Any] | None, body: Mapping[str, Any]) -> float:
    """Credits charged at submit: credit/s x duration x resolution (x sound) multiplier."""
    durations = (model or {}).get("supported_durations") or []
    duration = snap(body.get("duration", 5), durations)
    credit = float((model or {}).get("credit", SMART_SELECT_CREDIT))
    multiplier = float(
        (model or {}).get("resolution_multipliers", {}).get(body.get("resolution"), 1.0)
    )
    if body.get("sound_enabled") and (model or {}).get("sound_credit_multiplier"):
        multiplier *= float(model["sound_credit_multiplier"])  # type: ignore[index]
    return credit * duration * multiplier


def snap(value: Any, allowed: list[Any]) -> float:
    """A duration snapped to the closest of `allowed` (5 s when not a positive number)."""
    number = (
        float(value)
        if isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
        else 5.0
    )
    if not allowed:
        return number
    return float(min(allowed, key=lambda d: abs(float(d) - number)))


def snap_ratio(value: Any, allowed: list[str]) -> str:
    """An aspect ratio snapped to the closest of `allowed` by shape."""
    # "Closest" by shape: compare log(width/height), so 21:9 snaps to 16:9, 4:5 to 1:1.
    wanted = _ratio(value)
    if value in allowed or wanted is None:
        return str(value) if value in allowed else allowed[0]
    return min(allowed, key=lambda r: abs(math.log((_ratio(r) or 1.0) / wanted)))


def _ratio(value: Any) -> float | None:
    width, sep, height = str(value).partition(":")
    try:
        ratio = float(width) / float(height) if sep else None
    except (ValueError, ZeroDivisionError):
        return None
    return ratio if ratio is not None and math.isfinite(ratio) and ratio > 0 else None
