"""The `kolbo` commands that follow one generation (or none): models, generate, status,
download, cancel, credits, and the `sandbox` server.

Built on the public SDK only; `_cli` parses, checks and dispatches to them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TextIO

from kolbo_async import (
    AsyncGeneration,
    AsyncKolbo,
    GenerationFailedError,
    GenerationStatus,
    InvalidRequestError,
    Model,
)

from ._cli_checks import DownloadTarget
from ._cli_outcome import EXIT_API, EXIT_FAILED, EXIT_OK, Session, line, say
from ._cli_routes import call_of, renamed, text_or_image_to_video
from ._cli_save import save

__all__ = ["COMMANDS", "Command", "num", "serve_sandbox"]

Command = Callable[[AsyncKolbo, argparse.Namespace, Session, TextIO, TextIO], Awaitable[int]]


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
        return ", ".join(num(v) if isinstance(v, float) else str(v) for v in values or ()) or "-"

    # A video model's credit is per second, an image model's per image: the header says
    # which when every row agrees, else each price does.
    units = {"/image" if m.per_image else "/s" for m in models}
    header = "CREDITS" + ("/IMAGE" if units == {"/image"} else "/S" if len(units) < 2 else "")

    def price(m: Model) -> str:
        if m.credit is None:
            return "-"
        return num(m.credit) + ("" if len(units) < 2 else "/image" if m.per_image else "/s")

    rows = [("IDENTIFIER", "NAME", header, "DURATIONS (S)", "ASPECT RATIOS")]
    rows += [
        (
            m.identifier,
            (m.name or "-") + (" *" if m.recommended else ""),
            price(m),
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
            text += f" ({num(gen.submission.credits_charged)} credits)"
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
    call = call_of(args) or text_or_image_to_video

    async def post() -> AsyncGeneration | Exception:
        try:
            gen = await call(client, args)
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
    if isinstance(answer, InvalidRequestError):
        raise renamed(args, answer) from None
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
    from ._cli_progress import reporter  # rich, only when a command shows progress

    report = reporter(err, quiet=args.json)
    paths: list[Path] = []
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
                what = getattr(args, "what", "video")
                reason = f"completed without any {what} (a content filter removed it)"
            raise GenerationFailedError(
                f"generation {gen.id} {final.state}" + (f": {reason}" if reason else ""),
                status=final,
            )
        if target is not None:
            paths = await save(
                gen, final, target, on_progress=report.bytes, timeout=timeout,
                next_file=report.done,
            )  # fmt: skip
    finally:
        report.done()
    if args.json:
        extra = {"path": str(paths[0]), "paths": [str(p) for p in paths]} if paths else {}
        line({**dict(final.raw), "generation_id": gen.id, **extra}, out)
    else:
        assert final.result is not None
        shown = [str(p) for p in paths] if paths else list(final.result.urls)
        out.write("".join(f"{text}\n" for text in shown))
    session.reported = True
    return EXIT_OK


async def _download(
    client: AsyncKolbo, args: argparse.Namespace, _: Session, out: TextIO, err: TextIO
) -> int:
    from ._cli_progress import reporter  # rich, only when a command shows progress

    gen = client.generations.attach(args.id)
    report = reporter(err, quiet=False)
    try:
        if args.thumbnail:
            target = args.target.path_for(gen.id, ".jpg")
            paths = [
                await gen.download_thumbnail(
                    target, overwrite=args.overwrite, on_progress=report.bytes
                )
            ]
        else:
            final = await gen.wait()
            paths = await save(
                gen, final, args.target, on_progress=report.bytes, timeout=None,
                next_file=report.done,
            )  # fmt: skip
    finally:
        report.done()
    out.write("".join(f"{path}\n" for path in paths))
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
        out.write("  ".join(f"{name}: {num(value)}" for name, value in parts if value is not None))
        out.write("\n")
    return EXIT_OK


def serve_sandbox(args: argparse.Namespace, out: TextIO) -> int:
    from kolbo_async.testing import Simulator

    speed = args.sandbox_speed
    sim = Simulator(speed=speed, api_key=args.require_key, seed=random.randrange(2**32))
    try:
        with sim.serve(host=args.host, port=args.port) as base_url:
            out.write(
                f"Kolbo sandbox at {base_url} (clock x{num(speed)}); CDN at {sim.cdn_url}\n"
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


def num(value: float) -> str:
    return f"{value:g}"


def _dump(data: object, out: TextIO) -> None:
    out.write(json.dumps(data, indent=2, default=str) + "\n")


COMMANDS: dict[str, Command] = {
    "models": _models,
    "generate": _generate,
    "image": _generate,
    "frames": _generate,
    "elements": _generate,
    "restyle": _generate,
    "lipsync": _generate,
    "status": _status,
    "download": _download,
    "cancel": _cancel,
    "credits": _credits,
}
