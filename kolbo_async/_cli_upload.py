"""`kolbo upload`: put local files (or copies of remote ones) in Kolbo's media library.

Prints each file's Kolbo URL, one a line, in the order given, so that a script can pass them on
(``kolbo frames $(kolbo upload day.png night.png)``). Every file is checked before the first
is sent: a missing one is a usage error that uploads nothing.
"""

from __future__ import annotations

import argparse
import os
from typing import TextIO

from kolbo_async import AsyncKolbo, InvalidRequestError

from ._cli_outcome import EXIT_OK, Session, line
from ._local_files import local_file

__all__ = ["add_upload_command", "check_upload", "upload"]


def add_upload_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `upload` command's parser."""
    parser = commands.add_parser(
        "upload",
        help="upload files to your Kolbo media library and print their URLs",
        description="Upload each FILE (a local file, or an http(s) URL Kolbo should host a "
        "copy of) to your media library; print its Kolbo URL, one a line, in order. Uploads "
        "count against the generation rate limit, as Kolbo counts them.",
        epilog="Example: kolbo frames $(kolbo upload day.png night.png) --download .",
    )
    parser.add_argument("files", metavar="FILE", nargs="+", help="a file to upload (or a URL)")
    parser.add_argument("--description", metavar="TEXT", help="a description to file it under")
    parser.add_argument("--project", metavar="ID", help="the project to file it in")
    parser.add_argument(
        "--json", action="store_true", help="one JSON line per file: its media record and URL"
    )


def check_upload(args: argparse.Namespace) -> None:
    """Every local file is there, a regular file, readable and not too large, before the
    first upload (the SDK checks each again as it sends it)."""
    for index, name in enumerate(args.files):
        where = "FILE" if len(args.files) == 1 else f"FILE {index + 1}"
        scheme, sep, _ = name.partition("://")
        if sep and scheme.isascii() and scheme.isalpha():
            continue  # a URL: the SDK fetches it and uploads a copy
        if not name.strip():
            raise InvalidRequestError(where, "must not be empty")
        if not os.path.exists(name):
            raise InvalidRequestError(where, f"{name!r} does not exist")
        if os.path.isdir(name):
            raise InvalidRequestError(where, f"{name!r} is a directory")
        # The SDK's own check, naming FILE n: a regular file (not a FIFO, not /dev/zero),
        # readable, at most 500 MiB, a path it can send.
        local_file(where, name)


async def upload(
    client: AsyncKolbo, args: argparse.Namespace, _: Session, out: TextIO, err: TextIO
) -> int:
    """Upload every file in order; print each URL as soon as it is known."""
    for name in args.files:
        media = await client.media.upload(
            name, description=args.description, project_id=args.project
        )
        if args.json:
            line({**dict(media.raw), "url": media.url, "file": name}, out)
        else:
            out.write(f"{media.url}\n")
            out.flush()
    return EXIT_OK
