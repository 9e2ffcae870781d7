"""How each route's fields send local files (kolbo-api.md §13), as `_requests.checked` records it.

A field's metadata says which multipart part its local files go in (`PART`; none: uploaded
first through ``media.upload``), which fields must all be local files for them to go as parts
(`TOGETHER`), and whether its URLs are repeated fields in a multipart body (`REPEAT`). Every
route class registers itself by its path (`ROUTES`), so the send path, which holds only a
path and a body, reads them back with `file_policies`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["PART", "REPEAT", "ROUTES", "SEND_AS", "TOGETHER", "FilePolicy", "Part",
           "file_policies"]  # fmt: skip

#: Field metadata keys: its JSON name, and how its local files go.
SEND_AS = "kolbo_async.send_as"
PART = "kolbo_async.part"
TOGETHER = "kolbo_async.together"
REPEAT = "kolbo_async.repeat"
#: A local file's multipart part name: a name, or one chosen from the file (its kind).
Part = str | Callable[[Any], str]
#: Every route class by its path (a class registers itself as it is made).
ROUTES: dict[str, type[Any]] = {}


class FilePolicy:
    """How a field's local files and URLs go in a multipart body (see `_requests.checked`)."""

    __slots__ = ("part", "repeat", "together")

    def __init__(self, part: Part | None, together: tuple[str, ...], repeat: bool) -> None:
        self.part = part
        self.together = together
        self.repeat = repeat


def file_policies(path: str) -> dict[str, FilePolicy]:
    """The fields of the route at `path` by JSON name, with how each sends local files."""
    try:
        return _POLICIES[path]
    except KeyError:
        cls = ROUTES.get(path)
        policies = _POLICIES[path] = {
            field.metadata.get(SEND_AS) or field.name: FilePolicy(
                field.metadata.get(PART), field.metadata.get(TOGETHER, ()),
                field.metadata.get(REPEAT, False),
            )
            for field in (attrs.fields(cls) if cls is not None else ())
            if PART in field.metadata  # a checked field (not extra_body)
        }  # fmt: skip
        return policies


_POLICIES: dict[str, dict[str, FilePolicy]] = {}
