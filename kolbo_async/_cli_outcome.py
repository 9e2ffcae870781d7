"""How a `kolbo` run ends once it may have paid for something: the id is never lost.

A generation is charged when Kolbo accepts its POST. Every way a run can end after that
(failure, timeout, download error, Ctrl-C, a reader that closed stdout) names the generation
and the commands that reach it; nothing here cancels anything at Kolbo.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from collections.abc import Callable
from typing import TextIO

from kolbo_async import GenerationStatus

__all__ = [
    "EXIT_API",
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "Session",
    "broken_pipe",
    "cli_words",
    "fail",
    "interrupted",
    "is_broken",
    "line",
    "say",
    "silence",
    "tell_id",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_API = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
#: 128 + SIGTERM, as a shell reports any process ended by `kill` or `timeout`.
EXIT_TERMINATED = 143
#: 128 + SIGPIPE, what a shell shows for any tool whose reader went away (`kolbo ... | head`):
#: `set -o pipefail` scripts see kolbo as they see `grep`, and it is never taken for 1, 2 or 3.
EXIT_BROKEN_PIPE = 141


class Session:
    """What a run has sent and paid for so far: the messages of a run that ends early use it."""

    __slots__ = (
        "generation_id",
        "in_flight",
        "json",
        "last",
        "note",
        "reported",
        "signal",
        "submitted",
    )

    def __init__(self, *, as_json: bool) -> None:
        #: `--json`: the outcome goes to stdout as a JSON line too.
        self.json = as_json
        #: The generation this run follows, once known.
        self.generation_id: str | None = None
        #: This run created (and paid for) that generation.
        self.submitted = False
        #: A generation POST was started and its answer has not come back.
        self.in_flight = False
        #: The last status seen.
        self.last: GenerationStatus | None = None
        #: The outcome is on stdout (a URL, a path, or the final JSON line).
        self.reported = False
        #: What an interrupted run says instead of the one-generation message (a batch's
        #: summary and the command that resumes it), given how it was interrupted.
        self.note: Callable[[str], str] | None = None
        #: The signal that interrupts the run: SIGINT (Ctrl-C), or SIGTERM (`timeout`, `kill`).
        self.signal: int = signal.SIGINT


def line(data: object, out: TextIO) -> None:
    """Write `data` as one JSON line and flush it.

    Flushed at once so that a reader (or a log) has a paid generation's id even if the run
    dies later.
    """
    out.write(json.dumps(data, default=str) + "\n")
    out.flush()


def say(err: TextIO, text: str) -> None:
    """Write a message for the user, ignoring a closed stderr.

    A closed stderr must not turn a message about a paid generation into a traceback.
    """
    try:
        err.write(text)
        err.flush()
    except (OSError, ValueError):
        pass


def fail(session: Session, exc: Exception, out: TextIO, err: TextIO, code: int) -> int:
    """Report `exc` (and the paid generation it leaves behind, if any); return `code`."""
    gid = session.generation_id
    # stderr first: stdout may be the stream that just failed, and each is written on its own.
    say(err, f"kolbo: error: {cli_words(str(exc))}\n")
    if gid and session.submitted and not session.reported:
        tell_id(f"kolbo: {_whereabouts(session, gid)}\n", out, err, session)
    if gid and session.json and not session.reported:
        last = dict(session.last.raw) if session.last else {}
        _line_if_possible({**last, "generation_id": gid, "error": str(exc)}, out)
    return code


_SDK_WORDS = [
    # The SDK's messages name Python calls; a command-line user needs the command instead.
    (re.compile(r"client\.generations\.attach\('([^']*)'\)"), r"kolbo status \1 --wait"),
    (re.compile(r"pass overwrite=True"), "add --overwrite"),
    (re.compile(r"pass api_key=\.\.\. or set"), "set"),
]


def cli_words(text: str) -> str:
    """An SDK message in the command's words (`--overwrite`, not `overwrite=True`)."""
    for pattern, words in _SDK_WORDS:
        text = pattern.sub(words, text)
    return text


def is_broken(stream: TextIO) -> bool:
    """Whether writes to `stream` (a `Stream`) are known to go nowhere."""
    return bool(getattr(stream, "broken", False))


def tell_id(text: str, out: TextIO, err: TextIO, session: Session) -> None:
    """Say `text` (which names a paid generation) on stderr, or on stdout if stderr is gone.

    With stderr closed (`2>&-`) the message naming a paid generation would be lost; stdout
    then carries it (as a JSON line with `--json`), so that the id reaches one of the two.
    """
    say(err, text)
    if not is_broken(err):
        return
    data: object = {"generation_id": session.generation_id, "message": text.strip()}
    try:
        if session.json:
            line(data, out)
        else:
            out.write(text)
            out.flush()
    except BrokenPipeError:
        pass


def _line_if_possible(data: object, out: TextIO) -> None:
    # stderr has the id already; `main` quiets the interpreter's final flush.
    with contextlib.suppress(BrokenPipeError):
        line(data, out)


def interrupted(session: Session, out: TextIO, err: TextIO) -> int:
    """Report Ctrl-C: what may have been paid for, and how to reach it; return 130."""
    gid = session.generation_id
    how = "terminated" if session.signal == signal.SIGTERM else "interrupted"
    if session.note is not None:
        say(err, session.note(how))
        return 128 + session.signal
    if gid:
        tell_id(f"kolbo: {how}; {_whereabouts(session, gid)}\n", out, err, session)
    if gid and session.json and not session.reported:
        last = dict(session.last.raw) if session.last else {}
        _line_if_possible({**last, "generation_id": gid, "error": how}, out)
    if gid:
        pass  # named above
    elif session.in_flight:
        say(
            err,
            f"kolbo: {how} before Kolbo answered the generation request: a generation may "
            "have been created and charged, and its id is unknown (Kolbo has no call to list "
            "generations). Check your balance with `kolbo credits` before you try again.\n",
        )
    else:
        say(err, f"kolbo: {how}\n")
    return 128 + session.signal


def _whereabouts(session: Session, gid: str) -> str:
    """Where the generation stands and the commands that reach it (nothing is ever cancelled)."""
    paid = " was created and charged, and" if session.submitted else ""
    if session.last is not None and session.last.done:
        return (
            f"generation {gid}{paid} ended {session.last.state}. "
            f"Save it with: kolbo download {gid} PATH"
        )
    return (
        f"generation {gid}{paid} goes on at Kolbo. Follow it with: kolbo status {gid} --wait "
        f"(then: kolbo download {gid} PATH)"
    )


def broken_pipe(session: Session, out: TextIO, err: TextIO) -> int:
    """Whoever read stdout has gone (`kolbo ... | head`): stop quietly, as Unix tools do."""
    silence(out)
    gid = session.generation_id
    if gid and session.submitted and not (session.last is not None and session.last.done):
        # The reader left before the generation ended: its id must not be lost with it.
        say(err, f"kolbo: stdout closed; {_whereabouts(session, gid)}\n")
    return EXIT_BROKEN_PIPE


def silence(out: TextIO) -> None:
    """Point a failed stdout at /dev/null, so the interpreter's final flush cannot fail again.

    (The recipe of Python's signal module docs.)
    """
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    if fd >= 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
