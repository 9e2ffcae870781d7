"""``client.media``: uploads to Kolbo's media library, and what a route's local files need.

``POST /api/v1/media/upload`` takes one ``file`` part (and optional ``description``,
``project_id``) and answers ``{media: {url, ...}}`` (Kolbo's client also reads a top-level
``url``). It counts against the generation bucket (kolbo-api.md §13), so it is paced and
retried as a generation POST is: only when the connection was never made, or after a 429
(its ``Retry-After`` honoured), the file re-read from disk each time.

`prepare` readies a generation's body that holds local files: the ones its route takes no
part for are uploaded first (their URLs take their place), the rest become a multipart form.
`rehost` is the elements trust gate's answer: each remote reference downloaded (streamed to a
temporary file) and uploaded, so Kolbo hosts it for the caller.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import httpx

from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    BadRequestError,
    InvalidRequestError,
    KolboError,
    nothing_sent,
)
from ._lazy import DeferredModule
from ._pipeline import Call, Pipeline

if TYPE_CHECKING:
    import kolbo_async

    from . import _local_files, _models, _requests, _routes_video
    from ._local_files import LocalFile, OpenedFile
    from ._models import Media
    from ._multipart import Form
    from ._transfers import Transfers
else:  # loaded on first use: a program that never sends a file or a route skips them
    _local_files = DeferredModule("_local_files")
    _models = DeferredModule("_models")
    _requests = DeferredModule("_requests")
    _routes_video = DeferredModule("_routes_video")
    kolbo_async = DeferredModule("")  # public annotations: `typing.get_type_hints`

__all__ = ["MEDIA_UPLOAD_PATH", "UNTRUSTED", "AsyncMediaLibrary", "MediaSender"]

logger = logging.getLogger("kolbo_async")

T = TypeVar("T")

MEDIA_UPLOAD_PATH = "/api/v1/media/upload"
#: The elements route's refusal of remote references Kolbo does not host for the caller.
UNTRUSTED = "UNTRUSTED_REFERENCE_MEDIA_URL"
#: The elements fields whose remote references the trust gate re-hosts, and the extension a
#: downloaded file gets when its URL names none (Kolbo's client's defaults).
_REHOSTED = {"reference_images": ".png", "reference_videos": ".mp4", "reference_audio_urls": ".mp3"}
#: The argument each of them is given as (errors name it).
_ARGUMENTS = {"reference_images": "images", "reference_videos": "videos",
              "reference_audio_urls": "audio"}  # fmt: skip


class AsyncMediaLibrary:
    """``client.media``: upload files to Kolbo's media library."""

    __slots__ = ("_sender",)

    def __init__(self, pipeline: Pipeline, transfers: Transfers | None) -> None:
        self._sender = MediaSender(pipeline, transfers)

    async def upload(
        self,
        file: str | os.PathLike[str] | BinaryIO,
        *,
        description: str | None = None,
        project_id: str | None = None,
    ) -> kolbo_async.Media:
        """Upload `file` to the media library and return its `Media` (its Kolbo URL).

        `file` is a local path (streamed from disk, at most 500 MiB), an open binary file
        (an ``open(path, "rb")``, a `BytesIO`: sent from where it stands, seeked back there
        for a retry) or an http(s) URL (downloaded to a temporary file, then uploaded: Kolbo
        then hosts a copy). The upload
        counts against the generation rate limit; a 429 is waited out and the file sent
        again, as Kolbo's own client does.

        Raises:
            InvalidRequestError: a missing, unreadable or oversized file, before anything
                is sent; a URL its host would not serve (a 403 of an expired signed URL
                too: the host's answer, not Kolbo's), named without its query.
            SubmissionOutcomeUnknownError: the answer was lost after the file went out (it
                may be in the library).

        Example:
            >>> media = await client.media.upload("shots/front.png")        # doctest: +SKIP
            >>> gen = await client.videos.from_image(                         # doctest: +SKIP
            ...     media.url, prompt="Slow zoom in")
        """
        fields = _fields(description, project_id)
        if isinstance(file, str) and _local_files.is_url(file.strip()):
            return await self._sender.rehost_url("file", file.strip(), ".bin", fields)
        if isinstance(file, (str, os.PathLike)):
            return await self._sender.send(_local_files.local_file("file", file), fields)
        return await self._sender.send(_local_files.OpenedFile(file, field="file"), fields)


class MediaSender:
    """What the routes' calls need for local files and the trust gate: uploads (a local file
    or a remote one re-hosted), and a generation POST sent as Kolbo takes it (`submit`)."""

    __slots__ = ("_pipeline", "_transfers")

    def __init__(self, pipeline: Pipeline, transfers: Transfers | None) -> None:
        self._pipeline = pipeline
        self._transfers = transfers

    async def send(self, file: LocalFile | OpenedFile, fields: dict[str, str]) -> Media:
        from ._multipart import media_form

        form = media_form(file, fields)
        return await self._pipeline.call(
            Call("POST", MEDIA_UPLOAD_PATH, form=form, generation=True), _parse_media
        )

    async def rehost_url(
        self, field: str, url: str, extension: str, fields: dict[str, str]
    ) -> Media:
        # Streamed to a temporary file, never held whole; the file goes once it is sent.
        # (Imported here: only a re-host needs them.)
        import shutil
        import tempfile

        from ._download import download_to
        from ._requests import check_url

        check_url(field, url)
        name = posixpath.basename(httpx.URL(url).path) or "upload"
        if not os.path.splitext(name)[1]:
            name += extension
        folder = tempfile.mkdtemp(prefix="kolbo-rehost-")
        try:
            target = Path(folder) / name
            transfers = self._transfers
            if transfers is None:  # a raw-response copy: through the API's own client
                from ._transfers import Transfers

                transfers = Transfers(limit=2, http_client=self._pipeline.http)
            try:
                await download_to(
                    self._pipeline, transfers, url, target,
                    overwrite=True, on_progress=None, deadline=None,
                )  # fmt: skip
            except (APIStatusError, APIResponseValidationError, APIConnectionError) as exc:
                # The reference's host answered, not Kolbo: its 401/403 (an expired signed
                # URL) is no account error, its 5xx no fault of Kolbo's API.
                raise _unfetchable(field, url, exc) from exc
            return await self.send(_local_files.local_file(field, target), fields)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def submit(
        self, call: Call, parse: Callable[[dict[str, Any]], T], *, admitted: bool = False
    ) -> T:
        """Send a generation POST (`call`, its JSON body a route's) as Kolbo takes it.

        Its local files are uploaded first or sent as parts (`prepare`). When the elements
        route refuses remote references with ``UNTRUSTED_REFERENCE_MEDIA_URL`` (its trust
        gate, before any charge), each is re-hosted through ``media.upload`` and the POST
        sent once more, as Kolbo's client does. An error before the generation POST
        leaves (an upload, a reference that cannot be fetched) is marked `nothing_sent`:
        a batch may send the item again, as Kolbo cannot have charged for it.
        """
        path, body = call.path, call.json
        assert body is not None  # a route's POST has a body
        pipeline = self._pipeline
        if _local_files.local_files(body):
            try:
                body, call.form = await self.prepare(path, dict(body))
            except KolboError as error:  # an upload failed: the generation POST never left
                nothing_sent(error)
                raise
            call.json = None if call.form else body
        try:
            return await pipeline.call(call, parse, admitted=admitted)
        except BadRequestError as refused:
            if refused.code != UNTRUSTED or path != _routes_video.ELEMENTS_PATH:
                raise
            logger.warning(
                "%s refused remote references from %s as untrusted (%s, nothing charged); "
                "re-hosting them through media.upload and sending once more",
                path, ", ".join(untrusted_hosts(body)), UNTRUSTED,
            )  # fmt: skip
        try:
            body = await self.rehost(dict(body))
        except KolboError as error:  # refused before any charge, and not sent again
            nothing_sent(error)
            raise
        from ._multipart import form_of

        form = form_of(path, body)
        again = Call("POST", path, json=None if form else body, form=form,
                     generation=True, url=call.url)  # fmt: skip
        return await pipeline.call(again, parse)

    async def prepare(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], Form | None]:
        """`body` ready to send to `path`: files the route takes no part for uploaded first
        (their URLs in their place), the rest as a multipart `Form` (None: send JSON)."""
        from ._multipart import form_of, uploads, with_urls

        done: dict[str, str] = {}  # one upload per path
        urls: dict[int, str] = {}
        for file in uploads(path, body):
            if file not in done:
                done[file] = (await self.send(file, _project(body))).url
            urls[id(file)] = done[file]
        if urls:
            body = with_urls(body, urls)
        return body, form_of(path, body)

    async def rehost(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body` (an elements request) with each remote reference re-hosted: downloaded,
        uploaded to the caller's library, and its Kolbo URL in its place."""
        urls: dict[str, str] = {}
        for key, extension in _REHOSTED.items():
            for url in body.get(key) or ():
                if isinstance(url, _local_files.LocalFile) or url in urls:
                    continue
                media = await self.rehost_url(_ARGUMENTS[key], url, extension, _project(body))
                urls[url] = media.url
        return {
            key: [urls.get(item, item) for item in value] if key in _REHOSTED else value
            for key, value in body.items()
        }


def _unfetchable(field: str, url: str, error: KolboError) -> InvalidRequestError:
    # Named without its query or user:password: a signed URL's signature stays out of logs.
    shown = str(httpx.URL(url).copy_with(query=None, fragment=None, userinfo=b""))
    why = f"its host answered {error}" if isinstance(error, APIStatusError) else str(error)
    return InvalidRequestError(field, f"{shown} could not be fetched to re-host it on Kolbo: {why}")


def _project(body: Mapping[str, Any]) -> dict[str, str]:
    # Kolbo's client files an upload made for a generation under the generation's project.
    project = body.get("project_id")
    return {"project_id": project} if isinstance(project, str) else {}


def _fields(description: object, project_id: object) -> dict[str, str]:
    fields: dict[str, str] = {}
    if description is not None:
        fields["description"] = _requests.check_text("description", description)
    if project_id is not None:
        fields["project_id"] = _requests.check_text("project_id", project_id)
    return fields


def _parse_media(data: dict[str, Any]) -> Media:
    media = data.get("media")
    raw: Mapping[str, Any] = media if isinstance(media, dict) else data
    url = raw.get("url", data.get("url"))
    if not isinstance(url, str) or not url:
        raise ValueError("the answer has no media 'url'")
    return _models.Media(url, raw)


def untrusted_hosts(body: Mapping[str, Any]) -> list[str]:
    """The hosts of `body`'s remote references (for the trust gate's log line: hosts only,
    as a URL's query may hold a signature)."""
    return sorted({
        httpx.URL(url).host
        for key in _REHOSTED
        for url in body.get(key) or ()
        if isinstance(url, str) and not isinstance(url, _local_files.LocalFile)
    })  # fmt: skip
