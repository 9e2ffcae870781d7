"""What `kolbo batch` shows: a live table on a terminal, a line per outcome elsewhere, or
JSON Lines (`--json`).

The table is drawn by `rich` (``pip install 'kolbo-async[cli]'``), imported here only when a
terminal asks for it, so ``import kolbo_async`` never pays for it. It is redrawn by a task on
the batch's own event loop (never a thread), so it reads the batch between two of its steps.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, TextIO

import attrs

from ._cli_outcome import cli_words, line, say

__all__ = ["Done", "Tally", "View", "view"]


@attrs.define
class Done:
    """How one item ended, as reported: the batch outcome plus its download."""

    index: int
    line: int
    state: str  # completed, failed, cancelled, filtered, not_sent, outcome_unknown, error
    generation_id: str | None = None
    credits_charged: float | None = None
    url: str | None = None
    path: str | None = None
    #: The video was saved by an earlier run (a rerun does not fetch it again).
    already_there: bool | None = None
    error: str | None = None
    error_type: str | None = None
    #: The video was made, but saving it failed (an API or disk error: exit 3).
    download_failed: bool | None = None
    exception: BaseException | None = attrs.field(default=None, repr=False)

    def fail(self, exc: BaseException) -> None:
        """Record why item `index` has no video (its message in the command's words)."""
        self.exception = exc
        self.error = cli_words(str(exc))
        self.error_type = type(exc).__name__

    @property
    def ok(self) -> bool:
        """The video is ready (and saved, when asked)."""
        return self.state == "completed" and self.error is None

    def json(self) -> dict[str, Any]:
        """The `--json` object: every field, None ones left out."""
        data = attrs.asdict(self, filter=lambda field, _: field.name != "exception")
        data["ok"] = self.ok
        return {key: value for key, value in data.items() if value is not None and value != ""}


@attrs.define
class Tally:
    """The batch so far, for the table and the summary."""

    total: int
    #: Generation POSTs the client sends a minute at most (its pacing), for the ETA.
    per_minute: float = 10.0
    #: Handles submitted (or re-attached) whose outcome has not come yet (`batch.unfinished`).
    running: Callable[[], list[Any]] = lambda: []
    states: dict[str, int] = attrs.field(factory=dict)
    downloading: int = 0
    credits: float = 0.0
    saved: int = 0
    already_there: int = 0
    start: float = attrs.field(factory=time.monotonic)
    #: Outcomes that took time to come (not read back from the journal), for the ETA.
    timed: int = 0

    def add(self, done: Done) -> None:
        """Count item `done` as finished."""
        key = "completed" if done.ok else "failed"
        self.states[key] = self.states.get(key, 0) + 1
        if done.credits_charged and done.state == "completed":  # failures are refunded
            self.credits += done.credits_charged
        if done.path and done.already_there:
            self.already_there += 1
        elif done.path:
            self.saved += 1
        if time.monotonic() - self.start > 1.0:
            self.timed += 1

    @property
    def finished(self) -> int:
        """Items with an outcome."""
        return sum(self.states.values())

    def counts(self) -> dict[str, int]:
        """Items by state: queued, running, downloading, completed, failed."""
        running = self.running()
        return {
            "queued": max(0, self.total - self.finished - len(running) - self.downloading),
            "running": len(running),
            "downloading": self.downloading,
            "completed": self.states.get("completed", 0),
            "failed": self.states.get("failed", 0),
        }

    def charged(self) -> float:
        """Credits charged so far: finished videos, plus what is still running."""
        running = sum(
            float(gen.submission.credits_charged or 0)
            for gen in self.running()
            if gen.submission is not None
        )
        return self.credits + running

    def eta(self) -> float | None:
        """Seconds until every item has an outcome, at the pace seen so far (None: unknown),
        and never sooner than the rate limit lets the queued items be sent."""
        elapsed = time.monotonic() - self.start
        left = self.total - self.finished
        if left == 0 or self.timed == 0:
            return None
        paced = self.counts()["queued"] * 60.0 / self.per_minute
        return max(elapsed / self.timed * left, paced)


class View:
    """One line per outcome on `out` (a pipe, a file, CI), or JSON Lines with `as_json`."""

    live = False

    def __init__(self, out: TextIO, err: TextIO, *, as_json: bool) -> None:
        self.out = out
        self.err = err
        self.as_json = as_json

    def start(self, tally: Tally) -> None:
        """The batch begins."""

    def tick(self, tally: Tally) -> None:
        """Redraw (the live table only)."""

    def outcome(self, done: Done, tally: Tally) -> None:
        """Item `done` has ended."""
        if self.as_json:
            line(done.json(), self.out)
            return
        self.out.write(_describe(done, tally) + "\n")
        self.out.flush()

    def message(self, text: str) -> None:
        """A warning for the user (stderr)."""
        say(self.err, text)

    def finish(self, tally: Tally, summary: str) -> None:
        """The batch has ended: the summary goes to stderr (stdout keeps the outcomes)."""
        if not self.as_json:
            say(self.err, summary)

    def stop(self, tally: Tally) -> None:
        """The batch was stopped (Ctrl-C): leave the screen ready for the message."""


class _LiveView(View):
    """A table of items by state, with credits charged, elapsed time and an ETA."""

    live = True

    def __init__(self, out: TextIO, err: TextIO, title: str) -> None:
        super().__init__(out, err, as_json=False)
        from rich.console import Console
        from rich.live import Live

        self._title = title
        self._console = Console(file=out)
        self._live = Live(console=self._console, auto_refresh=False, transient=False)

    def start(self, tally: Tally) -> None:
        self._live.start()
        self.tick(tally)

    def tick(self, tally: Tally) -> None:
        self._live.update(self._table(tally), refresh=True)

    def outcome(self, done: Done, tally: Tally) -> None:
        if not done.ok:
            self._console.print(_describe(done, tally), markup=False, highlight=False)
        self.tick(tally)

    def message(self, text: str) -> None:
        self._console.print(text.rstrip("\n"), markup=False, highlight=False)

    def finish(self, tally: Tally, summary: str) -> None:
        self.stop(tally)
        self._console.print(summary.rstrip("\n"), markup=False, highlight=False)

    def stop(self, tally: Tally) -> None:
        if self._live.is_started:
            self.tick(tally)
            self._live.stop()

    def _table(self, tally: Tally) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        counts = tally.counts()
        table = Table(title=self._title, title_justify="left", min_width=30)
        table.add_column("state")
        table.add_column("items", justify="right")
        styles = {"running": "cyan", "downloading": "blue", "completed": "green", "failed": "red"}
        for state, count in counts.items():
            table.add_row(state, str(count), style=styles.get(state) if count else "dim")
        eta = tally.eta()
        elapsed = time.monotonic() - tally.start
        status = (
            f"{tally.finished}/{tally.total} done · {tally.charged():g} credits charged · "
            f"{_clock(elapsed)} elapsed · ETA {_clock(eta) if eta is not None else '--:--'}"
        )
        if counts["queued"] and tally.per_minute <= 60:
            status += f"\nsending at most {tally.per_minute:g} a minute (Kolbo's rate limit)"
        return Group(table, Text(status))


def view(out: TextIO, err: TextIO, *, as_json: bool, title: str) -> View:
    """The live table when `out` is a terminal (and rich is there), else plain lines."""
    if not as_json and out.isatty():
        try:
            return _LiveView(out, err, title)
        except ImportError:
            pass
    return View(out, err, as_json=as_json)


def _describe(done: Done, tally: Tally) -> str:
    where = f"[{tally.finished}/{tally.total}] line {done.line}"
    gid = f" {done.generation_id}" if done.generation_id else ""
    if done.ok:
        if done.path:
            there = " (already there)" if done.already_there else ""
            return f"{where}: completed{gid} -> {done.path}{there}"
        return f"{where}: completed{gid} {done.url or ''}".rstrip()
    state = done.state.replace("_", " ")
    # "Generation ID failed [CODE]: why" says the id and the state twice over.
    why = re.sub(r"^Generation \S+ (failed|cancelled|completed)\s*:?\s*", "", done.error or "")
    return f"{where}: {state}{gid}: {why or done.error}"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
