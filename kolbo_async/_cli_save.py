"""How `kolbo` saves a finished generation: every image of an image result, each file named
with the extension of what the CDN sent when the user gave a directory.

The SDK streams a result to the path it is given. Given a directory, the command does not know
the file's type before it arrives (an image route may answer PNG, JPEG or WebP), so it
downloads to ``ID.download`` there, reads the file's first bytes (the signature of the media
type the CDN sent: PNG, JPEG, WebP, GIF, MP4, QuickTime, WebM), and renames it to
``ID.png`` (``ID-0.png``, ``ID-1.png``, ... for several images). A file the user names is kept
as named; several images to one name are numbered beside it (``cat-0.png``, ``cat-1.png``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import anyio

from kolbo_async import AsyncGeneration, GenerationStatus, ImageResult, InvalidRequestError

from ._cli_checks import DownloadTarget

__all__ = ["extension", "numbered", "result_count", "save"]

#: (signature at offset, extension), tried in order on the file's first bytes.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", ".png"),
    (0, b"\xff\xd8\xff", ".jpg"),
    (0, b"GIF8", ".gif"),
    (0, b"\x1a\x45\xdf\xa3", ".webm"),
    (4, b"ftypqt", ".mov"),
    (4, b"ftyp", ".mp4"),
)


def extension(head: bytes, url: str | None, *, image: bool) -> str:
    """The extension for a file opening with `head`: by its signature, else by the URL's,
    else ``.png`` for an image and ``.mp4`` for a video."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    for offset, signature, ext in _SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            return ext
    suffix = Path(urlsplit(url or "").path).suffix.lower()
    if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix):
        return suffix
    return ".png" if image else ".mp4"


def result_count(status: GenerationStatus) -> int:
    """How many files a finished generation has to save: every image, or the one video."""
    result = status.result
    if isinstance(result, ImageResult):
        return max(1, len(result.urls))
    return 1


def numbered(path: Path, index: int) -> Path:
    """``cat.png`` as the `index`-th of several: ``cat-0.png``, ``cat-1.png``, ..."""
    return path.with_name(f"{path.stem}-{index}{path.suffix}")


async def save(
    gen: AsyncGeneration,
    status: GenerationStatus,
    target: DownloadTarget,
    *,
    on_progress: Callable[[int, int | None], object],
    timeout: float | None,
    next_file: Callable[[], object] = lambda: None,
) -> list[Path]:
    """Download every file of the finished generation `status` to `target`; the paths.

    `next_file()` is called between files (a progress display starts a new bar for each).
    """
    count = result_count(status)
    image = isinstance(status.result, ImageResult)
    urls = status.result.urls if status.result is not None else ()
    saved = []
    for index in range(count):
        if index:
            next_file()
        url = urls[index] if index < len(urls) else None
        if target.file is not None:
            path = target.file if count == 1 else numbered(target.file, index)
            saved.append(
                await gen.download(
                    path,
                    index=index,
                    overwrite=target.overwrite,
                    on_progress=on_progress,
                    timeout=timeout,
                )
            )
            continue
        stem = target.path_for(gen.id, "")
        if count > 1:
            stem = stem.with_name(f"{stem.name}-{index}")
        # Refused before any byte comes: the file this most likely makes (by the URL's
        # extension) is there already. The one made is checked again when it is known.
        likely = stem.with_name(stem.name + extension(b"", url, image=image))
        if not target.overwrite and await anyio.to_thread.run_sync(os.path.lexists, likely):
            raise _exists(target, likely)
        scratch = stem.with_name(stem.name + ".download")
        await gen.download(
            scratch, index=index, overwrite=True, on_progress=on_progress, timeout=timeout
        )
        final = stem.with_name(stem.name + extension(_head(scratch), url, image=image))
        saved.append(await anyio.to_thread.run_sync(_place, scratch, final, target))
    return saved


def _head(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(16)


def _exists(target: DownloadTarget, path: Path, kept: Path | None = None) -> InvalidRequestError:
    also = f" (the download is kept as {str(kept)!r})" if kept is not None else ""
    return InvalidRequestError(
        target.option, f"{str(path)!r} exists; add --overwrite to replace it{also}"
    )


def _place(scratch: Path, final: Path, target: DownloadTarget) -> Path:
    """Rename the finished download into place; without --overwrite, never over a file."""
    if target.overwrite:
        os.replace(scratch, final)
        return final
    try:
        os.link(scratch, final)  # fails if `final` exists: no race with another writer
    except FileExistsError:
        raise _exists(target, final, scratch) from None
    except OSError:  # a file system without hard links
        if os.path.lexists(final):
            raise _exists(target, final, scratch) from None
        os.rename(scratch, final)
        return final
    scratch.unlink()
    return final
