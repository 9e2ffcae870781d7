"""The `kolbo` generation commands: one per route, each with only the options its route takes.

`generate` (text or image to video), `image` (text to image, or `--edit` pictures), `frames`
(first and last frame), `elements` (a scene from references), `restyle` (video to video) and
`lipsync`. One command per route rather than one `generate` with route options: each route
needs different inputs (two frames; a face and a voice; a video), which argparse then asks
for by name, and each `--help` lists only the options that route takes. They share how a
generation is followed (`--no-wait`, `--download`, `--timeout`, `--json`).

Every medium is passed to the SDK as typed: an http(s) URL, or a local file path.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from kolbo_async import AsyncGeneration, AsyncKolbo, InvalidRequestError

from ._cli_checks import (
    bounding_box,
    duration_seconds,
    extra_field,
    keyframe,
    positive_count,
    positive_seconds,
)

__all__ = [
    "Call",
    "add_follow_options",
    "add_model_options",
    "add_route_commands",
    "call_of",
    "cli_field",
    "renamed",
    "text_or_image_to_video",
]

#: What a generation command sends: (client, parsed arguments) -> the handle.
Call = Callable[[AsyncKolbo, argparse.Namespace], Awaitable[AsyncGeneration]]

MEDIA = "URL|FILE"


def add_follow_options(parser: argparse.ArgumentParser, what: str) -> None:
    """The options every generation command shares: how it is followed and saved."""
    parser.add_argument("--no-wait", action="store_true", help="print the id and return at once")
    if what == "image":
        named = "ID.png (or .jpg, .webp: what the CDN sends); several as ID-0.png, ID-1.png, ..."
    else:
        named = "ID.mp4 (or .mov, .webm: what the CDN sends)"
    parser.add_argument(
        "--download",
        metavar="PATH",
        help=f"save the {what} to PATH when done (a directory: saved there as {named})",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="let --download replace an existing file"
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=1800.0,
        metavar="N",
        help="give up waiting after N s (default 1800); the generation goes on at Kolbo",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output only: a JSON line with the id as soon as Kolbo answers, "
        "then a JSON line with the outcome",
    )


def add_model_options(
    parser: argparse.ArgumentParser,
    *,
    shape: bool = True,
    duration: bool = False,
    enhance: bool = True,
    resolution: str | None = None,
    sound: bool = False,
    example: str = "sync_mode=loop",
) -> None:
    """The options a route's request takes, as its route allows them."""
    parser.add_argument("--model", metavar="ID", help="a model identifier (default: Smart Select)")
    if duration:
        parser.add_argument(
            "--duration", type=duration_seconds, metavar="N", help="seconds of video (at least 1)"
        )
    if shape:
        parser.add_argument("--aspect-ratio", metavar="W:H", help='e.g. "16:9", "9:16", "1:1"')
    if resolution is not None:
        parser.add_argument("--resolution", metavar="RES", help=f"e.g. {resolution}")
    if sound:
        parser.add_argument(
            "--sound",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="with (or without) a soundtrack, where the model can (default: the model's)",
        )
    if enhance:
        parser.add_argument("--no-enhance", action="store_true", help="send the prompt as written")
    parser.add_argument(
        "--set",
        dest="extra",
        type=extra_field,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="send another field as is (VALUE read as JSON when it is, else as text); "
        f"for a model's own options, e.g. --set {example}",
    )


def add_route_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`image`, `frames`, `elements`, `restyle` and `lipsync`."""
    image = commands.add_parser(
        "image",
        help="generate images from a prompt (or edit pictures with --edit)",
        description="Generate images from PROMPT; with --edit, change the pictures given "
        "as PROMPT says. Each picture is an http(s) URL or a local file.",
        epilog='Example: kolbo image "A lighthouse at dawn" --num-images 2 --download .',
    )
    image.add_argument("prompt", help="what the image shows (with --edit: what to change)")
    image.add_argument(
        "--edit", metavar=MEDIA, action="append", default=[], help="a picture to edit (repeat)"
    )
    image.add_argument(
        "--num-images", type=positive_count, metavar="N", help="how many images (default 1)"
    )
    image.add_argument("--quality", metavar="Q", help="a quality the model lists")
    image.add_argument(
        "--reference",
        metavar=MEDIA,
        action="append",
        default=[],
        help="a reference image to follow (repeat)",
    )
    add_model_options(image, resolution='"1K", "2K", "4K"', example="moodboard_id=ID")
    add_follow_options(image, "image")
    image.set_defaults(call=_image, what="image")

    frames = commands.add_parser(
        "frames",
        help="generate a video from a first frame to a last frame",
        description="Generate a video that moves from FIRST to LAST (http(s) URLs or local "
        "files). Without --aspect-ratio, Kolbo takes the first frame's.",
        epilog="Example: kolbo frames day.png night.png --prompt Time-lapse --download .",
    )
    frames.add_argument("first", metavar="FIRST", help="the first frame (URL or file)")
    frames.add_argument("last", metavar="LAST", help="the last frame (URL or file)")
    frames.add_argument("--prompt", help="how it moves from one to the other")
    add_model_options(
        frames, duration=True, resolution='"720p", "1080p"', sound=True, example="preset_id=ID"
    )
    add_follow_options(frames, "video")
    frames.set_defaults(call=_frames, what="video")

    elements = commands.add_parser(
        "elements",
        help="generate one scene from a prompt and reference images, videos and audio",
        description="Generate one scene from PROMPT and the references given (each an "
        "http(s) URL or a local file; the model caps how many of each).",
        epilog="Example: kolbo elements 'The bottle turns on a table' --image bottle.png "
        "--keyframe table.png@2.5",
    )
    elements.add_argument("prompt", help="the scene")
    for flag, what in (("image", "reference image"), ("video", "reference video")):
        elements.add_argument(
            f"--{flag}", metavar=MEDIA, action="append", default=[], help=f"a {what} (repeat)"
        )
    elements.add_argument(
        "--audio", metavar=MEDIA, action="append", default=[], help="an audio track (repeat)"
    )
    elements.add_argument(
        "--keyframe",
        type=keyframe,
        metavar="IMAGE@SECONDS",
        action="append",
        default=[],
        help="pin an image at a time, e.g. pose.png@2.5 (repeat)",
    )
    add_model_options(
        elements,
        duration=True,
        resolution='"720p", "1080p"',
        sound=True,
        example="multi_shots=true",
    )
    add_follow_options(elements, "video")
    elements.set_defaults(call=_elements, what="video")

    restyle = commands.add_parser(
        "restyle",
        help="restyle a video (video to video)",
        description="Generate a new video from VIDEO (an http(s) URL or a local file): "
        "restyled as PROMPT says, or as the model does.",
        epilog="Example: kolbo restyle clip.mp4 --prompt 'as a watercolour' --download .",
    )
    restyle.add_argument("video", metavar="VIDEO", help="the video to start from (URL or file)")
    restyle.add_argument("--prompt", help="what to make of it (optional for some models)")
    restyle.add_argument(
        "--reference",
        metavar=MEDIA,
        action="append",
        default=[],
        help="a reference image to follow (repeat)",
    )
    add_model_options(
        restyle, duration=True, resolution='"720p", "1080p"', sound=True, example="target_fps=24"
    )
    add_follow_options(restyle, "video")
    restyle.set_defaults(call=_restyle, what="video")

    lipsync = commands.add_parser(
        "lipsync",
        help="make a face (image or video) speak an audio track",
        description="Generate a video of FACE (an image or a video of a face) speaking "
        "AUDIO; each an http(s) URL or a local file.",
        epilog="Example: kolbo lipsync face.jpg voice.mp3 --download talk.mp4",
    )
    lipsync.add_argument("face", metavar="FACE", help="an image or video of a face (URL or file)")
    lipsync.add_argument("audio", metavar="AUDIO", help="what the face says (URL or file)")
    lipsync.add_argument("--prompt", help="how it is delivered, where the model takes one")
    lipsync.add_argument(
        "--box",
        type=bounding_box,
        metavar="X,Y,W,H",
        help="the face to animate when there are several",
    )
    add_model_options(lipsync, shape=False, enhance=False)
    add_follow_options(lipsync, "video")
    lipsync.set_defaults(call=_lipsync, what="video")


def call_of(args: argparse.Namespace) -> Call | None:
    """The generation a command sends, or None for a command that sends none."""
    call: Call | None = getattr(args, "call", None)
    return call


#: The command-line name of each SDK parameter whose name differs (for error messages).
_CLI_NAMES = {
    "images": "--edit",
    "reference_images": "--reference",
    "first_frame": "FIRST",
    "last_frame": "LAST",
    "video": "VIDEO",
    "face": "FACE",
    "audio": "AUDIO",
    "bounding_box_target": "--box",
    "extra_body": "--set",
    "keyframes": "--keyframe",
    "sound_enabled": "--sound",
    "enhance_prompt": "--no-enhance",
}
_ELEMENTS_NAMES = {**_CLI_NAMES, "images": "--image", "videos": "--video", "audio": "--audio"}


def cli_field(args: argparse.Namespace, field: str) -> str:
    """An SDK field name (``images[1]``, ``keyframes[0].timestamp_seconds``) as typed, where
    the command line names it otherwise (``--edit[1]``); else as the SDK has it."""
    head = field.split("[", 1)[0].split(".", 1)[0]
    names = _ELEMENTS_NAMES if args.command == "elements" else _CLI_NAMES
    return names[head] + field[len(head) :] if head in names else field


def options(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The SDK keywords of the options given (None: not given, Kolbo's default applies)."""
    sent: dict[str, Any] = {"model": args.model}
    for name in names:
        sent[name] = getattr(args, name, None)
    if getattr(args, "no_enhance", False):
        sent["enhance_prompt"] = False
    if getattr(args, "sound", None) is not None:
        sent["sound_enabled"] = args.sound
    if args.extra:
        sent["extra_body"] = dict(args.extra)
    return {name: value for name, value in sent.items() if value is not None}


async def _image(client: AsyncKolbo, args: argparse.Namespace) -> AsyncGeneration:
    sent = options(args, "aspect_ratio", "resolution", "num_images", "quality")
    if args.reference:
        sent["reference_images"] = list(args.reference)
    if args.edit:
        return await client.images.edit(list(args.edit), args.prompt, **sent)
    return await client.images.generate(args.prompt, **sent)


async def _frames(client: AsyncKolbo, args: argparse.Namespace) -> AsyncGeneration:
    sent = options(args, "prompt", "duration", "aspect_ratio", "resolution")
    return await client.videos.from_frames(args.first, args.last, **sent)


async def _elements(client: AsyncKolbo, args: argparse.Namespace) -> AsyncGeneration:
    sent = options(args, "duration", "aspect_ratio", "resolution")
    return await client.videos.from_elements(
        args.prompt,
        images=list(args.image),
        videos=list(args.video),
        audio=list(args.audio),
        keyframes=list(args.keyframe),
        **sent,
    )


async def _restyle(client: AsyncKolbo, args: argparse.Namespace) -> AsyncGeneration:
    sent = options(args, "prompt", "duration", "aspect_ratio", "resolution")
    if args.reference:
        sent["reference_images"] = list(args.reference)
    return await client.videos.from_video(args.video, **sent)


async def _lipsync(client: AsyncKolbo, args: argparse.Namespace) -> AsyncGeneration:
    sent = options(args, "prompt")
    if args.box is not None:
        sent["bounding_box_target"] = list(args.box)
    return await client.videos.lipsync(args.face, args.audio, **sent)


async def text_or_image_to_video(client: AsyncKolbo, args: argparse.Namespace) -> AsyncGeneration:
    """`kolbo generate`: text to video, or image to video with ``--image``."""
    sent = options(args, "duration", "aspect_ratio", "resolution")
    if args.image is not None:
        return await client.videos.from_image(args.image, prompt=args.prompt, **sent)
    return await client.videos.generate(args.prompt, **sent)


def renamed(args: argparse.Namespace, exc: InvalidRequestError) -> InvalidRequestError:
    """`exc` naming the argument as the command line has it."""
    problem = str(exc).partition(": ")[2]
    return InvalidRequestError(cli_field(args, exc.field), problem)
