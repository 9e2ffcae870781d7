"""The simulator's plain records (requests, answers, fault settings) and its face to adapters."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import attrs

from ._clock import ScaledClock, VirtualClock

__all__ = [
    "GENERATION_PATHS",
    "ROUTES",
    "Faults",
    "Plan",
    "RecordedRequest",
    "SimRequest",
    "SimResponse",
    "SimService",
    "json_answer",
    "number",
    "recorded",
    "route_of",
]

#: The routes a request can be for (faults are injected per route).
ROUTES = frozenset({"generate", "status", "cancel", "models", "credits", "cdn", "upload"})
#: Every generation POST the simulator serves (kolbo-api.md sections 2 and 13): the route
#: "generate", counted in the generation bucket (`_routes.ROUTE_SPECS` says what each takes).
GENERATION_PATHS = frozenset({
    "/api/v1/generate/video",
    "/api/v1/generate/video/from-image",
    "/api/v1/generate/image",
    "/api/v1/generate/image-edit",
    "/api/v1/generate/first-last-frame",
    "/api/v1/generate/elements",
    "/api/v1/generate/video-from-video",
    "/api/v1/generate/lipsync",
})  # fmt: skip


@attrs.define
class SimRequest:
    """A request as the service sees it (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str] = attrs.field(factory=dict)
    headers: dict[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    host: str = "api"  # "api" or "cdn"
    client: str = "127.0.0.1"


@attrs.define
class SimResponse:
    """What the service answers. `fault` tells the adapter to misbehave instead."""

    status: int = 200
    headers: dict[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    #: None, "drop_before", "drop_after" or "slow" (then answer after `delay` real seconds).
    fault: str | None = None
    delay: float = 0.0
    #: For large CDN bodies: produce the bytes in chunks instead of holding them.
    chunks: Iterator[bytes] | None = None


def route_of(request: SimRequest) -> str:
    """Which route of `ROUTES` a request is for (``"other"``: none)."""
    if request.host == "cdn":
        return "cdn"
    path = request.path
    if request.method == "POST" and path in GENERATION_PATHS:
        return "generate"
    if request.method == "POST" and path == "/api/v1/media/upload":
        return "upload"  # counted in the generation bucket too (kolbo-api.md §13)
    if path.startswith("/api/v1/generate/") and path.endswith("/status"):
        return "status"
    if request.method == "POST" and path.startswith("/api/v1/generate/") and path.endswith(
        "/cancel"
    ):
        return "cancel"
    if path == "/api/v1/models":
        return "models"
    if path == "/api/v1/account/credits":
        return "credits"
    return "other"


def json_answer(status: int, body: Mapping[str, Any]) -> SimResponse:
    """A JSON answer, as Kolbo sends them."""
    return SimResponse(status, {"content-type": "application/json"}, json.dumps(body).encode())


def number(value: float) -> float | int:
    """A number as Kolbo writes it in JSON: whole numbers without a decimal point."""
    return int(value) if float(value).is_integer() else round(value, 4)


def recorded(request: SimRequest, now: float, answer: SimResponse) -> RecordedRequest:
    """How `Simulator.requests` keeps a request and its answer (status 0: never read)."""
    try:
        body = json.loads(request.body) if request.body else None
    except ValueError:
        body = request.body.decode("utf-8", "replace")
    return RecordedRequest(
        time=now, method=request.method, path=request.path, query=dict(request.query),
        headers=dict(request.headers), json=body, host=request.host,
        status=answer.status if answer.fault != "drop_before" else 0,
        fault=answer.fault,
    )


class SimService(Protocol):
    """What an adapter needs from a simulator: its one seam, its origins and its clock.

    `Simulator` is one. The origins are settable because `Simulator.serve` moves them to the
    loopback ports while it serves.
    """

    #: The API's origin, e.g. ``https://api.kolbo.ai``.
    base_url: str
    #: The CDN's origin (another one: result URLs point there).
    cdn_url: str

    @property
    def clock(self) -> VirtualClock | ScaledClock:
        """The simulated time; a slow answer waits on it when it is virtual."""

    def handle(self, request: SimRequest) -> SimResponse:
        """Answer one request now, and record it."""


@attrs.define
class RecordedRequest:
    """One request the simulator saw, as sent (the X-API-Key header included)."""

    time: float
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    host: str
    status: int
    fault: str | None


@attrs.define
class Faults:
    """Random fault rates (each 0..1), drawn from the simulator's seeded generator.

    Mutable: change them between requests. Scripted, one-off faults go through
    `Simulator.inject` instead, and take precedence.

    Example:
        >>> sim.faults.status_error_rate = 0.2     # doctest: +SKIP
        >>> sim.faults.insufficient_credits = True  # doctest: +SKIP
    """

    #: Status GETs answered 500, 502, 503 (JSON) or a proxy's HTML 502.
    status_error_rate: float = 0.0
    #: Status GETs whose connection drops with no answer.
    status_drop_rate: float = 0.0
    #: Status GETs answered only after `slow_seconds`.
    status_slow_rate: float = 0.0
    #: How long a "slow" answer takes, in real seconds.
    slow_seconds: float = 5.0
    #: Generation POSTs rejected with a 429 (and Retry-After) before any work.
    generate_429_rate: float = 0.0
    #: Generation POSTs refused before the request is read: no generation, no charge.
    generate_refuse_rate: float = 0.0
    #: Generation POSTs that create (and charge for) a generation, then drop the connection.
    generate_drop_after_create_rate: float = 0.0
    #: Every generation POST answers 400 INSUFFICIENT_CREDITS.
    insufficient_credits: bool = False


@attrs.frozen
class Plan:
    """Settings queued by `Simulator.plan` for the next generation created."""

    outcome: str = "completed"
    processing_seconds: float | None = None
    failure: dict[str, Any] | None = None
