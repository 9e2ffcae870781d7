"""The simulated media upload route and the elements trust gate (kolbo-api.md §13).

``POST /api/v1/media/upload`` takes one ``file`` part (and optional ``description``,
``project_id``), keeps the file on the CDN, and answers ``{success, media: {id, url, ...}}``.
The trust gate refuses an elements reference the CDN does not serve for the caller (an upload
of the caller's key, or a result of one of its generations) with 400
``UNTRUSTED_REFERENCE_MEDIA_URL``: the request is read, nothing is charged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._catalog import Refused
from ._cdn import CDN
from ._forms import is_form, parse_form
from ._lifecycle import GenerationRecord
from ._records import SimRequest, SimResponse, json_answer

__all__ = ["check_trusted", "upload_answer"]

_REFERENCES = ("reference_images", "reference_videos", "reference_audio_urls")


def check_trusted(
    cdn: CDN,
    path: str,
    body: Mapping[str, Any],
    key: str,
    generations: Mapping[str, GenerationRecord],
) -> None:
    """Refuse (`Refused`) an elements body holding a reference `cdn` does not serve for `key`
    (other routes have no trust gate)."""
    if path != "/api/v1/generate/elements":
        return
    for field in _REFERENCES:
        urls = body.get(field)
        for url in urls if isinstance(urls, list) else [urls] if urls else []:
            if not cdn.owned_by(url, key, generations):
                raise Refused(
                    "UNTRUSTED_REFERENCE_MEDIA_URL",
                    f"{field} must be media hosted by Kolbo for this account; upload it with "
                    "/v1/media/upload first",
                )


def upload_answer(cdn: CDN, request: SimRequest, key: str) -> SimResponse:
    """Serve one ``POST /api/v1/media/upload``."""
    content_type = request.headers.get("content-type")
    try:
        if content_type is None or not is_form(content_type):
            raise Refused("MISSING_FIELDS", "No file uploaded")
        fields, files = parse_form(content_type, request.body)
        unexpected = [part for part in files if part[0] != "file"]
        if unexpected:
            raise Refused("LIMIT_UNEXPECTED_FILE", f"Unexpected field: {unexpected[0][0]}")
        if len(files) != 1:
            raise Refused("MISSING_FIELDS", "No file uploaded")
    except Refused as refused:
        return json_answer(400, {"success": False, "error": refused.message,
                                 "code": refused.code})  # fmt: skip
    _, filename, kind, data = files[0]
    url = cdn.store(key, files[0])
    text = dict(fields)
    media = {
        "id": url.rsplit("/", 2)[-2], "url": url, "filename": filename,
        "type": kind.partition("/")[0], "mime_type": kind, "size": len(data),
        "description": text.get("description"), "project_id": text.get("project_id"),
    }  # fmt: skip
    return json_answer(200, {"success": True, "media": media})
