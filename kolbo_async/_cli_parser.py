"""The `kolbo` command line: its argument parser, and nothing that sends a request."""

from __future__ import annotations

import argparse

from ._cli_checks import (
    port,
    positive_count,
    positive_credits,
    positive_speed,
)
from ._cli_routes import (
    add_follow_options,
    add_model_options,
    add_route_commands,
    text_or_image_to_video,
)
from ._cli_upload import add_upload_command

__all__ = ["MODEL_TYPES", "SANDBOX_SPEED", "build_parser"]

#: `kolbo models --type`: Kolbo's catalog types of each route, its video aliases first.
MODEL_TYPES = (
    "video",
    "video_from_image",
    "text_to_img",
    "image_editing",
    "firstlastgenerations",
    "elements",
    "video_to_video",
    "lipsync-image",
    "lipsync-video",
)

#: Simulated seconds per real second in sandbox mode: a 90 s generation takes 3 s.
SANDBOX_SPEED = 30.0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `kolbo`."""
    parser = argparse.ArgumentParser(
        prog="kolbo",
        description="Generate videos and images with Kolbo from the command line: from a "
        "prompt, an image, two frames, reference elements, a video, or a face and a voice.",
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
    models.add_argument(
        "--type",
        default="video",
        metavar="TYPE",
        help="the models of one route: " + ", ".join(MODEL_TYPES) + " (default: video); "
        "or a catalog type Kolbo adds",
    )
    models.add_argument("--json", action="store_true", help="machine-readable output only")

    _generate(commands)
    add_route_commands(commands)
    add_upload_command(commands)
    _batch(commands)

    status = commands.add_parser("status", help="show a generation's status")
    status.add_argument("id", help="the generation id")
    status.add_argument("--wait", action="store_true", help="follow it until it ends")
    status.add_argument("--json", action="store_true", help="machine-readable output only")

    download = commands.add_parser(
        "download", help="save a finished generation's video (or every image)"
    )
    download.add_argument("id", help="the generation id")
    download.add_argument(
        "path",
        help="where to save it (a directory: saved there as ID.mp4, ID.png, or ID-0.png, "
        "ID-1.png, ... for several images, by what the CDN sends)",
    )
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


def _generate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gen = commands.add_parser("generate", help="generate a video from a prompt (or an image)")
    gen.add_argument("prompt", help="what the video shows (with --image: how it moves)")
    gen.add_argument("--image", metavar="URL|FILE", help="animate this image instead")
    add_model_options(
        gen, duration=True, resolution='"720p", "1080p"', sound=True, example="preset_id=ID"
    )
    add_follow_options(gen, "video")
    gen.set_defaults(call=text_or_image_to_video, what="video")


def _batch(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    batch = commands.add_parser(
        "batch",
        help="generate every request of a JSON Lines or CSV file",
        description="Generate every request of FILE: JSON Lines (one object a line, the "
        'fields of TextToVideo, or of ImageToVideo with "route": "image-to-video" or an '
        "image_url) or CSV with a header row of the same names. Every line is checked before "
        "anything is sent. With --journal, an interrupted batch resumes when the same "
        "command is run again: nothing is paid for twice.",
        epilog="Example: kolbo batch prompts.jsonl --journal prompts.db --download-dir videos "
        "(with no key: kolbo --sandbox batch prompts.jsonl --download-dir videos)",
    )
    batch.add_argument("file", metavar="FILE", help="the requests (.jsonl or .csv; - for stdin)")
    batch.add_argument(
        "--journal",
        metavar="PATH",
        help="an SQLite file recording every item before its POST and its id after: rerun "
        "the same command to resume without paying twice",
    )
    batch.add_argument(
        "--download-dir",
        metavar="DIR",
        help="save each video there as INDEX-ID.EXT while the batch goes on",
    )
    batch.add_argument(
        "--concurrency",
        type=positive_count,
        default=8,
        metavar="N",
        help="generations in flight at once (default 8)",
    )
    batch.add_argument(
        "--max-credits",
        type=positive_credits,
        metavar="N",
        help="send nothing that would take the batch past N credits",
    )
    batch.add_argument(
        "--dry-run",
        action="store_true",
        help="check FILE and show what it would cost (from the model catalog); send nothing",
    )
    batch.add_argument(
        "--json", action="store_true", help="one JSON object a line per outcome, nothing else"
    )
