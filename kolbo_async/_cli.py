"""The `kolbo` command: models, generate, status, download, cancel, credits, sandbox.

Built on the public SDK only. Exit codes: 0 success, 1 generation failed or cancelled,
2 usage error, 3 API or network error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

import anyio

from ._client import AsyncKolbo
from ._exceptions import (
    GenerationFailedError,
    GenerationTimeoutError,
    InvalidRequestError,
    KolboError,
)
from ._handles import AsyncGeneration
from ._models import GenerationStatus, Model

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_API, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
#: Simulated seconds per real second in sandbox mode: a 90 s generation takes 3 s.
SANDBOX_SPEED = 30.0
SANDBOX_KEY = "kolbo_live_sandbox"


class Interrupted(Exception):
    """Ctrl-C while a generation was known: carries its id so the user can re-attach."""

    def __init__(self, generation_id: str | None) -> None:
        super().__init__(generation_id)
        self.generation_id = generation_id


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
    gen.add_argument("--duration", type=float, metavar="N", help="seconds of video")
    gen.add_argument("--aspect-ratio", metavar="W:H", help='e.g. "16:9", "9:16", "1:1"')
    gen.add_argument("--no-enhance", action="store_true", help="send the prompt as written")
    gen.add_argument("--no-wait", action="store_true", help="print the id and return at once")
    gen.add_argument("--download", metavar="PATH", help="save the video to PATH when done")
    gen.add_argument("--timeout", type=float, default=1800.0, help="give up waiting after N s")
    gen.add_argument("--json", action="store_true", help="machine-readable output only")

    status = commands.add_parser("status", help="show a generation's status")
    status.add_argument("id", help="the generation id")
    status.add_argument("--wait", action="store_true", help="follow it until it ends")
    status.add_argument("--json", action="store_true", help="machine-readable output only")

    download = commands.add_parser("download", help="save a finished generation's video")
    download.add_argument("id", help="the generation id")
    download.add_argument("path", help="where to save it")
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
    sandbox.add_argument("--port", type=int, default=8765)
    sandbox.add_argument(
        "--speed", type=float, default=_sandbox_speed(SANDBOX_SPEED), help="clock speed-up"
    )
    sandbox.add_argument("--require-key", metavar="KEY", help="accept only this API key")
    return parser


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Run `kolbo` with `argv`; return the exit code."""
    out = stdout or sys.stdout
    err = sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sandbox":
        return _serve_sandbox(args, out)
    try:
        return anyio.run(_run, args, out, err)
    except Interrupted as stop:
        if stop.generation_id:
            err.write(
                f"kolbo: interrupted; generation {stop.generation_id} goes on at Kolbo. "
                f"Follow it with: kolbo status {stop.generation_id} --wait\n"
            )
        else:
            err.write("kolbo: interrupted\n")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        err.write("kolbo: interrupted\n")
        return EXIT_INTERRUPTED
    except InvalidRequestError as exc:
        err.write(f"kolbo: error: {exc}\n")
        return EXIT_USAGE
    except GenerationFailedError as exc:
        err.write(f"kolbo: {exc}\n")
        return EXIT_FAILED
    except KolboError as exc:
        err.write(f"kolbo: error: {exc}\n")
        return EXIT_API
    except OSError as exc:
        err.write(f"kolbo: error: {exc}\n")
        return EXIT_API


async def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async with _client(args) as client:
        command: Callable[[AsyncKolbo, argparse.Namespace, TextIO, TextIO], Awaitable[int]] = {
            "models": _models,
            "generate": _generate,
            "status": _status,
            "download": _download,
            "cancel": _cancel,
            "credits": _credits,
        }[args.command]
        return await command(client, args, out, err)


def _client(args: argparse.Namespace) -> AsyncKolbo:
    if not args.sandbox:
        return AsyncKolbo(base_url=args.base_url)
    from .testing import Simulator

    # A fresh seed per run, so generation ids differ from one demo to the next.
    sim = Simulator(speed=_sandbox_speed(SANDBOX_SPEED), seed=random.randrange(2**32))
    return sim.client(SANDBOX_KEY)


def _sandbox_speed(default: float) -> float:
    # KOLBO_SANDBOX_SPEED lets test suites run the sandbox faster than the demo's pace.
    try:
        return float(os.environ.get("KOLBO_SANDBOX_SPEED", default))
    except ValueError:
        return default


async def _models(client: AsyncKolbo, args: argparse.Namespace, out: TextIO, _: TextIO) -> int:
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


async def _generate(client: AsyncKolbo, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    options: dict[str, Any] = {
        "model": args.model,
        "duration": args.duration,
        "aspect_ratio": args.aspect_ratio,
        "enhance_prompt": False if args.no_enhance else None,
    }
    if args.image:
        gen = await client.videos.from_image(args.image, prompt=args.prompt, **options)
    else:
        gen = await client.videos.generate(args.prompt, **options)
    if args.no_wait:
        if args.json:
            _dump(dict(gen.submission.raw) if gen.submission else {"generation_id": gen.id}, out)
        else:
            out.write(f"{gen.id}\n")
        return EXIT_OK
    if not args.json:
        err.write(f"Generation {gen.id} submitted")
        if gen.submission and gen.submission.credits_charged is not None:
            err.write(f" ({_num(gen.submission.credits_charged)} credits)")
        err.write("\n")
    return await _follow(gen, args, out, err, download=args.download, timeout=args.timeout)


async def _status(client: AsyncKolbo, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    gen = client.generations.attach(args.id)
    if args.wait:
        return await _follow(gen, args, out, err, download=None, timeout=None)
    status = await gen.status()
    if args.json:
        _dump(dict(status.raw), out)
    else:
        out.write(_describe(status) + "\n")
    return EXIT_OK if not status.failed else EXIT_FAILED


async def _follow(
    gen: AsyncGeneration,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    *,
    download: str | None,
    timeout: float | None,
) -> int:
    from ._cli_progress import reporter

    report = reporter(err, quiet=args.json)
    final: GenerationStatus | None = None
    try:
        async with gen.progress(timeout=timeout) as updates:
            async for final in updates:
                report.status(final)
        assert final is not None
        report.done()
        if final.failed:
            if args.json:
                _dump(dict(final.raw), out)
            reason = final.error or (final.failure.message if final.failure else None)
            if final.state == "completed":
                reason = "completed without any video (a content filter removed it)"
            raise GenerationFailedError(
                f"generation {gen.id} {final.state}" + (f": {reason}" if reason else ""),
                status=final,
            )
        path = None
        if download:
            path = await gen.download(download, on_progress=report.bytes, timeout=timeout)
            report.done()
    except (KeyboardInterrupt, anyio.get_cancelled_exc_class()):
        report.done()
        raise Interrupted(gen.id) from None
    except GenerationTimeoutError:
        report.done()
        raise
    if args.json:
        _dump({**dict(final.raw), **({"path": str(path)} if path else {})}, out)
    else:
        assert final.result is not None
        out.write(f"{path if path else final.result.url}\n")
    return EXIT_OK


async def _download(client: AsyncKolbo, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ._cli_progress import reporter

    gen = client.generations.attach(args.id)
    report = reporter(err, quiet=False)
    method = gen.download_thumbnail if args.thumbnail else gen.download
    try:
        path = await method(args.path, overwrite=args.overwrite, on_progress=report.bytes)
    finally:
        report.done()
    out.write(f"{path}\n")
    return EXIT_OK


async def _cancel(client: AsyncKolbo, args: argparse.Namespace, out: TextIO, _: TextIO) -> int:
    status = await client.generations.attach(args.id).cancel()
    if args.json:
        _dump(dict(status.raw), out)
    else:
        out.write(_describe(status) + "\n")
    return EXIT_OK


async def _credits(client: AsyncKolbo, args: argparse.Namespace, out: TextIO, _: TextIO) -> int:
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

    sim = Simulator(speed=args.speed, api_key=args.require_key, seed=random.randrange(2**32))
    try:
        with sim.serve(host=args.host, port=args.port) as base_url:
            out.write(
                f"Kolbo sandbox at {base_url} (clock x{_num(args.speed)}); CDN at {sim.cdn_url}\n"
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


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
