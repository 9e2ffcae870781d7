"""What a batch asks of its journal, whichever database keeps it: the writes around each item
(`JournalStore`), and what a journal shared by many workers has for one of them (`Sweep`).

SQLite (`_journal.Journal`) is one run's at a time: the run holds every row from the start,
so it claims nothing. PostgreSQL (`_journal_pg.PostgresJournal`) is shared by the workers of
a batch: each claims an item before sending it and takes over the items of a worker whose
lease ran out; `Sweep` says what it found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

from ._journal_keys import ItemKey
from ._rerun import Step

__all__ = ["JournalStore", "Sweep"]


class JournalStore(Protocol):
    """The writes around one item. Each returns once durable, or raises `KolboError`."""

    async def intent(self, index: int, key: ItemKey, path: str, body: Mapping[str, Any]) -> None:
        """Item `key` (at `index` in this run's list) is about to be POSTed."""

    async def unsent(self, key: ItemKey) -> None:
        """Its POST was certainly not sent after all: a later run (or worker) sends it."""

    async def submitted(
        self, key: ItemKey, generation_id: str, submission: Mapping[str, Any]
    ) -> None:
        """Kolbo answered the POST with `generation_id`."""

    async def unknown(self, key: ItemKey, error: str) -> None:
        """The POST may have reached Kolbo: its intent stays, with `error`."""

    async def rejected(self, key: ItemKey, error: str) -> None:
        """Kolbo refused the POST with a 4xx: nothing was created or charged."""

    async def finished(self, key: ItemKey, generation_id: str, status: Mapping[str, Any]) -> None:
        """The generation ended with `status`."""

    async def holds(self, key: ItemKey) -> bool:
        """Whether this run still holds the item: a shared journal's worker may have lost it
        to another (its lease ran out while it was paused); that one then reports it."""

    def handed(self, key: ItemKey) -> None:
        """The item's outcome went to the caller (a shared journal then never hands it to
        another worker); no I/O here."""

    async def close(self) -> None:
        """Let go of the journal (and of every item not handed out)."""

    def close_now(self) -> None:
        """The same, from this thread (a batch dropped without `aclose`)."""


@attrs.frozen
class Sweep:
    """What a shared journal has for one worker now.

    Attributes:
        taken: items of workers whose lease ran out, now this worker's, with what to do
            with each (`_rerun.step` of its row; never `Send`: those went back to `fresh`).
        fresh: items nobody has claimed yet (sent by whichever worker claims them).
        open: items not handed out to a caller yet, that are not this worker's.
        recheck: seconds after which another look may find more (a lease running out).
    """

    taken: Sequence[tuple[ItemKey, Step]]
    fresh: int
    open: int
    recheck: float
