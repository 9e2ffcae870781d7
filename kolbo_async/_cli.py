"""The `kolbo` command: models, generate, status, download, cancel, credits, sandbox.

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
import json
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from types import FrameType
from typing import Any, TextIO, cast

import anyio

from ._cli_checks import (
    DownloadTarget,
    api_key_is_set,
    duration_seconds,
    port,
    positive_seconds,
    positive_speed,
    sandbox_speed,
)
from ._cli_outcome import (
    Session,
    broken_pipe,
    cli_words,
    fail,
    interrupted,
    is_broken,
    line,
    say,
    silence,
)
from ._cli_streams import Stream
from ._client import AsyncKolbo
from ._exceptions import (
    GenerationFailedError,
    InvalidRequestError,
    KolboError,
)
from ._handles import AsyncGeneration
from ._models import GenerationStatus, Model

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_API = 0, 1, 2, 3
#: Simulated seconds per real second in sandbox mode: a 90 s generation takes 3 s.
SANDBOX_SPEED = 30.0
SANDBOX_KEY = "kolbo_live_sandbox"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `kolbo`."""
    parser = argparse.ArgumentParser(
        prog="kolbo",
        description="Generate videos with Kolbo from the command line.",
        epilog="The API key comes from $KOLBO_API_KEY. Try it with no key: "
        'kolbo --sandbox generate "A drone over snowy peaks" --download drone.mp4',
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="run against an in-process simulator of Kolbo: no key, no network",
    )
    parser.add_argument("--base-url", help="API base URL (default: $KOLBO_BASE_URL or Kolbo's)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = commands.add_parser("models", help="list the models you can generate with")
    models.add_argument("--type", default="video", choices=["video", "video_from_image"])
    models.add_argument("--json", action="store_true", help="machine-readable output only")

    gen = commands.add_parser("generate", help="generate a video from a prompt (or an image)")
    gen.add_argument("prompt", help="what the video shows (with --image: how it moves)")
    gen.add_argument("--image", metavar="URL", help="animate this image instead")
    gen.add_argument("--model", metavar="ID", help="a model identifier (default: Smart Select)")
    gen.add_argument(
        "--duration", type=duration_seconds, metavar="N", help="seconds of video (at least 1)"
    )
    gen.add_argument("--aspect-ratio", metavar="W:H", help='e.g. "16:9", "9:16", "1:1"')
    gen.add_argument("--no-enhance", action="store_true", help="send the prompt as written")
    gen.add_argument("--no-wait", action="store_true", help="print the id and return at once")
    gen.add_argument(
        "--download",
        metavar="PATH",
        help="save the video to PATH when done (a directory: saved there as ID.mp4)",
    )
    gen.add_argument(
        "--overwrite", action="store_true", help="let --download replace an existing file"
    )
    gen.add_argument(
        "--timeout",
        type=positive_seconds,
        default=1800.0,
        metavar="N",
        help="give up waiting after N s (default 1800); the generation goes on at Kolbo",
    )
    gen.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output only: a JSON line with the id as soon as Kolbo answers, "
        "then a JSON line with the outcome",
    )

    status = commands.add_parser("status", help="show a generation's status")
    status.add_argument("id", help="the generation id")
    status.add_argument("--wait", action="store_true", help="follow it until it ends")
    status.add_argument("--json", action="store_true", help="machine-readable output only")

    download = commands.add_parser("download", help="save a finished generation's video")
    download.add_argument("id", help="the generation id")
    download.add_argument("path", help="where to save it (a directory: saved there as ID.mp4)")
    download.add_argument("--overwrite", action="store_true", help="replace an existing file")
    download.add_argument("--thumbnail", action="store_true", help="save the thumbnail instead")

    cancel = commands.add_parser("cancel", help="cancel a running generation")
    cancel.add_argument("id", help="the generation id")
    cancel.add_argument("--json", action="store_true", help="machine-readable output only")

    credits = commands.add_parser("credits", help="show your credit balance")
    credits.add_argument("--json", action="store_true", help="machine-readable output only")

    sandbox = commands.add_parser(
        "sandbox", help="serve the Kolbo simulator over HTTP until Ctrl-C"
    )
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=port, default=8765)
    sandbox.add_argument(
        "--speed",
        type=positive_speed,
        help=f"clock speed-up (default $KOLBO_SANDBOX_SPEED, else {SANDBOX_SPEED:g})",
    )
    sandbox.add_argument("--require-key", metavar="KEY", help="accept only this API key")
    return parser


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Run `kolbo` with `argv`; return the exit code."""
    out = cast(TextIO, Stream(stdout or sys.stdout, strict=True))
    err = cast(TextIO, Stream(sys.stderr, strict=False))
    args = build_parser().parse_args(argv)
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
            return _serve_sandbox(args, out)
        return anyio.run(_run, args, session, out, err)
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


def _check(args: argparse.Namespace) -> None:
    """Every check of the command line that needs no request: all of it, before any POST."""
    args.target = None
    # An empty value is a mistake, never "not given": `--image "$URL"` with $URL unset must
    # not pay for a text-to-video instead.
    for option in ("base_url", "image", "model", "aspect_ratio"):
        value = getattr(args, option, None)
        if value is not None and not value.strip():
            raise InvalidRequestError("--" + option.replace("_", "-"), "must not be empty")
    if args.command == "generate" and args.download is not None:
        if args.no_wait:
            raise InvalidRequestError("--download", "cannot be used with --no-wait")
        args.target = DownloadTarget(args.download, option="--download", overwrite=args.overwrite)
    elif args.command == "download":
        args.target = DownloadTarget(args.path, option="path", overwrite=args.overwrite)
    if args.command == "sandbox" and args.speed is not None:
        args.sandbox_speed = args.speed
    elif args.command == "sandbox" or args.sandbox:
        args.sandbox_speed = sandbox_speed(SANDBOX_SPEED)


async def _run(args: argparse.Namespace, session: Session, out: TextIO, err: TextIO) -> int:
    client = _client(args)
    try:
        code = await _COMMANDS[args.command](client, args, session, out, err)
    except KeyboardInterrupt:
        # A second Ctrl-C means "quit now"; closing the client would wait for a paid POST
        # still on the wire. The process is ending: asyncio's shutdown cancels what is left.
        raise
    except BaseException:
        await client.aclose()
        raise
    await client.aclose()
    return code


def _client(args: argparse.Namespace) -> AsyncKolbo:
    if not args.sandbox:
        api_key_is_set()  # a usage error (exit 2), not an API error (3): nothing was sent
        return AsyncKolbo(base_url=args.base_url)
    from .testing import Simulator

    # A fresh seed per run, so generation ids differ from one demo to the next.
    sim = Simulator(speed=args.sandbox_speed, seed=random.randrange(2**32))
    return sim.client(SANDBOX_KEY)


async def _models(
    client: AsyncKolbo, args: argparse.Namespace, _: Session, out: TextIO, __: TextIO
) -> int:
    models = await client.models.list(type=args.type)
    if args.json:
        _dump([dict(m.raw) for m in models], out)
    else:
        out.write(_models_table(models))
    return EXIT_OK


def _models_table(models: list[Model]) -> str:
    def join(values: Sequence[object] | None) -> str:
        return ", ".join(_num(v) if isinstance(v, float) else str(v) for v in values or ()) or "-"

    rows = [("IDENTIFIER", "NAME", "CREDITS/S", "DURATIONS (S)", "ASPECT RATIOS")]
    rows += [
        (
            m.identifier,
            (m.name or "-") + (" *" if m.recommended else ""),
            "-" if m.credit is None else _num(m.credit),
            join(m.supported_durations),
            join(m.supported_aspect_ratios),
        )
        for m in models
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.append(f"{len(models)} model(s); * recommended. Omit --model to let Kolbo choose.")
    return "\n".join(lines) + "\n"


async def _generate(
    client: AsyncKolbo, args: argparse.Namespace, session: Session, out: TextIO, err: TextIO
) -> int:
    gen = await _submit(client, args, session, err)
    if args.json:
        raw = dict(gen.submission.raw) if gen.submission else {}
        line({**raw, "generation_id": gen.id}, out)
    if args.no_wait:
        if not args.json:
            out.write(f"{gen.id}\n")
        session.reported = True
        return EXIT_OK
    if not args.json:
        text = f"Generation {gen.id} submitted"
        if gen.submission and gen.submission.credits_charged is not None:
            text += f" ({_num(gen.submission.credits_charged)} credits)"
        err.write(text + "\n")
        err.flush()
    return await _follow(gen, args, session, out, err, target=args.target, timeout=args.timeout)


async def _submit(
    client: AsyncKolbo, args: argparse.Namespace, session: Session, err: TextIO
) -> AsyncGeneration:
    """Send the generation request, holding off Ctrl-C until Kolbo has answered it.

    Once the POST is on the wire Kolbo may create and charge the generation whatever the
    client does, and leaving before the answer loses the only copy of its id. So the first
    Ctrl-C waits for the answer (bounded by the request's own timeout) and a second one quits
    at once. The command runs on asyncio (`anyio.run`'s default), whose first Ctrl-C is a
    native cancellation of the main task: an anyio shield in that task would not hold it back,
    and a task group would hold back the second Ctrl-C too. A separate task behind
    `asyncio.shield` does neither.
    """
    options: dict[str, Any] = {
        "model": args.model,
        "duration": args.duration,
        "aspect_ratio": args.aspect_ratio,
        "enhance_prompt": False if args.no_enhance else None,
    }

    async def post() -> AsyncGeneration | Exception:
        try:
            if args.image is not None:
                gen = await client.videos.from_image(args.image, prompt=args.prompt, **options)
            else:
                gen = await client.videos.generate(args.prompt, **options)
        except Exception as exc:
            # Returned, not raised: a task left behind by a second Ctrl-C must not be logged
            # with a traceback when asyncio shuts down.
            return exc
        session.generation_id = gen.id
        session.submitted = True
        return gen

    session.in_flight = True
    task = asyncio.ensure_future(post())
    try:
        answer = await asyncio.shield(task)
    except asyncio.CancelledError:
        say(
            err,
            "kolbo: interrupted while the generation request is on its way; waiting for "
            "Kolbo's answer so that its id is not lost (Ctrl-C again to quit now)\n",
        )
        await asyncio.wait({task})
        raise
    session.in_flight = False
    if isinstance(answer, Exception):
        raise answer
    return answer


async def _status(
    client: AsyncKolbo, args: argparse.Namespace, session: Session, out: TextIO, err: TextIO
) -> int:
    gen = client.generations.attach(args.id)
    if args.wait:
        session.generation_id = gen.id
        return await _follow(gen, args, session, out, err, target=None, timeout=None)
    status = await gen.status()
    if args.json:
        _dump(dict(status.raw), out)
    else:
        out.write(_describe(status) + "\n")
    return EXIT_OK if not status.failed else EXIT_FAILED


async def _follow(
    gen: AsyncGeneration,
    args: argparse.Namespace,
    session: Session,
    out: TextIO,
    err: TextIO,
    *,
    target: DownloadTarget | None,
    timeout: float | None,
) -> int:
    from ._cli_progress import reporter

    report = reporter(err, quiet=args.json)
    path = None
    try:
        async with gen.progress(timeout=timeout) as updates:
            async for status in updates:
                session.last = status
                report.status(status)
        final = session.last
        assert final is not None
        report.done()
        if final.failed:
            if args.json:
                line({**dict(final.raw), "generation_id": gen.id}, out)
            session.reported = True
            reason = final.error or (final.failure.message if final.failure else None)
            if final.state == "completed":
                reason = "completed without any video (a content filter removed it)"
            raise GenerationFailedError(
                f"generation {gen.id} {final.state}" + (f": {reason}" if reason else ""),
                status=final,
            )
        if target is not None:
            path = await gen.download(
                target.path_for(gen.id, ".mp4"),
                overwrite=target.overwrite,
                on_progress=report.bytes,
                timeout=timeout,
            )
    finally:
        report.done()
    if args.json:
        extra = {"path": str(path)} if path else {}
        line({**dict(final.raw), "generation_id": gen.id, **extra}, out)
    else:
        assert final.result is not None
        out.write(f"{path if path else final.result.url}\n")
    session.reported = True
    return EXIT_OK


async def _download(
    client: AsyncKolbo, args: argparse.Namespace, _: Session, out: TextIO, err: TextIO
) -> int:
    from ._cli_progress import reporter

    gen = client.generations.attach(args.id)
    report = reporter(err, quiet=False)
    method = gen.download_thumbnail if args.thumbnail else gen.download
    target = args.target.path_for(gen.id, ".jpg" if args.thumbnail else ".mp4")
    try:
        path = await method(target, overwrite=args.overwrite, on_progress=report.bytes)
    finally:
        report.done()
    out.write(f"{path}\n")
    return EXIT_OK


async def _cancel(
    client: AsyncKolbo, args: argparse.Namespace, _: Session, out: TextIO, __: TextIO
) -> int:
    status = await client.generations.attach(args.id).cancel()
    if args.json:
        _dump(dict(status.raw), out)
    else:
        out.write(_describe(status) + "\n")
    return EXIT_OK


async def _credits(
    client: AsyncKolbo, args: argparse.Namespace, _: Session, out: TextIO, __: TextIO
) -> int:
    credits = await client.account.credits()
    if args.json:
        _dump(dict(credits.raw), out)
    else:
        parts = [
            ("total", credits.total),
            ("plan", credits.plan_credits),
            ("packs", credits.credit_pack),
            ("redemption", credits.redemption),
        ]
        out.write("  ".join(f"{name}: {_num(value)}" for name, value in parts if value is not None))
        out.write("\n")
    return EXIT_OK


def _serve_sandbox(args: argparse.Namespace, out: TextIO) -> int:
    from .testing import Simulator

    speed = args.sandbox_speed
    sim = Simulator(speed=speed, api_key=args.require_key, seed=random.randrange(2**32))
    try:
        with sim.serve(host=args.host, port=args.port) as base_url:
            out.write(
                f"Kolbo sandbox at {base_url} (clock x{_num(speed)}); CDN at {sim.cdn_url}\n"
                f"  export KOLBO_BASE_URL={base_url} "
                f"KOLBO_API_KEY={args.require_key or 'kolbo_live_YOUR_API_KEY'}\n"
                "Ctrl-C to stop.\n"
            )
            out.flush()
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        out.write("sandbox stopped\n")
        return EXIT_OK
    except (ImportError, OSError) as exc:
        sys.stderr.write(f"kolbo: error: {exc}\n")
        return EXIT_API


def _describe(status: GenerationStatus) -> str:
    text = f"{status.generation_id}: {status.state} {status.progress}%"
    if status.result is not None and status.result.urls:
        text += "\n" + "\n".join(status.result.urls)
    if status.error:
        text += f" ({status.error})"
    return text


def _num(value: float) -> str:
    return f"{value:g}"


def _dump(data: object, out: TextIO) -> None:
    out.write(json.dumps(data, indent=2, default=str) + "\n")


_COMMANDS: dict[
    str, Callable[[AsyncKolbo, argparse.Namespace, Session, TextIO, TextIO], Awaitable[int]]
] = {
    "models": _models,
    "generate": _generate,
    "status": _status,
    "download": _download,
    "cancel": _cancel,
    "credits": _credits,
}


def run() -> None:
    """Console-script entry point."""
    try:
        code: int | str | None = main()
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
    sys.exit(code)
