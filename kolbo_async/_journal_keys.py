"""What identifies a batch item in its journal: a hash of its request, and which occurrence
of that hash it is in the list (0, 1, ...).

Reordering, prepending or filtering a list finds the same rows, and two identical prompts stay
two items. Request bodies are hashed in a canonical form: keys sorted, and a float that is a
whole number written as the integer (``duration=5.0`` is the same request as ``duration=5``).
Journals of schema 2 were hashed without that rule (`legacy_key`). A local file given for a
medium counts by its content (its SHA-256), not its path: an edited file is a new item, and
the same file moved is the same one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ._local_files import LocalFile

__all__ = ["ItemKey", "item_keys", "legacy_key", "request_key"]

#: (request hash, occurrence of that hash in the list): what identifies an item.
ItemKey = tuple[str, int]


def request_key(path: str, body: Mapping[str, Any]) -> str:
    """A stable hash of one request: endpoint and canonical JSON body.

    Two bodies the API cannot tell apart hash alike: key order does not count, and a float
    that is a whole number counts as the integer (JSON has one kind of number).
    """
    return _digest(path, _canonical(body))


def legacy_key(path: str, body: Mapping[str, Any]) -> str:
    """Schema 2's hash, which told 5.0 from 5: only for re-keying its rows."""
    return _digest(path, body)


def item_keys(requests: list[tuple[str, Mapping[str, Any]]]) -> list[ItemKey]:
    """Each request's (hash, occurrence): the n-th request with a given hash gets n."""
    seen: dict[str, int] = {}
    keys: list[ItemKey] = []
    for path, body in requests:
        digest = request_key(path, body)
        occurrence = seen.get(digest, 0)
        seen[digest] = occurrence + 1
        keys.append((digest, occurrence))
    return keys


def _digest(path: str, body: object) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{path}\n{canonical}".encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, LocalFile):
        return {"local_file_sha256": value.digest()}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    return value
