"""`AsyncKolbo`, the async client, and its `videos`/`models`/`generations`/`account` namespaces."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from types import TracebackType
from typing import Any

import anyio
import attrs
import httpx

from ._batch import AsyncBatch, journal_path
from ._clock import SYSTEM_CLOCK, Clock
from ._config import (
    DEFAULT_TIMEOUT,
    RateLimits,
    Settings,
    make_timeout,
    positive_int,
    resolve_api_key,
    resolve_base_url,
)
from ._convert import structure
from ._download import Transfers
from ._exceptions import InvalidRequestError
from ._handles import AsyncGeneration, parse_status, status_call
from ._models import Credits, GenerationStatus, Model, Submission, submitted_id
from ._pacing import GENERATE, Pacer
from ._pipeline import Call, Pipeline
from ._poller import Poller
from ._requests import (
    IMAGE_TO_VIDEO_PATH,
    TEXT_TO_VIDEO_PATH,
    ImageToVideo,
    TextToVideo,
    arguments_of,
    batch_request,
    validate_generation_id,
)

__all__ = ["AsyncAccount", "AsyncGenerations", "AsyncKolbo", "AsyncModels", "AsyncVideos"]

DEFAULT_RATE_LIMITS = RateLimits()
_UNSET: Any = object()


class AsyncKolbo:
    """The async Kolbo client, for asyncio and trio alike.

    Args:
        api_key: a ``kolbo_live_...`` key; defaults to ``$KOLBO_API_KEY``.
        base_url: defaults to ``$KOLBO_BASE_URL``, then ``$KOLBO_API_URL``, then
            ``https://api.kolbo.ai``. A trailing ``/api`` or ``/api/v1`` is accepted.
        timeout: per HTTP request, in seconds or as an `httpx.Timeout` (a generation POST
            always gets at least 120 s). Waiting for a generation has its own deadline: see
            `AsyncGeneration.wait`.
        max_retries: retries of one request on transient failures (never a paid POST that
            may have reached Kolbo).
        http_client: an `httpx.AsyncClient` to send through; it is left open on close.
        rate_limits: client-side pacing, `RateLimits()` by default; None turns it off.
        max_concurrent_requests: requests in flight at once, across every handle.

    Example:
        >>> async with AsyncKolbo() as client:                            # doctest: +SKIP
        ...     gen = await client.videos.generate("A drone over snowy peaks")
        ...     result = await gen.result()
        ...     print(result.url)
    """

    videos: AsyncVideos
    models: AsyncModels
    generations: AsyncGenerations
    account: AsyncAccount

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | httpx.URL | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        http_client: httpx.AsyncClient | None = None,
        rate_limits: RateLimits | None = DEFAULT_RATE_LIMITS,
        max_concurrent_requests: int = 32,
        _clock: Clock | None = None,
        _transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        settings = Settings(
            api_key=resolve_api_key(api_key),
            base_url=resolve_base_url(base_url),
            timeout=make_timeout(timeout),
            max_retries=_max_retries(max_retries),
        )
        if rate_limits is not None and not isinstance(rate_limits, RateLimits):
            raise InvalidRequestError(
                "rate_limits", f"must be a RateLimits or None, not {type(rate_limits).__name__}"
            )
        positive_int("max_concurrent_requests", max_concurrent_requests)
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError(
                f"http_client must be an httpx.AsyncClient, not {type(http_client).__name__}"
            )
        self._owns_http = http_client is None
        self._is_copy = False
        if http_client is None:
            http_client = httpx.AsyncClient(
                transport=_transport,
                timeout=settings.timeout,
                follow_redirects=False,
                limits=httpx.Limits(
                    max_connections=max_concurrent_requests,
                    max_keepalive_connections=max_concurrent_requests,
                ),
            )
        clock = _clock or SYSTEM_CLOCK
        self._rate_limits = rate_limits
        pacer = Pacer(rate_limits, clock, api_key=settings.api_key)
        rng = random.Random()
        self._pipeline = pipeline = Pipeline(
            settings=settings,
            http=http_client,
            pacer=pacer,
            # fast_acquire: an uncontended slot costs no trip through the event loop.
            limiter=anyio.Semaphore(max_concurrent_requests, fast_acquire=True),
            clock=clock,
            rng=rng,
        )
        self._poller = Poller(
            fetch=partial(_fetch_status, pipeline),
            clock=clock,
            pacer=pacer,
            rate_limits=rate_limits,
            max_in_flight=max_concurrent_requests,
            rng=rng,
        )
        # CDN downloads: their own connections and cap.
        self._transfers = Transfers(
            limit=max_concurrent_requests,
            transport=_transport,
            http_client=None if self._owns_http else http_client,
        )
        self._bind()

    def _bind(self) -> None:
        pipeline = self._pipeline
        handle = partial(
            AsyncGeneration, pipeline=pipeline, poller=self._poller, transfers=self._transfers
        )
        self.videos = AsyncVideos(pipeline, self._poller, handle)
        self.models = AsyncModels(pipeline)
        self.generations = AsyncGenerations(handle)
        self.account = AsyncAccount(pipeline)

    @property
    def base_url(self) -> httpx.URL:
        """The API root the client calls."""
        return self._pipeline.settings.base_url

    @property
    def timeout(self) -> httpx.Timeout:
        """The per-request timeout."""
        return self._pipeline.settings.timeout

    @property
    def max_retries(self) -> int:
        """Retries of one request on transient failures."""
        return self._pipeline.settings.max_retries

    @property
    def rate_limits(self) -> RateLimits | None:
        """Client-side pacing, or None when off."""
        return self._rate_limits

    def with_options(
        self,
        *,
        timeout: float | httpx.Timeout | None = _UNSET,
        max_retries: int = _UNSET,
    ) -> AsyncKolbo:
        """A client for a few calls with other settings.

        It shares this client's connection pool, rate limiter and concurrency cap; closing
        it does nothing, close the original.

        Example:
            >>> patient = client.with_options(timeout=300, max_retries=5)  # doctest: +SKIP
        """
        changes: dict[str, Any] = {}
        if timeout is not _UNSET:
            changes["timeout"] = make_timeout(timeout)
        if max_retries is not _UNSET:
            changes["max_retries"] = _max_retries(max_retries)
        copy = object.__new__(AsyncKolbo)
        copy._owns_http = False
        copy._is_copy = True
        copy._rate_limits = self._rate_limits
        copy._poller = self._poller
        copy._transfers = self._transfers
        copy._pipeline = self._pipeline.with_settings(
            attrs.evolve(self._pipeline.settings, **changes)
        )
        copy._bind()
        return copy

    async def aclose(self) -> None:
        """Close the connection pool the client opened (never a user-supplied one)."""
        if self._is_copy:  # a with_options copy: the original owns the pool and its lifecycle
            return
        lifecycle = self._pipeline.lifecycle
        lifecycle.closed = True
        # A paid POST whose caller left is still on the wire: its answer says whether Kolbo
        # charged, so the pool stays open until it lands (within the POST's own timeout).
        if lifecycle.paid_in_flight:
            lifecycle.landed = anyio.Event()
            await lifecycle.landed.wait()
        await self._transfers.aclose()
        if self._owns_http:
            await self._pipeline.http.aclose()

    async def __aenter__(self) -> AsyncKolbo:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        settings = self._pipeline.settings
        return (
            f"<AsyncKolbo base_url={str(settings.base_url)!r} "
            f"max_retries={settings.max_retries} rate_limits={self._rate_limits!r}>"
        )


class AsyncVideos:
    """``client.videos``: submit generations."""

    __slots__ = ("_handle", "_pipeline", "_poller", "_urls")

    def __init__(
        self, pipeline: Pipeline, poller: Poller, handle: Callable[..., AsyncGeneration]
    ) -> None:
        self._pipeline = pipeline
        self._poller = poller
        self._handle = handle
        self._urls = {
            path: pipeline.prepared("POST", path).url
            for path in (TEXT_TO_VIDEO_PATH, IMAGE_TO_VIDEO_PATH)
        }

    @arguments_of(TextToVideo)
    async def generate(self, *args: Any, **kwargs: Any) -> AsyncGeneration:
        """Submit a text-to-video generation and return its handle.

        Takes the fields of `TextToVideo`: ``generate(prompt, *, model=None,
        aspect_ratio=None, duration=None, ..., extra_body=None)``. Credits are charged now.
        Omit `model` to let Kolbo choose (Smart Select, the recommended default). Fields left
        as None are not sent; `extra_body` adds fields the SDK does not know yet. The POST is
        never retried once it may have reached Kolbo.

        Raises:
            InvalidRequestError: bad input, before anything is sent.
            SubmissionOutcomeUnknownError: the POST broke after it may have been charged.
            InsufficientCreditsError: the account cannot pay for it.

        Example:
            >>> gen = await client.videos.generate(                           # doctest: +SKIP
            ...     "A drone over snowy peaks", duration=5, aspect_ratio="16:9")
        """
        return await self._submit(*TextToVideo(*args, **kwargs).body())

    @arguments_of(ImageToVideo)
    async def from_image(self, *args: Any, **kwargs: Any) -> AsyncGeneration:
        """Submit an image-to-video generation (animate `image_url`) and return its handle.

        Takes the fields of `ImageToVideo`; same rules as `generate`. `prompt` describes the
        motion and is optional.

        Example:
            >>> gen = await client.videos.from_image(                         # doctest: +SKIP
            ...     "https://example.com/photo.jpg", prompt="Slow zoom in")
        """
        return await self._submit(*ImageToVideo(*args, **kwargs).body())

    def generate_many(
        self,
        requests: Iterable[TextToVideo | ImageToVideo | Mapping[str, Any]],
        *,
        concurrency: int = 8,
        journal: str | os.PathLike[str] | None = None,
        max_credits: float | None = None,
        resubmit_unknown: bool = False,
    ) -> AsyncBatch:
        """Submit many generations; yield a `BatchOutcome` for each as it finishes.

        `requests` are `TextToVideo` / `ImageToVideo` objects or dicts of their fields, all
        validated now: one bad item raises `InvalidRequestError` (``requests[3].duration``)
        and nothing is sent. POSTs are paced at the generation rate; at most `concurrency`
        generations are in flight (submitted, not finished) at once; all are polled by the
        client's shared poller. Outcomes come in completion order; one failure never stops
        the rest.

        Args:
            journal: a SQLite file recording each item before its POST, its id as soon as
                Kolbo answers and its final status. Running the same batch again with it
                re-attaches what was submitted, returns what finished without a request,
                and reports a POST whose answer was lost (`SubmissionOutcomeUnknownError`)
                instead of paying for it twice.
            max_credits: stop before an item whose `Model.cost` estimate would take the
                batch past this many credits (with Smart Select, whose price is unknown
                until charged, once the charges reach it). POSTs then go one at a time.
            resubmit_unknown: with a journal, send again the items whose earlier POST
                outcome is unknown (you checked they were not created).

        Example:
            >>> requests = [TextToVideo(p, duration=5) for p in prompts]      # doctest: +SKIP
            >>> async for outcome in client.videos.generate_many(requests, journal="batch.db"):
            ...     if outcome.error is None:
            ...         await outcome.generation.download(f"video-{outcome.index}.mp4")
        """
        if isinstance(requests, (str, bytes, Mapping)):
            raise InvalidRequestError("requests", "must be an iterable of requests")
        positive_int("concurrency", concurrency)
        if max_credits is not None and (
            isinstance(max_credits, bool)
            or not isinstance(max_credits, (int, float))
            or not 0 < max_credits < math.inf
        ):
            raise InvalidRequestError(
                "max_credits", f"must be a positive number or None, not {max_credits!r}"
            )
        if not isinstance(resubmit_unknown, bool):
            raise InvalidRequestError(
                "resubmit_unknown", f"must be True or False, not {resubmit_unknown!r}"
            )
        items = [batch_request(index, item) for index, item in enumerate(requests)]
        return AsyncBatch(
            self._poller,
            submitter=_Submitter(self),
            items=items,
            concurrency=concurrency,
            journal=journal_path(journal),
            max_credits=max_credits,
            resubmit_unknown=resubmit_unknown,
        )

    async def _submit(
        self, path: str, body: dict[str, Any], *, admitted: bool = False
    ) -> AsyncGeneration:
        submission = await self._pipeline.call(
            Call("POST", path, json=body, generation=True, url=self._urls[path]),
            _parse_submission,
            admitted=admitted,
        )
        return self._handle(submission.generation_id, submission=submission)


class AsyncModels:
    """``client.models``: the model catalog."""

    __slots__ = ("_pipeline",)

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def list(self, type: str | None = "video") -> list[Model]:
        """List the models for `type`: ``"video"`` (text to video) or ``"video_from_image"``.

        Kolbo's raw types (``"text_to_video"``, ``"img_to_video"``, ...) pass through, and
        None lists every model. Model identifiers change: fetch them rather than hard-coding.

        Example:
            >>> models = await client.models.list(type="video")               # doctest: +SKIP
            >>> cheapest = min(models, key=lambda m: m.cost(5) or float("inf"))
        """
        params = None
        if type is not None:
            if not isinstance(type, str) or not type.strip():
                raise InvalidRequestError("type", f"must be a non-empty string, not {type!r}")
            params = {"type": type}
        return await self._pipeline.call(
            Call("GET", "/api/v1/models", params=params), _parse_models
        )


class AsyncGenerations:
    """``client.generations``: handles for generations submitted elsewhere or earlier."""

    __slots__ = ("_handle",)

    def __init__(self, handle: Callable[..., AsyncGeneration]) -> None:
        self._handle = handle

    def attach(self, generation_id: str) -> AsyncGeneration:
        """A handle from an id alone; no request is made.

        Example:
            >>> gen = client.generations.attach("665f1c2e9b1d4a0012345678")  # doctest: +SKIP
            >>> status = await gen.wait()                                     # doctest: +SKIP
        """
        return self._handle(validate_generation_id(generation_id))


class AsyncAccount:
    """``client.account``: the account's balance."""

    __slots__ = ("_pipeline",)

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def credits(self) -> Credits:
        """The credit balance (plan, packs and redemptions; 1 credit = US$0.01)."""
        return await self._pipeline.call(
            Call("GET", "/api/v1/account/credits"), _parse_credits
        )


class _Submitter:
    """What `generate_many`'s batch may do with the client (`_batch.Submitter`)."""

    __slots__ = ("_videos",)

    def __init__(self, videos: AsyncVideos) -> None:
        self._videos = videos

    async def admit(self) -> None:
        await self._videos._pipeline.pacer.admit(GENERATE)

    async def submit(self, path: str, body: dict[str, Any]) -> AsyncGeneration:
        return await self._videos._submit(path, body, admitted=True)

    def attach(
        self, generation_id: str, submission: Submission, known: GenerationStatus | None
    ) -> AsyncGeneration:
        return self._videos._handle(generation_id, submission=submission, known=known)

    async def catalog(self) -> list[Model]:
        return await AsyncModels(self._videos._pipeline).list(type=None)

    def closed(self) -> bool:
        return self._videos._pipeline.lifecycle.closed


async def _fetch_status(pipeline: Pipeline, generation_id: str) -> GenerationStatus:
    """One status poll for the shared poller (paced by it; `Retryable` when worth another)."""
    call = status_call(pipeline, generation_id)
    return await pipeline.once(call, partial(parse_status, generation_id))


def _parse_submission(data: dict[str, Any]) -> Submission:
    generation_id = submitted_id(data)
    if generation_id is None:
        raise ValueError("the answer has no 'generation_id'")
    if generation_id != data["generation_id"]:
        data = {**data, "generation_id": generation_id}
    return structure(data, Submission)


def _parse_models(data: dict[str, Any]) -> list[Model]:
    models = data.get("models")
    if not isinstance(models, list):
        raise ValueError("the answer has no 'models' list")
    return [
        structure(item, Model)
        for item in models
        if isinstance(item, dict) and isinstance(item.get("identifier"), str)
    ]


def _parse_credits(data: dict[str, Any]) -> Credits:
    credits = data.get("credits")
    if not isinstance(credits, dict):
        raise ValueError("the answer has no 'credits' object")
    return structure(credits, Credits)


def _max_retries(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequestError("max_retries", f"must be a non-negative integer, not {value!r}")
    return value
