"""The simulated CDN: another origin serving each completed generation's files, with ranges.

It takes no key (the SDK must not send one there; tests read the records). It also serves the
files uploaded through ``/api/v1/media/upload`` (or as parts of a generation POST) at
``/uploads/{id}/{name}``. Past the end of
the real sample video comes padding, so `video_size` can ask for large files without the
simulator holding them.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Mapping
from urllib.parse import quote, unquote

from ._faults import HTML_502
from ._lifecycle import GenerationRecord
from ._records import SimRequest, SimResponse
from ._routes import IMAGE_KINDS, image_count

__all__ = ["CDN", "PNG", "chunks", "parse_range"]


def _png(width: int = 96, height: int = 54) -> bytes:
    # A real PNG (a colour gradient), made here so that no binary file is needed: every image
    # result opens in an image viewer.
    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, 160))
        for y in range(height)
    )

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


#: The image every image generation's results serve: a 96x54 PNG.
PNG = _png()


class CDN:
    """The files of completed generations at `url`: ``/videos/{id}.mp4``, ``/thumbs/{id}.jpg``,
    and an image generation's ``/images/{id}-{n}.png`` (n from 0).

    Args:
        url: the CDN's origin.
        video, thumbnail: the bytes every generation's files start with.
        video_size: bytes per video (default ``len(video)``; larger sizes are padded).
    """

    def __init__(
        self, url: str, *, video: bytes, thumbnail: bytes, video_size: int | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.video = video
        self.thumbnail = thumbnail
        self.video_size = video_size if video_size is not None else len(video)
        #: Uploaded files by id: (owner's key, file name, content type, bytes).
        self.uploads: dict[str, tuple[str, str, str, bytes]] = {}

    def store(self, key: str, part: tuple[str, str, str, bytes]) -> str:
        """Keep an uploaded file (a form's part: name, file name, content type, bytes) for
        `key`; the URL it is served at."""
        _, filename, content_type, data = part
        upload_id = f"{len(self.uploads) + 1:08x}"
        name = filename.replace("/", "_").replace("\\", "_") or "upload"
        self.uploads[upload_id] = (key, name, content_type, data)
        return f"{self.url}/uploads/{upload_id}/{quote(name)}"

    def owned_by(self, url: object, key: str, generations: Mapping[str, GenerationRecord]) -> bool:
        """Whether `url` is a file this CDN serves for `key`: its upload or its result."""
        if not isinstance(url, str) or not url.startswith(self.url + "/"):
            return False
        parts = url[len(self.url) + 1 :].split("?")[0].split("/")
        if parts[0] == "uploads" and len(parts) == 3:
            upload = self.uploads.get(parts[1])
            return upload is not None and upload[0] == key
        record = _record(parts[0], parts[1], generations) if len(parts) == 2 else None
        return record is not None and record.key == key

    def video_url(self, gen_id: str) -> str:
        """Where a completed generation's video is served."""
        return f"{self.url}/videos/{gen_id}.mp4"

    def image_url(self, gen_id: str, index: int) -> str:
        """Where image `index` of a completed image generation is served."""
        return f"{self.url}/images/{gen_id}-{index}.png"

    def thumbnail_url(self, gen_id: str) -> str:
        """Where a completed generation's thumbnail is served."""
        return f"{self.url}/thumbs/{gen_id}.jpg"

    def answer(
        self,
        request: SimRequest,
        fault: str | None,
        now: float,
        generations: Mapping[str, GenerationRecord],
    ) -> SimResponse:
        """Serve one GET or HEAD at `now`: 404 unless the generation has completed by then."""
        if fault in ("500", "502", "503"):
            return SimResponse(int(fault), {"content-type": "text/plain"}, b"CDN error")
        if fault == "html_502":
            return SimResponse(502, {"content-type": "text/html"}, HTML_502)
        parts = request.path.strip("/").split("/")
        if parts[0] == "uploads" and request.method in ("GET", "HEAD"):
            return self._upload(request, parts)
        record = None
        if len(parts) == 2 and parts[0] in ("videos", "thumbs", "images"):
            record = _record(parts[0], parts[1], generations)
        if (
            request.method not in ("GET", "HEAD")
            or record is None
            or record.state_at(now)[0] != "completed"
            or (record.outcome == "filtered" and parts[0] in ("videos", "images"))
        ):
            return SimResponse(404, {"content-type": "text/plain"}, b"Not Found")
        if parts[0] == "images":
            content, size, kind = PNG, len(PNG), "image/png"
        elif parts[0] == "thumbs":
            content, size, kind = self.thumbnail, len(self.thumbnail), "image/jpeg"
        else:
            content, size, kind = self.video, self.video_size, "video/mp4"
        headers = {"content-type": kind, "accept-ranges": "bytes"}
        span = parse_range(request.headers.get("range"), size)
        if span is None:
            return SimResponse(416, {**headers, "content-range": f"bytes */{size}"}, b"")
        start, stop, status = span
        headers["content-length"] = str(stop - start)
        if status == 206:
            headers["content-range"] = f"bytes {start}-{stop - 1}/{size}"
        if request.method == "HEAD":
            return SimResponse(status, headers)
        return SimResponse(status, headers, chunks=chunks(content, start, stop))


    def _upload(self, request: SimRequest, parts: list[str]) -> SimResponse:
        upload = self.uploads.get(parts[1]) if len(parts) == 3 else None
        if upload is None or upload[1] != unquote(parts[2]):
            return SimResponse(404, {"content-type": "text/plain"}, b"Not Found")
        _, _, kind, content = upload
        headers = {"content-type": kind, "content-length": str(len(content)),
                   "accept-ranges": "bytes"}  # fmt: skip
        if request.method == "HEAD":
            return SimResponse(200, headers)
        return SimResponse(200, headers, chunks=chunks(content, 0, len(content)))


def _record(
    folder: str, name: str, generations: Mapping[str, GenerationRecord]
) -> GenerationRecord | None:
    # The generation a file name belongs to, if that file exists: videos and thumbnails of
    # video generations, images 0..num_images-1 of image generations.
    stem, _, ext = name.rpartition(".")
    if folder == "images":
        gen_id, _, index = stem.rpartition("-")
        numbered = ext == "png" and index.isascii() and index.isdigit()
        record = generations.get(gen_id) if numbered else None
        if record is None or record.kind not in IMAGE_KINDS:
            return None
        return record if int(index) < image_count(record.request) else None
    record = generations.get(stem) if ext == ("mp4" if folder == "videos" else "jpg") else None
    return None if record is None or record.kind in IMAGE_KINDS else record


def parse_range(header: str | None, size: int) -> tuple[int, int, int] | None:
    """(start, stop, status) for a ``Range`` header; None when unsatisfiable (416).

    Example:
        >>> parse_range("bytes=4-7", 100), parse_range("bytes=-10", 100), parse_range(None, 9)
        ((4, 8, 206), (90, 100, 206), (0, 9, 200))
    """
    whole = (0, size, 200)
    if not header or not header.startswith("bytes=") or "," in header:
        return whole  # absent, or a form we do not serve: the whole body, as RFC 9110 allows
    first, sep, last = header[6:].strip().partition("-")
    if not sep or not (first.isdigit() or last.isdigit()):
        return whole
    if not first:  # a suffix: the last N bytes
        return (max(0, size - int(last)), size, 206) if int(last) > 0 and size > 0 else None
    start = int(first)
    if last.isdigit() and int(last) < start:
        return whole
    stop = min(int(last) + 1, size) if last.isdigit() else size
    return (start, stop, 206) if start < size else None


def chunks(content: bytes, start: int, stop: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """Bytes `start`..`stop` of `content` padded without end, in pieces of at most `chunk`."""
    while start < stop:
        if start < len(content):
            piece = content[start : min(stop, start + chunk, len(content))]
        else:
            piece = _pad(start, min(chunk, stop - start))
        yield piece
        start += len(piece)


# Padding is deterministic and position-dependent, so a resumed download that splices at the
# wrong offset is caught by comparing bytes. One 64 KiB-plus block, sliced, keeps it fast.
_PATTERN = bytes(i * 7 & 0xFF for i in range(256)) * 257


def _pad(offset: int, length: int) -> bytes:
    shift = offset % 256
    return _PATTERN[shift : shift + length]
