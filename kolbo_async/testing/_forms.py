"""Multipart bodies as the simulated Kolbo reads them (kolbo-api.md §13).

Kolbo's routes that take files read ``multipart/form-data`` with multer: each route names the
file parts it takes (`FILE_PARTS`), and a part under any other name is refused with multer's
400 ``LIMIT_UNEXPECTED_FILE`` ("Unexpected field"), before any charge. Text fields arrive as
strings: arrays and objects as JSON strings, booleans and numbers as their text, and the
elements route's ``reference_images`` as repeated fields. `form_body` turns a form into the
body the route's JSON handler would have read, each stored file replaced by the URL the
simulator's CDN serves it at (`store(name, content type, bytes) -> url`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from ._catalog import Refused

__all__ = ["FILE_PARTS", "MEDIA_UPLOAD_PATH", "Part", "form_body", "is_form", "parse_form"]

MEDIA_UPLOAD_PATH = "/api/v1/media/upload"
#: The file parts each route takes (multer's ``.array``/``.fields``); other routes take none.
FILE_PARTS: dict[str, frozenset[str]] = {
    "/api/v1/generate/first-last-frame": frozenset({"files"}),
    "/api/v1/generate/elements": frozenset({"files"}),
    "/api/v1/generate/video-from-video": frozenset({"files"}),
    "/api/v1/generate/lipsync": frozenset({"image", "video", "audio"}),
    MEDIA_UPLOAD_PATH: frozenset({"file"}),
}
#: Text fields read as JSON (arrays, objects) and as numbers or booleans.
_JSON = frozenset({
    "visual_dna_ids", "keyframes", "reference_videos", "reference_audio_urls", "elements",
    "bounding_box_target", "vocabulary", "customization", "active_speaker_detection",
    "multi_shots",
})  # fmt: skip
_NUMBERS = frozenset({"duration", "num_images", "multi_shot_count", "temperature",
                      "target_fps", "slowdown_factor"})  # fmt: skip
_FLAGS = frozenset({"enhance_prompt", "sound_enabled", "skip_color_palette",
                    "enable_web_search", "occlusion_detection_enabled"})  # fmt: skip

#: One file part: (part name, file name, content type, bytes).
Part = tuple[str, str, str, bytes]


def is_form(content_type: str | None) -> bool:
    """Whether a request's Content-Type is ``multipart/form-data``."""
    return (content_type or "").lower().startswith("multipart/form-data")


def parse_form(content_type: str, body: bytes) -> tuple[list[tuple[str, str]], list[Part]]:
    """A multipart body's text fields and file parts, in order.

    Raises:
        Refused: a body that is not well-formed multipart (400 ``INVALID_MULTIPART``).
    """
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart() or message.defects:
        raise Refused("INVALID_MULTIPART", "Malformed multipart body")
    fields: list[tuple[str, str]] = []
    files: list[Part] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise Refused("INVALID_MULTIPART", "A multipart part without a name")
        data = part.get_payload(decode=True)
        data = data if isinstance(data, bytes) else b""
        filename = part.get_filename()
        if filename is None:
            fields.append((name, data.decode("utf-8")))
        else:
            files.append((name, filename, part.get_content_type(), data))
    return fields, files


def form_body(
    path: str, fields: list[tuple[str, str]], files: list[Part], store: Callable[[Part], str]
) -> dict[str, Any]:
    """The JSON body the route at `path` reads from a form, files stored through `store`.

    Raises:
        Refused: a file part the route does not take (multer's "Unexpected field"), or a
            field that is not what Kolbo parses it as.
    """
    allowed = FILE_PARTS.get(path, frozenset())
    for name, *_ in files:
        if name not in allowed:
            raise Refused("LIMIT_UNEXPECTED_FILE", f"Unexpected field: {name}")
    body: dict[str, Any] = {}
    for name, text in fields:
        if path.endswith("/elements") and name == "reference_images":
            body.setdefault(name, []).append(text)  # repeated fields
        elif name in _JSON:
            try:
                body[name] = json.loads(text)
            except ValueError:
                raise Refused("INVALID_FIELD", f"{name} must be a JSON value") from None
        elif name in _NUMBERS:
            try:
                body[name] = json.loads(text)
            except ValueError:
                raise Refused("INVALID_FIELD", f"{name} must be a number") from None
        elif name in _FLAGS:
            body[name] = text == "true"
        else:
            body[name] = text
    _place(path, body, [(part, store(part)) for part in files])
    return body


def _place(path: str, body: dict[str, Any], stored: list[tuple[Part, str]]) -> None:
    # Where each route's controller puts its uploaded files.
    if path.endswith("/first-last-frame") and stored:
        if len(stored) != 2:
            raise Refused("MISSING_FIELDS", "Provide both frames: two files, first then last")
        body["first_frame_url"], body["last_frame_url"] = (url for _, url in stored)
    elif path.endswith("/video-from-video") and stored:
        body["video_url"] = stored[0][1]
    elif path.endswith("/elements"):
        lists = {"image": "reference_images", "video": "reference_videos",
                 "audio": "reference_audio_urls"}  # fmt: skip
        for (_, _, kind, _), url in stored:  # bucketed by mimetype
            key = lists.get(kind.partition("/")[0], "reference_images")
            body.setdefault(key, []).append(url)
    elif path.endswith("/lipsync"):
        for (name, *_), url in stored:
            body["audio_url" if name == "audio" else "source_url"] = url
