"""Reading `kolbo batch FILE`: JSON Lines or CSV into request objects, every line checked.

Nothing here sends anything. A line that cannot become a request (not JSON, an unknown field
or route, a CSV cell of the wrong type) is reported with its line number, and every such line
is reported at once, so that one run of the command finds them all. The values themselves are
checked by the SDK (`generate_many`) before the first POST; `_cli_batch` maps its errors back
to line numbers too.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

import kolbo_async
from kolbo_async import InvalidRequestError

__all__ = ["CATALOG_TYPES", "BadLines", "Item", "read_items"]

#: Route name -> the request class of `kolbo_async` that it builds. A route whose class this
#: version of the SDK does not export yet is refused by name, before anything is sent.
_ROUTES = {
    "text-to-video": "TextToVideo",
    "image-to-video": "ImageToVideo",
    "frames-to-video": "FramesToVideo",
    "elements-to-video": "ElementsToVideo",
    "video-to-video": "VideoToVideo",
    "lipsync": "Lipsync",
    "text-to-image": "TextToImage",
    "image-edit": "ImageEdit",
}
#: Route name -> the catalog's model type (`Model.types`), for the dry run's prices.
CATALOG_TYPES = {
    "text-to-video": "text_to_video",
    "image-to-video": "img_to_video",
    "frames-to-video": "firstlastgenerations",
    "elements-to-video": "elements",
    "video-to-video": "video_to_video",
    "text-to-image": "text_to_img",
    "image-edit": "image_editing",
}
_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


@attrs.frozen
class Item:
    """One request of the file: where it was, which route, and the request object."""

    line: int
    route: str
    request: Any


class BadLines(InvalidRequestError):
    """Lines of FILE that are not requests; nothing was sent. `.lines` maps line -> problem."""

    def __init__(self, name: str, lines: Mapping[int, str]) -> None:
        self.lines = dict(sorted(lines.items()))
        shown = [f"  line {n}: {problem}" for n, problem in list(self.lines.items())[:20]]
        if len(self.lines) > 20:
            shown.append(f"  ... and {len(self.lines) - 20} more")
        count = f"{len(self.lines)} line{'s' if len(self.lines) > 1 else ''}"
        super().__init__(
            name, f"{count} cannot be sent; nothing was sent. Fix them and run again:\n"
            + "\n".join(shown)
        )


def read_items(name: str) -> tuple[list[Item], dict[int, str]]:
    """The requests of file `name` (``-``: stdin), and its bad lines (number -> problem).

    Raises:
        InvalidRequestError: the file cannot be read, or holds no line at all.
    """
    text = _read(name)
    lines: dict[int, str] = {}
    items: list[Item] = []
    csv_file = _is_csv(name, text)
    rows = _csv_rows(text, lines) if csv_file else _json_rows(text, lines)
    for number, row, cells in rows:
        try:
            route, cls = _route(row.pop("route", None), row)
            fields = {key: _cell(cls, key, value) for key, value in row.items()} if cells else row
            items.append(Item(number, route, _build(cls, route, fields)))
        except ValueError as exc:
            lines[number] = str(exc)
    if not items and not lines:
        raise InvalidRequestError("stdin" if name == "-" else name, "holds no requests")
    return items, lines


def _read(name: str) -> str:
    label = "stdin" if name == "-" else name
    try:
        if name == "-":
            data = sys.stdin.buffer.read() if sys.stdin is not None else b""
        else:
            data = Path(name).read_bytes()
        # utf-8-sig: spreadsheets write a byte-order mark before the header.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(label, f"is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise InvalidRequestError(label, f"cannot be read: {exc.strerror or exc}") from None


def _is_csv(name: str, text: str) -> bool:
    suffix = Path(name).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return True
    if suffix in (".jsonl", ".ndjson", ".json"):
        return False
    return not text.lstrip().startswith("{")


def _json_rows(text: str, lines: dict[int, str]) -> Iterator[tuple[int, dict[str, Any], bool]]:
    for number, raw in enumerate(io.StringIO(text), 1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.strip(), parse_constant=_no_constant)
        except ValueError as exc:
            msg = getattr(exc, "msg", str(exc))
            col = getattr(exc, "colno", None)
            lines[number] = f"not valid JSON ({msg}{f' at column {col}' if col else ''})"
            continue
        if not isinstance(value, dict):
            lines[number] = f"must be a JSON object, not {type(value).__name__}"
            continue
        yield number, value, False


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def _csv_rows(text: str, lines: dict[int, str]) -> Iterator[tuple[int, dict[str, Any], bool]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)
    except csv.Error as exc:
        lines[reader.line_num] = f"not valid CSV ({exc})"
        return
    if header is None:
        return
    names = [cell.strip() for cell in header]
    known = {"route"} | {f for cls in _classes() for f in _fields(cls)}
    wrong = [n for n in names if n not in known]
    if wrong or len(set(names)) != len(names) or "" in names:
        problem = (
            f"unknown column {wrong[0]!r}; known: {', '.join(sorted(known))}"
            if wrong
            else "every column needs a name, once"
        )
        lines[reader.line_num] = f"header: {problem}"
        return
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            lines[reader.line_num] = f"not valid CSV ({exc})"
            return
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(names):
            lines[reader.line_num] = f"{len(row)} cells, but the header names {len(names)}"
            continue
        # An empty cell is a field not given; anything else is sent, as written.
        fields = {name: cell for name, cell in zip(names, row, strict=False) if cell != ""}
        yield reader.line_num, fields, True


def _classes() -> list[type]:
    return [
        cls for name in _ROUTES.values() if (cls := getattr(kolbo_async, name, None)) is not None
    ]


def _fields(cls: type) -> list[str]:
    return list(inspect.signature(cls).parameters)


def _route(value: object, fields: Mapping[str, Any]) -> tuple[str, type]:
    if value is None:
        # As `generate_many` reads a dict: an image_url makes it image-to-video.
        value = "image-to-video" if "image_url" in fields else "text-to-video"
    if not isinstance(value, str):
        raise ValueError(f"route: must be a string, not {type(value).__name__}")
    wanted = value.strip().lower().replace("_", "-")
    route = next(
        (r for r, cls in _ROUTES.items() if wanted in (r, cls.lower(), r.replace("-", ""))),
        None,
    )
    if route is None:
        raise ValueError(f"route: unknown route {value!r}; known: {', '.join(_ROUTES)}")
    cls = getattr(kolbo_async, _ROUTES[route], None)
    if cls is None:
        raise ValueError(
            f"route: {route} needs a newer kolbo-async (this one has no {_ROUTES[route]})"
        )
    return route, cls


def _build(cls: type, route: str, fields: dict[str, Any]) -> Any:
    params = inspect.signature(cls).parameters
    for key in fields:
        if key not in params:
            raise ValueError(f"{key}: is not a field of {route}; known: {', '.join(params)}")
    for key, param in params.items():
        if param.default is inspect.Parameter.empty and key not in fields:
            raise ValueError(f"{key}: is required for {route}")
    try:
        return cls(**fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


def _cell(cls: type, key: str, text: str) -> object:
    """A CSV cell as the value its field takes (by the field's annotation)."""
    # Every class of the request's family: the route's own fields and the shared options.
    annotations: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        annotations.update(inspect.get_annotations(klass))
    annotation = str(annotations.get(key, "str"))
    if "bool" in annotation:
        word = text.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError(f"{key}: must be true or false, not {text!r}")
    if "float" in annotation or "int" in annotation:
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{key}: must be a number, not {text!r}") from None
        if math.isfinite(number) and number.is_integer() and "." not in text:
            return int(number)
        return number
    if "Mapping" in annotation or "dict" in annotation:
        return _json_cell(key, text, dict, "a JSON object")
    if "Sequence" in annotation or "list" in annotation or "tuple" in annotation:
        if text.lstrip().startswith("["):
            return _json_cell(key, text, list, "a JSON list")
        return text.split()
    return text


def _json_cell(key: str, text: str, kind: type, what: str) -> object:
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError:
        raise ValueError(f"{key}: must be {what}, not {text!r}") from None
    if not isinstance(value, kind):
        raise ValueError(f"{key}: must be {what}, not {text!r}")
    return value
