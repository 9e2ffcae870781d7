"""`kolbo batch FILE`: every request of a file through `videos.generate_many`.

Checked before anything is paid for: the arguments, the journal's and the download
directory's paths, and every line of FILE (a bad line is reported by number, and nothing is
sent). Videos are saved while the batch goes on, as ``{index}-{id}.{ext}``, each atomically
(the SDK writes a temporary file and renames it), so a file that is there is complete and a
rerun skips it. Ctrl-C stops submitting; the SDK finishes recording a POST on the wire, so
the journal stays consistent, and the message names the command that resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import shlex
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import anyio

from kolbo_async import (
    APIConnectionError,
    APIStatusError,
    AsyncKolbo,
    BatchOutcome,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidRequestError,
    KolboError,
    SubmissionOutcomeUnknownError,
)

from ._cli_batch_input import BadLines, Item, read_items
from ._cli_batch_price import preview
from ._cli_batch_view import Done, Tally, View, view
from ._cli_checks import batch_directory, journal_file
from ._cli_outcome import EXIT_API, EXIT_FAILED, EXIT_OK, Session, cli_words, line, say

__all__ = ["batch", "check_batch"]

#: Errors of an item's own making (Kolbo refused that request): the item failed (exit 1).
#: Any other API or network error is exit 3.
_REFUSED_STATUSES = (400, 404, 409, 422)
_DOWNLOADS_AT_ONCE = 4


def check_batch(args: argparse.Namespace) -> None:
    """Every check of `kolbo batch` that needs no request; the file is read and parsed here."""
    args.journal_path = journal_file(args.journal) if args.journal is not None else None
    if args.sandbox and args.journal_path is not None and args.journal_path.exists():
        raise InvalidRequestError(
            "--journal",
            f"{args.journal!r} is from an earlier run, and a --sandbox run's generations end "
            "with it. To try resuming, serve a sandbox that lasts (kolbo sandbox) and point "
            "KOLBO_BASE_URL and KOLBO_API_KEY at it; or remove the journal to start over",
        )
    # Bad lines are reported with those the SDK finds, once the client can check them.
    args.items, args.bad_lines = read_items(args.file)
    args.directory = None
    if args.download_dir is not None:
        args.directory = batch_directory(args.download_dir, create=False)


async def batch(
    client: AsyncKolbo, args: argparse.Namespace, session: Session, out: TextIO, err: TextIO
) -> int:
    """Run `kolbo batch`; return the exit code."""
    items: list[Item] = args.items
    _validate(client, items, args.bad_lines, args.file)
    if args.dry_run:
        return await preview(client, items, out, as_json=args.json)
    if args.directory is not None:
        args.directory = batch_directory(args.download_dir, create=True)
    title = f"kolbo batch {'stdin' if args.file == '-' else args.file}"
    shown = view(out, err, as_json=args.json, title=title)
    run = _Run(items, args, shown)
    session.note = run.interrupted
    handler = _Warnings(shown)
    logger = logging.getLogger("kolbo_async")
    logger.addHandler(handler)
    try:
        await run.go(client)
    finally:
        logger.removeHandler(handler)
    session.reported = True
    return run.exit_code()


def _validate(client: AsyncKolbo, items: list[Item], bad: dict[int, str], name: str) -> None:
    """The SDK's own checks of every request; every bad line is reported, and nothing sent."""
    try:
        client.videos.generate_many([item.request for item in items])
        if not bad:
            return
    except InvalidRequestError:
        pass
    lines = dict(bad)
    for item in items:  # one at a time, so that every bad line is reported
        try:
            client.videos.generate_many([item.request])
        except InvalidRequestError as exc:
            field = re.sub(r"^requests\[\d+\]\.?", "", exc.field)
            problem = str(exc).partition(f"{exc.field}: ")[2] or str(exc)
            lines[item.line] = f"{field}: {problem}" if field else problem
    raise BadLines("stdin" if name == "-" else name, lines)


class _Run:
    """One run of a batch: its outcomes, downloads and what it says when interrupted."""

    def __init__(self, items: list[Item], args: argparse.Namespace, shown: View) -> None:
        self.items = items
        self.args = args
        self.view = shown
        self.tally = Tally(len(items), per_minute=args.rate_limits.generations_per_minute)
        self.done: list[Done] = []
        self.batch: Any = None
        self.unfinished: list[str] = []
        self.failure: Exception | None = None
        self.scope: anyio.CancelScope | None = None
        self.limiter = anyio.CapacityLimiter(_DOWNLOADS_AT_ONCE)

    async def go(self, client: AsyncKolbo) -> None:
        args = self.args
        self.batch = client.videos.generate_many(
            [item.request for item in self.items],
            concurrency=args.concurrency,
            journal=args.journal_path,
            max_credits=args.max_credits,
        )
        batch = self.batch
        self.tally.running = lambda: list(batch.unfinished)
        self.view.start(self.tally)
        try:
            async with anyio.create_task_group() as outer:
                self.scope = outer.cancel_scope
                if self.view.live:
                    outer.start_soon(self._redraw)
                async with anyio.create_task_group() as downloads:
                    try:
                        async for outcome in batch:
                            self._outcome(outcome, downloads)
                    except Exception as error:
                        self._failed(error)
                outer.cancel_scope.cancel()
            if self.failure is not None:
                raise self.failure
        except BaseException as exc:
            self.unfinished = [gen.id for gen in batch.unfinished]
            self.view.stop(self.tally)
            with anyio.CancelScope(shield=True):
                await batch.aclose()
            stopped = not isinstance(exc, (anyio.get_cancelled_exc_class(), KeyboardInterrupt))
            if stopped and self.unfinished:
                # Not Ctrl-C (whose message comes from `session.note`): a closed stdout or an
                # error of the SDK's own. The paid generations still running are named here.
                say(self.view.err, self.interrupted("stopped"))
            raise
        self.view.finish(self.tally, self.summary())

    async def _redraw(self) -> None:
        while True:
            self.view.tick(self.tally)
            await anyio.sleep(0.25)

    def _outcome(self, outcome: BatchOutcome[Any], downloads: Any) -> None:
        done = _done(outcome, self.items[outcome.index])
        if done.ok and self.args.directory is not None:
            assert outcome.generation is not None
            self.tally.downloading += 1
            downloads.start_soon(self._download, outcome.generation, done)
            return
        self._report(done)

    async def _download(self, generation: Any, done: Done) -> None:
        path = self.args.directory / f"{done.index}-{_safe(generation.id)}.{_ext(done.url)}"
        try:
            if path.is_file():  # downloads are atomic: a file that is there is whole
                done.already_there = True
            else:
                async with self.limiter:
                    await generation.download(path)
            done.path = str(path)
        except (KolboError, OSError) as exc:
            done.fail(exc)
            done.download_failed = True
        finally:
            self.tally.downloading -= 1
        try:
            self._report(done)
        except Exception as error:
            self._failed(error)

    def _failed(self, error: Exception) -> None:
        """Stop the run on `error` (a closed stdout, ...), raised as itself by `go`, never
        inside an exception group."""
        self.failure = self.failure or error
        if self.scope is not None:
            self.scope.cancel()

    def _report(self, done: Done) -> None:
        self.done.append(done)
        self.tally.add(done)
        self.view.outcome(done, self.tally)

    def exit_code(self) -> int:
        codes = [_code(done) for done in self.done]
        return max(codes, default=EXIT_OK)

    def summary(self) -> str:
        tally = self.tally
        counts = tally.counts()
        text = (
            f"kolbo: {tally.total} item(s): {counts['completed']} completed, "
            f"{counts['failed']} failed; {tally.credits:g} credits charged"
        )
        if self.args.directory is not None:
            text += f"; {tally.saved} video(s) saved in {self.args.download_dir}"
            if tally.already_there:
                text += f" ({tally.already_there} already there)"
        return text + "\n"

    def interrupted(self, how: str) -> str:
        """What Ctrl-C (or SIGTERM) leaves behind, and the command that picks it up."""
        counts = self.tally.counts()
        left = len(self.unfinished)
        text = (
            f"kolbo: {how}: nothing more is sent. {self.tally.finished} of {self.tally.total} "
            f"item(s) ended ({counts['failed']} failed), {left} still running at Kolbo "
            "(already paid for; nothing was cancelled).\n"
        )
        args = self.args
        if args.json and how != "stopped":
            for gid in self.unfinished:
                with contextlib.suppress(BrokenPipeError):
                    line({"generation_id": gid, "state": "interrupted", "ok": False}, self.view.out)
        if args.sandbox:
            return text + (
                "kolbo: a --sandbox run's generations end with it, so it cannot be resumed; "
                "to try resuming, run `kolbo sandbox` and point KOLBO_BASE_URL at it.\n"
            )
        if args.journal_path is None:
            ids = ", ".join(self.unfinished[:10]) + (", ..." if left > 10 else "")
            follow = f" Follow them with kolbo status ID --wait: {ids}." if left else ""
            return text + (
                "kolbo: this run kept no journal, so running it again pays for every item "
                f"again.{follow} Pass --journal PATH to make a batch resumable.\n"
            )
        command = "kolbo " + shlex.join(args.argv)
        stdin = " (with the same input on stdin)" if args.file == "-" else ""
        return text + (
            f"kolbo: the journal {args.journal} is up to date. Resume{stdin} with the same "
            "command (nothing is paid for twice; saved videos are not fetched again):\n"
            f"  {command}\n"
        )


def _done(outcome: BatchOutcome[Any], item: Item) -> Done:
    gen, status, error = outcome.generation, outcome.status, outcome.error
    done = Done(outcome.index, item.line, "error", gen.id if gen is not None else None)
    if gen is not None and gen.submission is not None:
        done.credits_charged = gen.submission.credits_charged
    if status is not None and status.result is not None and status.result.urls:
        done.url = status.result.urls[0]
    if status is not None and status.done:
        done.state = status.state
        if status.state == "completed" and not done.url:
            done.state = "filtered"
    elif gen is None:
        unknown = isinstance(error, SubmissionOutcomeUnknownError)
        done.state = "outcome_unknown" if unknown else "not_sent"
    if error is not None:
        done.fail(error)
    return done


def _code(done: Done) -> int:
    """0 for a video ready; 1 for an item that failed on its own; 3 for an API or network
    error (a rerun may do better)."""
    exc = done.exception
    if done.ok:
        return EXIT_OK
    if done.download_failed:
        return EXIT_API
    if exc is None or isinstance(exc, (GenerationFailedError, InvalidRequestError)):
        return EXIT_FAILED
    if isinstance(exc, APIStatusError):
        refused = exc.status_code in _REFUSED_STATUSES
        mine = refused and not isinstance(exc, InsufficientCreditsError)
        return EXIT_FAILED if mine else EXIT_API
    if isinstance(exc, APIConnectionError):
        return EXIT_API
    # A plain KolboError: held back unsent (--max-credits, an account error's stop).
    return EXIT_FAILED if type(exc) is KolboError else EXIT_API


def _safe(generation_id: str) -> str:
    # The id comes from the server: keep it from naming a path outside the directory.
    return re.sub(r"[^A-Za-z0-9_-]", "_", generation_id) or "generation"


def _ext(url: str | None) -> str:
    suffix = Path(urlsplit(url or "").path).suffix.lstrip(".").lower()
    return suffix if re.fullmatch(r"[a-z0-9]{1,5}", suffix) else "mp4"


class _Warnings(logging.Handler):
    """The SDK's warnings during a batch, in the view (not under a live table's feet).

    The warning that a stopped batch left generations running is left out: the command says
    it in its own words, with the command that resumes.
    """

    def __init__(self, shown: View) -> None:
        super().__init__(logging.WARNING)
        self._view = shown

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if text.startswith("A batch stopped before reporting"):
                return
            self._view.message(f"kolbo: warning: {cli_words(text)}\n")
        except Exception:  # a warning must never break the batch
            self.handleError(record)

