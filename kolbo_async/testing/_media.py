"""The bytes the simulated CDN serves: Range parsing and chunked, padded bodies."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["chunks", "parse_range"]


def parse_range(header: str | None, size: int) -> tuple[int, int, int] | None:
    """(start, stop, status) for a ``Range`` header; None when unsatisfiable (416)."""
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
    # Past the end of `content` comes padding, so `video_size` can ask for large files without
    # the simulator holding them.
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
