"""The `kolbo` command: models, generate, batch, status, download, cancel, credits, sandbox.

Built on the public SDK only. Exit codes: 0 success, 1 generation failed or cancelled,
2 usage error (a missing API key too), 3 API or network error, 130 interrupted (Ctrl-C),
141 stdout closed early (`| head`), closed (`>&-`) or full, 143 terminated (SIGTERM).

Nothing is paid for a mistake in the command line: every argument is checked before the
generation POST. Once a generation is paid for, its id is never lost: `--json` prints it on a
line of its own as soon as Kolbo answers, and every way out (failure, timeout, download error,
Ctrl-C, closed stdout) names it with the commands that reach it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import threading
from collections.abc import Sequence
from contextlib import suppress
from types import FrameType
from typing import Any, TextIO, cast

import anyio

from kolbo_async import (
    AsyncKolbo,
    GenerationFailedError,
    InvalidRequestError,
    KolboError,
    RateLimits,
)

from ._cli_batch import batch, check_batch
from ._cli_checks import DownloadTarget, api_key_is_set, sandbox_speed
from ._cli_commands import COMMANDS, Command, serve_sandbox
from ._cli_outcome import (
    EXIT_API,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Session,
    broken_pipe,
    cli_words,
    fail,
    interrupted,
    is_broken,
    say,
    silence,
)
from ._cli_parser import SANDBOX_SPEED, build_parser
from ._cli_routes import call_of
from ._cli_streams import Stream
from ._cli_upload import check_upload, upload

__all__ = ["main"]

SANDBOX_KEY = "kolbo_live_sandbox"


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, owns_process: bool = False
) -> int:
    """Run `kolbo` with `argv`; return the exit code.

    `owns_process` (the console entry): a second Ctrl-C may end the process itself.
    """
    out = cast(TextIO, Stream(stdout or sys.stdout, strict=True))
    err = cast(TextIO, Stream(sys.stderr, strict=False))
    args = build_parser().parse_args(argv)
    # As typed, for the command that resumes an interrupted batch.
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.owns_process = owns_process
    session = Session(as_json=bool(getattr(args, "json", False)))
    previous = _terminate_like_ctrl_c(session)
    try:
        code = _main(args, session, out, err)
        out.flush()
    except BrokenPipeError:
        code = broken_pipe(session, out, err)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if is_broken(out):
        silence(out)
    return code


def _terminate_like_ctrl_c(session: Session) -> Any:
    """Make SIGTERM (`timeout`, `kill`, a CI runner) act as Ctrl-C; return the old handler.

    Left to its default, SIGTERM ends the process at once, losing the id of a generation whose
    POST is on the wire. As Ctrl-C, the first one waits for Kolbo's answer and names the id,
    and a second one (SIGTERM or SIGINT) quits at once. Exit code 143, as a shell expects.
    """

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        session.signal = signal.SIGTERM
        # asyncio's runner installs its own SIGINT handler (cancel first, then quit): use
        # whichever SIGINT handler is in place now, so both signals count alike.
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):
            handler = signal.default_int_handler
        handler(signal.SIGINT, frame)

    try:
        return signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (main() called from a worker): leave it be
        return None


def _main(args: argparse.Namespace, session: Session, out: TextIO, err: TextIO) -> int:
    try:
        _check(args)
        if args.command == "sandbox":
            return serve_sandbox(args, out)
        try:
            code: int = anyio.run(_run, args, session, out, err)
        finally:
            if args.owns_process and not isinstance(
                signal.getsignal(signal.SIGINT), (int, type(None))
            ):
                with suppress(ValueError):
                    signal.signal(signal.SIGINT, signal.default_int_handler)
        return code
    except BrokenPipeError:
        raise
    except (KeyboardInterrupt, asyncio.CancelledError):
        # asyncio's runner turns the first Ctrl-C into a cancellation of the run, and re-raises
        # it as KeyboardInterrupt once the run has unwound.
        return interrupted(session, out, err)
    except InvalidRequestError as exc:
        return fail(session, exc, out, err, EXIT_USAGE)
    except GenerationFailedError as exc:
        say(err, f"kolbo: {cli_words(str(exc))}\n")
        return EXIT_FAILED
    except (KolboError, OSError) as exc:
        return fail(session, exc, out, err, EXIT_API)
    except BaseException as exc:
        if not _pressed(exc):
            raise
        return interrupted(session, out, err)


def _quiet_about_ctrl_c(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's handler of errors nobody awaited, minus a second Ctrl-C: raised inside a
    task, it ends the run, and asyncio's shutdown would then also log it as unhandled."""
    exc = context.get("exception")
    if exc is None or not _pressed(exc):
        loop.default_exception_handler(context)


def _pressed(exc: BaseException) -> bool:
    """Whether `exc` is a Ctrl-C that a task group wrapped: a second Ctrl-C ("quit now") is
    raised inside whichever task runs, and reaches here in its task groups' exception group."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    inner = getattr(exc, "exceptions", None)  # a BaseExceptionGroup (its backport on 3.10)
    return isinstance(inner, tuple) and any(_pressed(leaf) for leaf in inner)


def _check(args: argparse.Namespace) -> None:
    """Every check of the command line that needs no request: all of it, before any POST."""
    args.target = None
    # An empty value is a mistake, never "not given": `--image "$URL"` with $URL unset must
    # not pay for a text-to-video instead.
    for option in ("base_url", "image", "model", "aspect_ratio", "resolution", "quality"):
        value = getattr(args, option, None)
        if isinstance(value, str) and not value.strip():
            raise InvalidRequestError("--" + option.replace("_", "-"), "must not be empty")
    if call_of(args) is not None and args.download is not None:
        if args.no_wait:
            raise InvalidRequestError("--download", "cannot be used with --no-wait")
        args.target = DownloadTarget(args.download, option="--download", overwrite=args.overwrite)
        # Several images to one file name are saved beside it, numbered: check those too.
        count = getattr(args, "num_images", None) or 1
        if count > 1:
            args.target.check_numbered(count)
    elif args.command == "download":
        args.target = DownloadTarget(args.path, option="path", overwrite=args.overwrite)
    elif args.command == "batch":
        check_batch(args)
    elif args.command == "upload":
        check_upload(args)
    if args.command == "sandbox" and args.speed is not None:
        args.sandbox_speed = args.speed
    elif args.command == "sandbox" or args.sandbox:
        args.sandbox_speed = sandbox_speed(SANDBOX_SPEED)
    args.rate_limits = _rate_limits(args)


def _rate_limits(args: argparse.Namespace) -> RateLimits:
    """The client's pacing: Kolbo's documented limits, in simulated minutes in the sandbox.

    A sandbox clock x30 allows 30 times the requests per real minute (a batch of 50 would
    otherwise take 5 real minutes to submit).
    """
    limits = RateLimits()
    if not args.sandbox:
        return limits
    speed = args.sandbox_speed
    return RateLimits(
        generations_per_minute=max(1, round(limits.generations_per_minute * speed)),
        requests_per_minute=max(1, round(limits.requests_per_minute * speed)),
    )


#: Seconds a second Ctrl-C leaves the run to unwind before `kolbo` ends the process itself.
QUIT_NOW_WITHIN = 3.0


def _second_press_ends_the_process() -> None:
    """From the second Ctrl-C (or SIGTERM) on, end the process if the run has not ended
    within `QUIT_NOW_WITHIN` seconds.

    The second press raises KeyboardInterrupt inside whichever task runs; asyncio's shutdown
    then cancels every task and waits for them all. A wait whose waker that press ended
    never returns, and the process spun (or slept) in that shutdown for good, deaf to more
    presses and to SIGTERM. The journal's writes are transactions: nothing is half-written.
    """
    runner = signal.getsignal(signal.SIGINT)
    if not callable(runner):
        return
    presses = [0]

    def on_sigint(signum: int, frame: FrameType | None) -> Any:
        presses[0] += 1
        if presses[0] == 2:
            timer = threading.Timer(QUIT_NOW_WITHIN, _quit_now)
            timer.daemon = True
            timer.start()
        return runner(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)


def _quit_now() -> None:
    with suppress(OSError):  # straight to the descriptor: the stuck thread may hold a lock
        os.write(2, b"\nkolbo: quit at once (second Ctrl-C). Anything not sent stays unsent; "
                    b"a journal is up to date (run the same command to resume).\n")
    os._exit(EXIT_INTERRUPTED)


async def _run(args: argparse.Namespace, session: Session, out: TextIO, err: TextIO) -> int:
    asyncio.get_running_loop().set_exception_handler(_quiet_about_ctrl_c)  # anyio.run: asyncio
    if args.owns_process:
        with suppress(ValueError):  # not the main thread: no signal is ours to watch
            _second_press_ends_the_process()
    client = _client(args)
    try:
        code = await _command(args.command)(client, args, session, out, err)
    except KeyboardInterrupt:
        # A second Ctrl-C means "quit now"; closing the client would wait for a paid POST
        # still on the wire. The process is ending: asyncio's shutdown cancels what is left.
        raise
    except BaseException as exc:
        if _pressed(exc):  # the same, raised inside a task and wrapped by its task groups
            raise
        await client.aclose()
        raise
    await client.aclose()
    return code


def _client(args: argparse.Namespace) -> AsyncKolbo:
    if not args.sandbox:
        api_key_is_set()  # a usage error (exit 2), not an API error (3): nothing was sent
        return AsyncKolbo(base_url=args.base_url)
    from kolbo_async.testing import Simulator

    # A fresh seed per run, so generation ids differ from one demo to the next.
    sim = Simulator(speed=args.sandbox_speed, seed=random.randrange(2**32))
    return sim.client(SANDBOX_KEY, rate_limits=args.rate_limits)


def _command(name: str) -> Command:
    return {"batch": batch, "upload": upload}.get(name) or COMMANDS[name]


def run() -> None:
    """Console-script entry point."""
    try:
        code: int | str | None = main(owns_process=True)
    except SystemExit as stop:  # argparse's --help and usage errors
        code = stop.code
    except KeyboardInterrupt:  # Ctrl-C before the run began (parsing): nothing was sent
        code = interrupted(
            Session(as_json=False),
            cast(TextIO, Stream(None, strict=True)),
            cast(TextIO, Stream(sys.stderr, strict=False)),
        )
    # argparse writes to sys.stdout itself, which may be closed (None), full or a gone reader;
    # its buffered text only fails here, at the final flush.
    out = cast(TextIO, Stream(sys.stdout, strict=True))
    try:
        out.flush()
    except BrokenPipeError:  # `kolbo --help | head -1`
        code = broken_pipe(Session(as_json=False), out, cast(TextIO, Stream(None, strict=False)))
    with suppress(ValueError):  # not the main thread
        # Everything is said: a Ctrl-C from here on (Python's exit runs its atexit hooks)
        # ends the process at once, as killed by SIGINT, instead of a traceback of them.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(code)
