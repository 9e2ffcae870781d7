"""A request body holding local files, sent as Kolbo's own client sends it (kolbo-api.md §13).

A route's body (`Route.body`) may hold `LocalFile`s where its fields take media. Each field
declares how its files go (`_requests.checked`: `part`, `together`, `repeat`):

- `uploads` lists the files to upload first through ``media.upload`` (a field without a
  part, a file inside a structure such as a keyframe, a frame whose pair is a URL), and
  `with_urls` puts their URLs in their place;
- `form_of` makes what is left a `Form`: each remaining file a part, in field order, then
  every other field as text (arrays and objects as JSON strings, booleans and numbers as
  strings, a `repeat` field's URLs as repeated fields). None when no file is left: the body
  goes as JSON.

A `Form` is an async byte stream of known length that reads each file from disk in chunks
every time it is iterated: a request sent again (a 429's retry) re-reads its files.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from ._exceptions import InvalidRequestError, nothing_sent
from ._local_files import CHUNK, LocalFile, OpenedFile, local_files
from ._route_files import FilePolicy, file_policies

__all__ = ["Form", "form_of", "media_form", "uploads", "with_urls"]

_NO_POLICY = FilePolicy(None, (), False)


def uploads(path: str, body: Mapping[str, Any]) -> list[LocalFile]:
    """The local files of `body` (for the route at `path`) to upload before sending it."""
    policies = file_policies(path)
    found: list[LocalFile] = []
    for key, value in body.items():
        policy = policies.get(key, _NO_POLICY)
        if _as_part(policy, body) and isinstance(value, (LocalFile, list, tuple)):
            items = value if isinstance(value, (list, tuple)) else [value]
            # Files nested deeper (a keyframe's image) have no part of their own.
            found.extend(f for item in items if not isinstance(item, LocalFile)
                         for f in local_files(item))  # fmt: skip
        else:
            found.extend(local_files(value))
    return found


def _as_part(policy: FilePolicy, body: Mapping[str, Any]) -> bool:
    if policy.part is None:
        return False
    return all(isinstance(body.get(name), LocalFile) for name in policy.together)


def with_urls(value: Any, urls: Mapping[int, str]) -> Any:
    """`value` with each `LocalFile` in `urls` (by its `id`) replaced by its URL; the same
    path given elsewhere as a part stays a part."""
    if isinstance(value, LocalFile):
        return urls.get(id(value), value)
    if isinstance(value, Mapping):
        return {key: with_urls(item, urls) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [with_urls(item, urls) for item in value]
    return value


def form_of(path: str, body: Mapping[str, Any]) -> Form | None:
    """`body` as a multipart `Form` when it holds local files (after `uploads`), else None."""
    if not local_files(body):
        return None
    policies = file_policies(path)
    files: list[tuple[str, LocalFile | OpenedFile]] = []
    fields: list[tuple[str, str]] = []
    for key, value in body.items():
        policy = policies.get(key, _NO_POLICY)
        if isinstance(value, LocalFile):
            files.append((_part_name(policy, value), value))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, LocalFile) for v in value):
            files.extend((_part_name(policy, v), v) for v in value if isinstance(v, LocalFile))
            rest = [v for v in value if not isinstance(v, LocalFile)]
            if rest:  # the URLs stay a field
                fields.extend(_fields(key, rest, policy.repeat))
        elif value is not None:
            fields.extend(_fields(key, value, policy.repeat))
    return Form(files, fields)


def media_form(file: LocalFile | OpenedFile, fields: Mapping[str, str]) -> Form:
    """The body of ``POST /api/v1/media/upload``: one ``file`` part, then `fields`."""
    return Form([("file", file)], list(fields.items()))


def _part_name(policy: FilePolicy, file: LocalFile) -> str:
    part = policy.part
    if part is None:  # uploads() took these out first
        raise AssertionError(f"{file.field}: a local file in a field without a part")
    return part if isinstance(part, str) else part(file)


def _fields(key: str, value: object, repeat: bool) -> list[tuple[str, str]]:
    # Kolbo's client: arrays and objects as JSON strings, booleans and numbers as strings
    # (String(true) is "true", String(5) is "5"); some lists as repeated fields.
    if repeat and isinstance(value, (list, tuple)):
        return [(key, _text(item)) for item in value]
    return [(key, _text(value))]


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _quoted(text: str) -> str:
    # As browsers (and httpx) write a name in Content-Disposition.
    return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _next(chunks: Iterator[bytes]) -> bytes:
    return next(chunks, b"")


class Form:
    """A ``multipart/form-data`` body: `files` (part name, file) streamed from disk, then
    `fields` (name, text). Iterable any number of times; its length is known up front."""

    __slots__ = ("_heads", "boundary", "content_type", "fields", "files", "length", "tail")

    def __init__(
        self, files: list[tuple[str, LocalFile | OpenedFile]], fields: list[tuple[str, str]]
    ) -> None:
        self.files = files
        self.fields = fields
        self.boundary = os.urandom(16).hex()
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        dash = f"--{self.boundary}\r\n"
        self._heads = [
            (
                f'{dash}Content-Disposition: form-data; name="{_quoted(name)}"; '
                f'filename="{_quoted(file.filename)}"\r\n'
                f"Content-Type: {file.content_type}\r\n\r\n"
            ).encode()
            for name, file in files
        ]
        text = "".join(
            f'{dash}Content-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n{value}\r\n'
            for name, value in fields
        )
        self.tail = (text + f"--{self.boundary}--\r\n").encode()
        self.length = sum(
            len(head) + file.size + 2 for head, (_, file) in zip(self._heads, files, strict=True)
        ) + len(self.tail)

    def headers(self) -> dict[str, str]:
        """Its Content-Type (with the boundary) and Content-Length."""
        return {"Content-Type": self.content_type, "Content-Length": str(self.length)}

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._parts():
                yield data
        except InvalidRequestError as error:
            # A file that could not be read whole: the body never ended, so no server can
            # have acted on it (a batch may send the item again).
            nothing_sent(error)
            raise

    async def _parts(self) -> AsyncIterator[bytes]:
        for head, (_, file) in zip(self._heads, self.files, strict=True):
            yield head
            if file.size <= CHUNK:
                # One read of a small file: no worker thread for it.
                for data in file.chunks():
                    yield data
            else:
                # A large one is read a chunk at a time in a worker thread, so the event loop
                # never waits on the disk (imported here: only large files need threads).
                from anyio import to_thread

                chunks = file.chunks()
                while data := await to_thread.run_sync(_next, chunks):
                    yield data
            yield b"\r\n"
        yield self.tail
