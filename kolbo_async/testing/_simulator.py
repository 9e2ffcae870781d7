"""`Simulator`: the simulated Kolbo service, and the three ways to reach it."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from importlib.resources import files
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from kolbo_async import AsyncKolbo

from ._asgi import serve
from ._cdn import CDN
from ._clock import ScaledClock, VirtualClock
from ._core import ServiceState
from ._lifecycle import GenerationRecord
from ._records import Faults, RecordedRequest, SimRequest, SimResponse
from ._respx import install
from ._transport import SimTransport

if TYPE_CHECKING:
    import respx  # an optional dependency, for the type only

    _Router = TypeVar("_Router", bound=respx.Router)

__all__ = ["Simulator"]


def _asset(name: str, fallback: bytes) -> bytes:
    # The media files are optional (a trimmed install may lack them): then the CDN serves
    # deterministic stand-in bytes instead.
    try:
        return files("kolbo_async.testing").joinpath("data").joinpath(name).read_bytes()
    except OSError:
        return fallback


class Simulator:
    """A faithful, stateful simulation of Kolbo's video API, for tests, demos and benchmarks.

    The service is a state machine on a clock, with no I/O; reach it in-process with
    `transport()` (or `client()`), through respx with `mock(router)`, or over real HTTP on
    loopback with `serve()`.

    Args:
        api_key: require exactly this key; by default any ``kolbo_live_...`` key is accepted.
        clock: a `VirtualClock` to share with the client under test; default a
            `ScaledClock(speed)`.
        speed: simulated seconds per real second (ignored with a `VirtualClock`). Durations
            the client sleeps (``poll_interval_hint``, ``Retry-After``) are divided by it,
            unless `scaled_hints` is False.
        scaled_hints: False for a client that shares this simulator's `ScaledClock`
            (``AsyncKolbo(..., _clock=sim.clock)``, as the scale benchmarks do): its sleeps
            and rate windows already run in simulated seconds.
        credits: the starting balance: a number (plan credits), or a mapping of
            ``plan_credits``, ``credit_pack`` and ``redemption``.
        rate_limits: Kolbo's fixed one-minute windows; None means on for `serve()` only.
        processing_seconds, pending_seconds: how long a generation takes (simulated).
        seed: makes generation ids and random faults reproducible.
        video_size: bytes the CDN serves per video (the real sample MP4 by default; larger
            sizes pad it, for download tests).
        trust_gate: the elements route refuses remote references that are not the CDN's own
            files of the caller (uploads, results) with 400 ``UNTRUSTED_REFERENCE_MEDIA_URL``,
            before any charge, as Kolbo does.

    Example:
        >>> clock = VirtualClock()
        >>> sim = Simulator(clock=clock)
        >>> client = sim.client(clock=clock)                         # doctest: +SKIP
        >>> gen = await client.videos.generate("A drone over snowy peaks")  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        clock: VirtualClock | ScaledClock | None = None,
        speed: float = 1.0,
        credits: float | Mapping[str, float] = 10_000,
        rate_limits: bool | None = None,
        generations_per_minute: int = 10,
        requests_per_minute: int = 300,
        processing_seconds: float = 90.0,
        pending_seconds: float = 3.0,
        seed: int = 0,
        base_url: str = "https://api.kolbo.ai",
        cdn_url: str = "https://cdn.kolbo.test",
        video_size: int | None = None,
        scaled_hints: bool = True,
        trust_gate: bool = False,
    ) -> None:
        if isinstance(clock, VirtualClock):
            if speed != 1.0:
                raise ValueError("a VirtualClock runs at speed 1: pass clock= or speed=, not both")
        elif clock is None:
            clock = ScaledClock(speed)
        else:
            speed = clock.speed
        self.clock = clock
        self.speed = speed
        self._explicit_limits = rate_limits
        self.base_url = base_url.rstrip("/")
        self._lock = threading.Lock()
        self._state = ServiceState(
            api_key=api_key,
            speed=speed,
            scaled_hints=scaled_hints,
            credits=credits,
            rate_limits=bool(rate_limits),
            generations_per_minute=generations_per_minute,
            requests_per_minute=requests_per_minute,
            pending_seconds=pending_seconds,
            processing_seconds=processing_seconds,
            seed=seed,
            cdn=CDN(
                cdn_url,
                video=_asset("sample.mp4", b""),
                thumbnail=_asset("sample.jpg", b"\xff\xd8\xff\xd9"),
                video_size=video_size,
            ),
            trust_gate=trust_gate,
        )

    @property
    def cdn_url(self) -> str:
        """The CDN's origin, where result URLs point (moved to a loopback port by `serve`)."""
        return self._state.cdn.url

    @cdn_url.setter
    def cdn_url(self, url: str) -> None:
        with self._lock:
            self._state.cdn.url = url.rstrip("/")

    # -- what tests read -------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """Random fault rates; set them to inject faults on every matching request."""
        return self._state.faults

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request the simulator saw, in order (a copy)."""
        with self._lock:
            return list(self._state.requests)

    @property
    def generations(self) -> Mapping[str, GenerationRecord]:
        """Every generation created, by id, with its state brought up to date (a copy)."""
        with self._lock:
            now = self.clock.now()
            self._state.settle(now)
            for record in self._state.generations.values():
                record.state = record.state_at(now)[0]
            return dict(self._state.generations)

    def credits(self) -> float:
        """The account's total balance now (failures so far refunded)."""
        with self._lock:
            self._state.settle(self.clock.now())
            return self._state.balance.total()

    # -- scripting -------------------------------------------------------------------------

    def inject(self, route: str, fault: str, times: int = 1) -> None:
        """Make the next `times` requests to `route` misbehave as `fault`.

        Routes: ``generate``, ``status``, ``cancel``, ``models``, ``credits``, ``cdn``,
        ``upload`` (``POST /api/v1/media/upload``).
        Faults: ``500``, ``502``, ``503``, ``html_502`` (a proxy's HTML page),
        ``invalid_json``, ``429`` (with Retry-After), ``drop_before`` (refused before the
        request is read), ``drop_after`` (processed, then the connection drops), ``slow``
        (answered after ``faults.slow_seconds``), ``insufficient_credits``, and a gateway
        in front of Kolbo replacing the answer *after* the request was processed:
        ``gateway_502``, ``gateway_504``, ``gateway_524`` (its HTML page) and
        ``gateway_garbled_200`` (a 200 cut short).
        """
        with self._lock:
            self._state.inject(route, fault, times)

    def plan(
        self,
        outcome: str = "completed",
        *,
        processing_seconds: float | None = None,
        failure: Mapping[str, Any] | None = None,
        times: int = 1,
    ) -> None:
        """Decide how the next `times` generations created end.

        A prompt containing ``[fail]`` or ``[filtered]`` does the same for one generation.

        Args:
            outcome: ``"completed"``, ``"failed"`` or ``"filtered"`` (completed with no URLs).
            processing_seconds: simulated seconds in ``processing``; default the simulator's.
            failure: fields of the ``failure`` object a failed generation reports (``message``,
                ``category``, ``code``, ``retryable``, ``severity``, ``provider``).
            times: how many generations this applies to, in creation order.

        Example:
            >>> sim.plan("failed", failure={"code": "PROVIDER_DOWN"})  # doctest: +SKIP
        """
        with self._lock:
            self._state.plan(outcome, processing_seconds, times, failure)

    def create_generation(
        self,
        prompt: str = "pre-created",
        *,
        key: str = "kolbo_live_simulator",
        outcome: str | None = None,
        processing_seconds: float | None = None,
        **fields: Any,
    ) -> str:
        """Create a generation directly (no HTTP, no charge), e.g. to watch thousands.

        Args:
            prompt: its prompt (``[fail]``/``[filtered]`` markers apply).
            key: the API key it belongs to; only that key can see it.
            outcome: how it ends; default from `plan` or the prompt, else ``"completed"``.
            processing_seconds: simulated seconds in ``processing``.
            **fields: other request fields, e.g. ``duration=10`` or ``aspect_ratio="9:16"``.

        Returns:
            The new generation's id.
        """
        with self._lock:
            return self._state.create(
                self.clock.now(),
                key=key,
                request={"prompt": prompt, **fields},
                kind="text_to_video",
                outcome=outcome,
                processing_seconds=processing_seconds,
            )

    def complete(self, generation_id: str, *, filtered: bool = False) -> None:
        """End a running generation now as completed (with no URLs when `filtered`).

        Raises:
            KeyError: no such generation.
            ValueError: it has already ended.
        """
        with self._lock:
            outcome = "filtered" if filtered else "completed"
            self._state.finish(generation_id, outcome, self.clock.now())

    def fail(self, generation_id: str, failure: Mapping[str, Any] | None = None) -> None:
        """End a running generation now as failed (and refund it).

        Raises:
            KeyError: no such generation.
            ValueError: it has already ended.
        """
        with self._lock:
            self._state.finish(generation_id, "failed", self.clock.now(), failure)

    # -- the service -----------------------------------------------------------------------

    def handle(self, request: SimRequest) -> SimResponse:
        """Answer one request now (what every adapter calls)."""
        with self._lock:
            return self._state.handle(request, self.clock.now())

    def _limits(self, served: bool) -> None:
        if self._explicit_limits is None:
            self._state.rate_limits = served

    # -- adapters --------------------------------------------------------------------------

    def transport(self) -> httpx.AsyncBaseTransport:
        """An in-process httpx transport serving the API and the CDN origins."""
        self._limits(served=False)
        return SimTransport(self)

    def mock(self, router: _Router) -> _Router:
        """Route a respx router's API and CDN origins to the simulator; returns the router.

        Example:
            >>> with respx.mock(assert_all_called=False) as router:   # doctest: +SKIP
            ...     sim.mock(router)
            ...     async with httpx.AsyncClient() as http:
            ...         await http.get("https://api.kolbo.ai/api/v1/models", headers=...)
        """
        self._limits(served=False)
        return install(self, router)

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> AbstractContextManager[str]:
        """Serve over real HTTP on loopback (uvicorn, in its own thread); yields the base URL.

        The CDN gets a second port (another origin); `cdn_url` says which while serving.
        Meant for a `ScaledClock` (the default): a `VirtualClock` takes a client waiting on the
        socket for a blocked task, and may jump while the answer is on its way.
        Requires ``pip install 'kolbo-async[sim]'``.
        """
        self._limits(served=True)
        return serve(self, host, port)

    def client(self, api_key: str = "kolbo_live_simulator", **kwargs: Any) -> AsyncKolbo:
        """An `AsyncKolbo` wired to this simulator in-process, sharing its clock.

        Example:
            >>> async with sim.client() as client:                     # doctest: +SKIP
            ...     gen = await client.videos.generate("a cat")
        """
        kwargs.setdefault("base_url", self.base_url)
        # Only a virtual clock is shared: with a scaled one the hints the client sleeps are
        # already in real seconds.
        clock = self.clock if isinstance(self.clock, VirtualClock) else None
        return AsyncKolbo(api_key, _transport=self.transport(), _clock=clock, **kwargs)

    def video_chunks(self, response: SimResponse) -> Iterator[bytes]:
        """The body of `response` in chunks, whichever way the core produced it."""
        if response.chunks is not None:
            yield from response.chunks
        elif response.body:
            yield response.body
