"""The video routes beyond text and image to video, one declaration each (kolbo-api.md §13):
`FramesToVideo`, `VideoToVideo`, `Lipsync` and `ElementsToVideo`.

Parameters are named as the calls take them and sent under Kolbo's names (``first_frame`` as
``first_frame_url``, ``images`` as ``reference_images``, ``face`` as ``source_url``, ...);
model-specific extras go in `extra_body`. A medium is an http(s) URL (sent as a URL) or a
local file, sent as Kolbo's own client sends it (§13): the parts these routes take (both
frames as two ``files`` parts; each elements file a ``files`` part; the source video a
``files`` part; the lip-sync face an ``image`` or ``video`` part and the sound an ``audio``
part), anything else uploaded first through ``media.upload`` and sent as its URL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from ._lazy import public
from ._local_files import ELEMENTS_MAX_BYTES, FRAME_MAX_BYTES, LocalFile, Medium, media_or_none
from ._requests import (
    Route,
    VideoOptions,
    check_each,
    check_flag,
    check_media_item,
    check_medium,
    check_text,
    checked,
    route_order,
    tuple_or_none,
)
from ._route_checks import check_box, check_count, check_keyframes, keyframes_tuple, media_tuple

__all__ = [
    "ELEMENTS_PATH",
    "FRAMES_TO_VIDEO_PATH",
    "LIPSYNC_PATH",
    "VIDEO_TO_VIDEO_PATH",
    "ElementsToVideo",
    "FramesToVideo",
    "Lipsync",
    "VideoToVideo",
]

FRAMES_TO_VIDEO_PATH = "/api/v1/generate/first-last-frame"
ELEMENTS_PATH = "/api/v1/generate/elements"
VIDEO_TO_VIDEO_PATH = "/api/v1/generate/video-from-video"
LIPSYNC_PATH = "/api/v1/generate/lipsync"

_URLS = checked(check_each(check_media_item))
_FRAMES = ("first_frame_url", "last_frame_url")
_FRAME = check_medium(FRAME_MAX_BYTES)
_ELEMENT = check_each(check_medium(ELEMENTS_MAX_BYTES))


def _face_part(file: LocalFile) -> str:
    # Kolbo's lip-sync route takes the face as an `image` or a `video` part, by its kind.
    return "video" if file.kind == "video" else "image"


@attrs.frozen(repr=False, field_transformer=route_order)
class FramesToVideo(VideoOptions):
    """One first-and-last-frame request: the arguments of `client.videos.from_frames`.

    ``POST /api/v1/generate/first-last-frame``: the video moves from `first_frame` to
    `last_frame` (both required; http(s) URLs, or local files of up to 10 MiB: two local
    frames go as two ``files`` parts, first then last, and one local frame beside a URL is
    uploaded first); `prompt` is optional, and without `aspect_ratio` Kolbo takes the first
    frame's.

    Example:
        >>> FramesToVideo("https://example.com/a.png", "https://example.com/b.png")
        FramesToVideo(first_frame='https://example.com/a.png', last_frame='https://example.com/b.png')
    """

    _path: ClassVar[str] = FRAMES_TO_VIDEO_PATH
    first_frame: Medium = attrs.field(
        metadata=checked(_FRAME, send_as="first_frame_url", part="files", together=_FRAMES)
    )
    last_frame: Medium = attrs.field(
        metadata=checked(_FRAME, send_as="last_frame_url", part="files", together=_FRAMES)
    )
    prompt: str | None = attrs.field(default=None, kw_only=True, metadata=checked(check_text))


@attrs.frozen(repr=False, field_transformer=route_order)
class VideoToVideo(VideoOptions):
    """One video-to-video request: the arguments of `client.videos.from_video`.

    ``POST /api/v1/generate/video-from-video``: restyle or extend `video` (an http(s) URL,
    or a local file sent as a ``files`` part); `prompt` is optional for some models.
    Model-specific fields (``preset``, ``target_fps``, ``srt_content``, ``elements``, ...) go
    in `extra_body`.
    """

    _path: ClassVar[str] = VIDEO_TO_VIDEO_PATH
    video: Medium = attrs.field(
        metadata=checked(check_media_item, send_as="video_url", part="files")
    )
    prompt: str | None = attrs.field(default=None, kw_only=True, metadata=checked(check_text))
    reference_images: Sequence[Medium] | None = attrs.field(
        default=None, kw_only=True, converter=media_or_none, metadata=_URLS
    )
    reference_videos: Sequence[Medium] | None = attrs.field(
        default=None, kw_only=True, converter=media_or_none, metadata=_URLS
    )


@attrs.frozen(repr=False, field_transformer=route_order)
class Lipsync(Route):
    """One lip-sync request: the arguments of `client.videos.lipsync`.

    ``POST /api/v1/generate/lipsync``: `face` (an image or a video of a face, sent as
    ``source_url``, or a local file sent as an ``image`` or ``video`` part) speaks `audio`
    (``audio_url``, or a local file sent as an ``audio`` part). `bounding_box_target` picks a
    face as ``[x, y, width, height]``; model-specific fields (``sync_mode``, ``emotion``, ...) go in
    `extra_body`.
    """

    _path: ClassVar[str] = LIPSYNC_PATH
    face: Medium = attrs.field(
        metadata=checked(check_media_item, send_as="source_url", part=_face_part)
    )
    audio: Medium = attrs.field(
        metadata=checked(check_media_item, send_as="audio_url", part="audio")
    )
    prompt: str | None = attrs.field(default=None, kw_only=True, metadata=checked(check_text))
    model: str | None = attrs.field(default=None, kw_only=True, metadata=checked(check_text))
    bounding_box_target: Sequence[float] | None = attrs.field(
        default=None, kw_only=True, converter=tuple_or_none, metadata=checked(check_box)
    )
    project_id: str | None = attrs.field(default=None, kw_only=True, metadata=checked(check_text))
    session_id: str | None = attrs.field(default=None, kw_only=True, metadata=checked(check_text))
    extra_body: Mapping[str, Any] | None = attrs.field(default=None, kw_only=True, hash=False)


@attrs.frozen(repr=False, field_transformer=route_order)
class ElementsToVideo(VideoOptions):
    """One elements request: the arguments of `client.videos.from_elements`.

    ``POST /api/v1/generate/elements``: one scene from `prompt` and references, sent as
    ``reference_images``, ``reference_videos`` and ``reference_audio_urls`` (http(s) URLs, or
    local files of up to 200 MiB, each sent as a ``files`` part; the model caps how many).
    `keyframes` pin images at times: ``{"image_url": ..., "timestamp_seconds": ...}``
    mappings or ``(image, seconds)`` pairs, seconds finite and >= 0 (a local keyframe image
    is uploaded first). Empty lists are not sent.

    Example:
        >>> ElementsToVideo("A product turntable", images=["https://example.com/p.png"])
        ElementsToVideo(prompt='A product turntable', images=('https://example.com/p.png',))
    """

    _path: ClassVar[str] = ELEMENTS_PATH
    prompt: str = attrs.field(metadata=checked(check_text))
    images: Sequence[Medium] = attrs.field(
        default=(), kw_only=True, converter=media_tuple,
        metadata=checked(_ELEMENT, send_as="reference_images", part="files", repeat=True),
    )  # fmt: skip
    videos: Sequence[Medium] = attrs.field(
        default=(), kw_only=True, converter=media_tuple,
        metadata=checked(_ELEMENT, send_as="reference_videos", part="files"),
    )  # fmt: skip
    audio: Sequence[Medium] = attrs.field(
        default=(), kw_only=True, converter=media_tuple,
        metadata=checked(_ELEMENT, send_as="reference_audio_urls", part="files"),
    )  # fmt: skip
    keyframes: Sequence[Any] = attrs.field(
        default=(), kw_only=True, converter=keyframes_tuple, metadata=checked(check_keyframes)
    )
    motion: str | None = attrs.field(default=None, kw_only=True, metadata=checked(check_text))
    preset_id: str | None = attrs.field(default=None, kw_only=True, metadata=checked(check_text))
    multi_shots: bool | None = attrs.field(default=None, kw_only=True, metadata=checked(check_flag))
    multi_shot_count: int | None = attrs.field(
        default=None, kw_only=True, metadata=checked(check_count)
    )
    session_name: str | None = attrs.field(default=None, kw_only=True, metadata=checked(check_text))


public(ElementsToVideo, FramesToVideo, Lipsync, VideoToVideo)
