"""A batch's journal item by item: the writes around each POST, and what a failed one means.

`Journal` says whether a write is durable; this says what the batch does when one is not:
without the intent nothing is sent (`intent` returns the error that stops the batch), a lost
generation id is logged loudly and stops the rest (`submitted`), and any other lost write is
logged and leaves a row a rerun treats safely (it reports, never pays again blindly). Without
a journal every method does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ._exceptions import KolboError
from ._journal_keys import ItemKey
from ._journal_store import JournalStore

__all__ = ["BatchJournal"]

logger = logging.getLogger("kolbo_async")


class BatchJournal:
    """`journal` (None: the batch keeps none), open, and each item's key in it by index."""

    def __init__(
        self, journal: JournalStore | None = None, keys: Sequence[ItemKey] = ()
    ) -> None:
        self._journal = journal
        self._keys = keys

    @property
    def kept(self) -> bool:
        """Whether the batch keeps a journal (a rerun then knows what it sent)."""
        return self._journal is not None

    async def intent(self, index: int, path: str, body: Mapping[str, Any]) -> KolboError | None:
        """Record that item `index` is about to be sent; None when it may be, else the
        error that it (and every item not yet sent) ends with."""
        if self._journal is None:
            return None
        try:
            await self._journal.intent(index, self._keys[index], path, body)
        except KolboError as error:
            return self.lost(error)
        return None

    @staticmethod
    def lost(error: KolboError) -> KolboError:
        """What every item not yet sent ends with once the journal cannot be written."""
        return KolboError(
            f"Not submitted: {error} Nothing is sent without its record in the journal; "
            "run the batch again with it once the journal can be written."
        )

    async def unsent(self, index: int) -> None:
        """Take back the intent of item `index`: its POST was certainly not sent."""
        if self._journal is None:
            return
        try:
            await self._journal.unsent(self._keys[index])
        except KolboError as failed:
            logger.warning(
                "requests[%d] was not sent, but %s A rerun with this journal reports it "
                "as outcome-unknown: pass resubmit_unknown=True to send it.",
                index,
                failed,
            )

    async def rejected(self, index: int, error: str) -> None:
        """Kolbo refused item `index` (nothing created): a rerun sends it again."""
        if self._journal is not None:
            await self._note(index, self._journal.rejected, error)

    async def unknown(self, index: int, error: str) -> None:
        """Item `index`'s POST may have reached Kolbo: its intent stays."""
        if self._journal is not None:
            await self._note(index, self._journal.unknown, error)

    async def _note(
        self, index: int, write: Callable[[ItemKey, str], Awaitable[None]], error: str
    ) -> None:
        # A journal that cannot take it keeps the intent row: a rerun then reports the item
        # as outcome-unknown, never pays for it blindly.
        try:
            await write(self._keys[index], error)
        except KolboError as failed:
            logger.warning("requests[%d]: %s", index, failed)

    async def submitted(
        self, index: int, generation_id: str, submission: Mapping[str, Any]
    ) -> KolboError | None:
        """Record the generation item `index` created; None when recorded, else the error
        that every item not yet sent ends with (nothing more is sent without a record)."""
        if self._journal is None:
            return None
        try:
            await self._journal.submitted(self._keys[index], generation_id, submission)
        except KolboError as failed:
            # The handle is kept (and yielded when it ends); the journal's intent row
            # makes a rerun report it rather than pay for it again.
            logger.error(
                "Generation %s (requests[%d]) was created and charged, but %s Keep its id:"
                " re-attach it with client.generations.attach(%r); a rerun with this "
                "journal reports it as outcome-unknown.",
                generation_id,
                index,
                failed,
                generation_id,
            )
            return KolboError(
                f"Not submitted: {failed} Nothing more is sent without its record in the "
                "journal; run the batch again with it once the journal can be written."
            )
        return None

    async def finished(self, index: int, generation_id: str, status: Mapping[str, Any]) -> None:
        """Record how item `index`'s generation ended (if not, a rerun re-attaches and asks)."""
        if self._journal is None:
            return
        try:
            await self._journal.finished(self._keys[index], generation_id, status)
        except KolboError as failed:
            logger.warning("requests[%d]: %s", index, failed)

    async def holds(self, index: int) -> bool:
        """Whether item `index`'s outcome is this run's to give (see `JournalStore.holds`);
        a journal out of reach is a `KolboError`."""
        return self._journal is None or await self._journal.holds(self._keys[index])

    def handed(self, index: int) -> None:
        """Item `index`'s outcome went to the caller."""
        if self._journal is not None and self._keys:
            self._journal.handed(self._keys[index])

    async def close(self) -> None:
        """Let the next run have the journal."""
        if self._journal is not None:
            await self._journal.close()

    def close_now(self) -> None:
        """The same, from this thread (a batch dropped without `aclose`)."""
        if self._journal is not None:
            self._journal.close_now()
