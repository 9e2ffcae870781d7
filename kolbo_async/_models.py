"""What the API answers, as frozen attrs classes.

Every field the server sends is optional or defaulted, so a field Kolbo drops or nulls never
crashes structuring; `raw` keeps the server's mapping, so a field Kolbo adds is reachable
before the SDK knows it. Structuring lives in `_convert.py`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from ._lazy import public

__all__ = [
    "TERMINAL_STATES",
    "Credits",
    "Failure",
    "GenerationStatus",
    "ImageResult",
    "Media",
    "Model",
    "PER_IMAGE_TYPES",
    "Submission",
    "VideoResult",
]

#: States after which a generation never changes again. Anything else, including a state
#: string Kolbo adds later, is treated as still running.
TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})

_EMPTY: Mapping[str, Any] = {}


@attrs.frozen
class Submission:
    """The answer to a generation POST.

    Attributes:
        generation_id: the id to poll, cancel or re-attach with.
        type: ``"video"``.
        model: the model used (``"auto"`` for Smart Select).
        credits_charged: credits taken at submit time.
        poll_url: the server's suggested status path (kept as data, never followed).
        poll_interval_hint: seconds the server asks between polls.
        session_id: the session Kolbo filed the generation under; pass it as ``session_id`` to
            a later call to keep a series together.
    """

    generation_id: str
    type: str | None = None
    model: str | None = None
    credits_charged: float | None = None
    poll_url: str | None = None
    poll_interval_hint: float | None = None
    session_id: str | None = None
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, repr=False, eq=False)


@attrs.frozen
class Failure:
    """Why a generation failed, as the server categorised it.

    Attributes:
        category: e.g. ``"content_policy"``, ``"auth"``.
        code: e.g. ``"CONTENT_FLAGGED_SENSITIVE"``.
        retryable: whether submitting again may succeed.
        provider: the upstream model provider, if named.
    """

    message: str | None = None
    category: str | None = None
    code: str | None = None
    retryable: bool | None = None
    severity: str | None = None
    provider: str | None = None


@attrs.frozen
class VideoResult:
    """The output of a completed generation.

    Attributes:
        urls: CDN URLs of the videos (empty when a content filter removed them).
        url: the first URL, or None.
    """

    urls: tuple[str, ...] = ()
    thumbnail_url: str | None = None
    duration: float | None = None
    aspect_ratio: str | None = None
    model: str | None = None
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, repr=False, eq=False)

    @property
    def url(self) -> str | None:
        """The first video URL, or None when there is none."""
        return self.urls[0] if self.urls else None


@attrs.frozen(repr=False)
class ImageResult(VideoResult):
    """The output of a completed image generation (`images.generate`, `images.edit`).

    Its status says ``type: "image"``. The video-only fields (`thumbnail_url`, `duration`,
    `aspect_ratio`) stay None; `raw` keeps the server's mapping (``prompt_used``, ...).

    Attributes:
        urls: CDN URLs of the images, one per image asked for (empty when filtered).
        url: the first URL, or None.
        model: the model used.
    """

    def __repr__(self) -> str:
        return f"ImageResult(urls={self.urls!r}, model={self.model!r})"


@attrs.frozen
class GenerationStatus:
    """One answer of the status endpoint.

    Attributes:
        generation_id: the generation's id.
        state: ``pending``, ``processing``, ``completed``, ``failed``, ``cancelled``, or a
            state Kolbo adds later (kept as is, and treated as still running).
        progress: percent, 0-100.
        result: the `VideoResult` once completed.
        error: the server's error text for a failed generation.
        failure: the structured reason for a failed generation.
        credits_used: the final credits, once known.
        raw: the server's mapping, for fields the SDK does not model yet.
    """

    generation_id: str
    state: str
    progress: int = 0
    result: VideoResult | None = None
    error: str | None = None
    failure: Failure | None = None
    credits_used: float | None = None
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        # An image route's status says so (``type: "image"``): its result is an ImageResult.
        result = self.result
        if type(result) is VideoResult and self.raw.get("type") == "image":
            image = ImageResult(urls=result.urls, model=result.model, raw=result.raw)
            object.__setattr__(self, "result", image)

    @property
    def done(self) -> bool:
        """True once the state is terminal (completed, failed or cancelled)."""
        return self.state in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        """True when completed with at least one video URL."""
        return self.state == "completed" and self.result is not None and bool(self.result.urls)

    @property
    def failed(self) -> bool:
        """True when done without a usable video (failed, cancelled, or filtered)."""
        return self.done and not self.succeeded


#: Catalog types priced per image: their `credit` is per image, not per second of video.
PER_IMAGE_TYPES = frozenset({"text_to_img", "image_editing"})


@attrs.frozen
class Model:
    """One entry of the model catalog.

    `credit` is per second of video, or per image for an image model (`per_image`: its
    catalog types are ``text_to_img`` / ``image_editing``); use `cost()` rather than
    multiplying by hand, since it applies the catalog's resolution multipliers.

    The caps Kolbo's catalog states per model are attributes where the SDK names them
    (`max_reference_images`, `max_visual_dna`, `elements_max_images`, `elements_max_videos`,
    `elements_max_audio`, `max_keyframes`); every other one (``images_per_request``,
    ``supports_keyframes``, ``max_images``, ``max_videos``, ``max_elements``,
    ``min_output_duration``, ...) is in `raw`. None means the catalog does not say.

    Example:
        >>> m = Model(identifier="kling", credit=18, resolution_multipliers={"1080p": 1.5})
        >>> m.cost(5), m.cost(5, resolution="1080p")
        (90.0, 135.0)
        >>> flux = Model(identifier="flux", types=("text_to_img",), credit=4)
        >>> flux.cost(num_images=3)
        12.0
    """

    identifier: str
    name: str | None = None
    provider: str | None = None
    types: tuple[str, ...] = ()
    credit: float | None = None
    supported_durations: tuple[float, ...] | None = None
    supported_aspect_ratios: tuple[str, ...] | None = None
    supported_resolutions: tuple[str, ...] | None = None
    resolution_multipliers: Mapping[str, float] = attrs.field(factory=dict)
    recommended: bool = False
    new_model: bool = False
    summary: str | None = None
    max_visual_dna: int | None = None
    max_reference_images: int | None = None
    #: Elements route: how many reference images, videos and audio tracks the model takes.
    elements_max_images: int | None = None
    elements_max_videos: int | None = None
    elements_max_audio: int | None = None
    #: Elements route: how many keyframes the model takes.
    max_keyframes: int | None = None
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, repr=False, eq=False)

    @property
    def per_image(self) -> bool:
        """True when `credit` is per image: every catalog type of the model makes images."""
        return bool(self.types) and all(t in PER_IMAGE_TYPES for t in self.types)

    def cost(
        self,
        duration: float | None = None,
        resolution: str | None = None,
        *,
        num_images: int | None = None,
    ) -> float | None:
        """Estimated credits for one request, or None if the price is unknown.

        A video model: `duration` seconds x `credit`. An image model (`per_image`):
        `num_images` (1 when not given) x `credit`, whatever `duration` says. Either way
        ``resolution_multipliers[resolution]`` applies when the catalog lists one (a
        resolution it does not list costs the base rate, as the server charges).
        """
        if self.credit is None:
            return None
        if self.per_image:
            count = 1 if num_images is None else num_images
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                return None
            amount = float(count)
        elif duration is None or not math.isfinite(duration) or duration <= 0:
            return None
        else:
            amount = float(duration)
        multiplier = 1.0
        if resolution is not None:
            multiplier = float(self.resolution_multipliers.get(resolution, 1.0))
        return float(self.credit) * amount * multiplier


@attrs.frozen
class Credits:
    """The account's credit balance (1 credit = US$0.01)."""

    total: float | None = None
    plan_credits: float | None = None
    credit_pack: float | None = None
    redemption: float | None = None
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, repr=False, eq=False)


@attrs.frozen
class Media:
    """A file in Kolbo's media library, as `client.media.upload` returns it.

    Attributes:
        url: where Kolbo serves it; pass it to any generation call.
        raw: the server's ``media`` mapping (``id``, ``type``, ... as Kolbo sends them).
    """

    url: str
    raw: Mapping[str, Any] = attrs.field(repr=False, eq=False)


public(Credits, Failure, GenerationStatus, ImageResult, Media, Model, Submission, VideoResult)
