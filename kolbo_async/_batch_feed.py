"""Where a batch's items come from, behind one `Feed`: its own list (`LocalFeed`: no journal,
or an SQLite journal the run holds whole), or a journal shared by the workers of a batch
(`SharedFeed`: PostgreSQL, where each item is claimed by one worker just before its POST and
a dead worker's items are taken over once their lease runs out).

The batch asks the feed what to do at its start (`open`), whether to admit a POST or wait
(`look`), which item that POST sends (`take`), and whether anything may still come
(`waiting`); the journal writes around each item go through `Feed.journal`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio
import attrs

from ._batch_journal import BatchJournal
from ._batch_types import BatchOutcome, Submitter
from ._exceptions import InvalidRequestError, outcome_error
from ._handles import AsyncGeneration
from ._journal_keys import item_keys
from ._journal_path import SharedSpec
from ._models import Submission
from ._requests import BatchRequest
from ._rerun import Ended, Send, Step, Unknown, plan, unknown_error

__all__ = ["Acts", "Feed", "LocalFeed", "Look", "SharedFeed", "open_feed", "resolve"]

Items = Sequence[tuple[str, Mapping[str, Any]]]


@attrs.frozen
class Look:
    """`steps` to act on now (items taken over); whether a POST may be admitted (`send`),
    else how long to wait before the next look (`wait`, seconds)."""

    steps: list[tuple[int, Step]]
    send: bool
    wait: float = 0.0


@attrs.frozen
class Acts:
    """What a batch does with items a journal says not to send: yield `outcomes`, poll the
    `attached` handles; `paid` is what earlier runs (or workers) paid for them."""

    outcomes: list[BatchOutcome[AsyncGeneration]]
    attached: list[tuple[int, AsyncGeneration]]
    paid: list[tuple[int, Submission]]


def resolve(
    steps: Sequence[tuple[int, Step]], requests: Sequence[BatchRequest], submitter: Submitter
) -> Acts:
    """The `Acts` for `steps` (none of them `Send`), each item's request by index."""
    acts = Acts([], [], [])
    for index, step in steps:
        request = requests[index]
        if isinstance(step, Unknown):
            error = unknown_error(index, step.detail)
            acts.outcomes.append(BatchOutcome(index, request, None, None, error))
            continue
        if isinstance(step, Send):
            continue  # the feed hands these out
        acts.paid.append((index, step.submission))
        status = step.status if isinstance(step, Ended) else None
        handle = submitter.attach(step.generation_id, step.submission, status)
        if status is not None:
            acts.outcomes.append(
                BatchOutcome(index, request, handle, status, outcome_error(status))
            )
        else:
            acts.attached.append((index, handle))
    return acts


class Feed(Protocol):
    journal: BatchJournal
    #: True when other workers share the batch (items come one claim at a time).
    shared: bool

    async def open(self) -> list[tuple[int, Step]]:
        """Open the journal (checked and held before anything is sent); the items whose
        step is known now and is not `Send` (those are the feed's to hand out)."""

    def waiting(self) -> bool:
        """Whether anything may still come to send or to take over."""

    def peek(self) -> int | None:
        """The next item to send, when known before it is taken (for `max_credits`)."""

    async def look(self) -> Look:
        """What to do next (see `Look`)."""

    async def take(self) -> int | None:
        """The item the admitted POST sends (None: nothing left after all)."""

    def put_back(self, index: int) -> None:
        """Item `index` was not sent after all (its journal row is back as it was)."""

    async def release(self, index: int) -> None:
        """Item `index` was taken and its POST never started (no journal write was made for
        it): it is to be sent again, by this run or by another worker."""

    def halt(self) -> list[int]:
        """Send nothing more; the items this run will now never send."""


def open_feed(
    journal: Path | SharedSpec | None,
    items: Items,
    *,
    resubmit_unknown: bool,
    budget: float | None = None,
) -> Feed:
    """The feed for a batch of `items` (path and body of each) with `journal`; checked now
    (`budget`, ``max_credits``, does not go with a shared journal)."""
    if isinstance(journal, SharedSpec) and budget is not None:
        raise InvalidRequestError(
            "max_credits", "bounds one process's spending: it does not go with a journal "
            "shared by many workers (postgresql://)",
        )  # fmt: skip
    if isinstance(journal, SharedSpec):
        return SharedFeed(journal, items, resubmit_unknown=resubmit_unknown)
    return LocalFeed(journal, items, resubmit_unknown=resubmit_unknown)


class LocalFeed:
    """The run's own list: every item's step is known at the start."""

    shared = False

    def __init__(self, path: Path | None, items: Items, *, resubmit_unknown: bool) -> None:
        self.journal = BatchJournal()  # the real one once opened
        self._path = path
        self._items = items
        self._resubmit_unknown = resubmit_unknown
        self._queue: deque[int] = deque()

    async def open(self) -> list[tuple[int, Step]]:
        steps: list[Step] = [Send()] * len(self._items)
        if self._path is not None:
            # Imported here: most batches keep no journal, and `import kolbo_async` is timed.
            from ._journal import Journal

            journal = Journal(self._path)
            try:
                rows = await journal.open()  # locked and checked before anything is sent
            except BaseException:
                # asyncio's own cancellation lets the caller leave while the open runs on
                # in its thread; the batch never gets this journal to close, so it is let
                # go here (once that open is done).
                journal.close_now()
                raise
            keys = item_keys(list(self._items))
            self.journal = BatchJournal(journal, keys)
            steps = plan(keys, rows, resubmit_unknown=self._resubmit_unknown)
        self._queue.extend(i for i, s in enumerate(steps) if isinstance(s, Send))
        return [(i, s) for i, s in enumerate(steps) if not isinstance(s, Send)]

    def waiting(self) -> bool:
        return bool(self._queue)

    def peek(self) -> int | None:
        return self._queue[0] if self._queue else None

    async def look(self) -> Look:
        return Look([], bool(self._queue))

    async def take(self) -> int | None:
        return self._queue.popleft() if self._queue else None

    def put_back(self, index: int) -> None:
        self._queue.appendleft(index)

    async def release(self, index: int) -> None:
        self.put_back(index)

    def halt(self) -> list[int]:
        halted = list(self._queue)
        self._queue.clear()
        return halted


class SharedFeed:
    """A batch shared by many workers through PostgreSQL: items come one claim at a time."""

    shared = True

    def __init__(self, spec: SharedSpec, items: Items, *, resubmit_unknown: bool) -> None:
        self.journal = BatchJournal()
        self._keys = item_keys(list(items))
        self._index = {key: index for index, key in enumerate(self._keys)}
        self._open = True  # until a look finds every item handed out
        self._halted = False
        from ._journal_pg import PostgresJournal  # only a shared batch needs it

        self._store = PostgresJournal(  # the driver is imported when it connects
            spec, self._keys, items, resubmit_unknown=resubmit_unknown
        )

    async def open(self) -> list[tuple[int, Step]]:
        self.journal = BatchJournal(self._store, self._keys)
        await self._store.open()
        return []

    def waiting(self) -> bool:
        return self._open and not self._halted

    def peek(self) -> int | None:
        return None

    async def look(self) -> Look:
        sweep = await self._store.sweep()
        self._open = sweep.open > 0
        steps = [(self._index[key], step) for key, step in sweep.taken]
        return Look(steps, sweep.fresh > 0, sweep.recheck)

    async def take(self) -> int | None:
        with anyio.CancelScope(shield=True):  # a claim that was made is used or given back
            key = await self._store.claim()
        return None if key is None else self._index[key]

    def put_back(self, index: int) -> None:
        """Nothing to keep: `unsent` gave the row back to every worker."""

    async def release(self, index: int) -> None:
        # The claim was committed: give the row back to every worker (a failure to reach
        # the journal leaves it to be taken over once this worker's lease runs out).
        await self.journal.unsent(index)
        self._open = True

    def halt(self) -> list[int]:
        self._halted = True
        return []  # the items nobody claimed stay for the other workers (or a later one)
