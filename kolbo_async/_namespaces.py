"""`AsyncKolbo`'s namespaces: ``videos``, ``images``, ``models``, ``generations``, ``account``."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from ._config import positive_int
from ._exceptions import InvalidRequestError
from ._handles import AsyncGeneration
from ._lazy import DeferredModule
from ._media import AsyncMediaLibrary, MediaSender
from ._pacing import GENERATE
from ._pipeline import Call, Pipeline, log_orphan
from ._poller import Poller
from ._signatures import arguments_of
from ._transfers import Transfers

if TYPE_CHECKING:
    import kolbo_async

    from . import _requests, _routes_image, _routes_video
    from ._batch import AsyncBatch
    from ._models import Credits, GenerationStatus, Model, Submission
else:  # a program pays for the route classes it uses, when it first uses them
    _requests = DeferredModule("_requests")
    _routes_image = DeferredModule("_routes_image")
    _routes_video = DeferredModule("_routes_video")
    kolbo_async = DeferredModule("")  # public annotations: `typing.get_type_hints`

__all__ = [
    "AsyncAccount",
    "AsyncGenerations",
    "AsyncImages",
    "AsyncMediaLibrary",
    "AsyncModels",
    "AsyncVideos",
]


class AsyncVideos:
    """``client.videos``: submit generations."""

    __slots__ = ("_handle", "_media", "_pipeline", "_poller", "_urls")

    def __init__(
        self,
        pipeline: Pipeline,
        poller: Poller,
        handle: Callable[..., AsyncGeneration],
        transfers: Transfers | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._poller = poller
        self._handle = handle
        # Sends a route's local files (parts, or uploads first) and re-hosts untrusted
        # references; `transfers` downloads those (a raw-response copy makes its own).
        self._media = MediaSender(pipeline, transfers)
        self._urls: dict[str, httpx.URL | None] = {}

    @arguments_of(lambda: _requests.TextToVideo)
    async def generate(self, *args: Any, **kwargs: Any) -> AsyncGeneration:
        """Submit a text-to-video generation and return its handle.

        Takes the fields of `TextToVideo`: ``generate(prompt, *, model=None,
        aspect_ratio=None, duration=None, ..., extra_body=None)``. Credits are charged now.
        Wherever a call takes a medium, it is an http(s) URL or a local file (a path, sent
        as a multipart part where the route takes files, else uploaded first).
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
        return await self._submit(*_requests.TextToVideo(*args, **kwargs).body())

    @arguments_of(lambda: _requests.ImageToVideo)
    async def from_image(self, *args: Any, **kwargs: Any) -> AsyncGeneration:
        """Submit an image-to-video generation (animate `image_url`) and return its handle.

        Takes the fields of `ImageToVideo`; same rules as `generate`. `prompt` describes the
        motion and is optional. `image_url` is an http(s) URL or a local file (a path), which
        is uploaded first with `client.media.upload` (Kolbo's route takes no files).

        Example:
            >>> gen = await client.videos.from_image(                         # doctest: +SKIP
            ...     "https://example.com/photo.jpg", prompt="Slow zoom in")
        """
        return await self._submit(*_requests.ImageToVideo(*args, **kwargs).body())

    @arguments_of(lambda: _routes_video.FramesToVideo)
    async def from_frames(self, *args: Any, **kwargs: Any) -> AsyncGeneration:
        """Submit a video from `first_frame` to `last_frame` and return its handle.

        Takes the fields of `FramesToVideo`; same rules as `generate`.

        Example:
            >>> gen = await client.videos.from_frames(                        # doctest: +SKIP
            ...     "https://example.com/day.png", "https://example.com/night.png",
            ...     prompt="Time-lapse, day to night", duration=5)
        """
        return await self._submit(*_routes_video.FramesToVideo(*args, **kwargs).body())

    @arguments_of(lambda: _routes_video.VideoToVideo)
    async def from_video(self, *args: Any, **kwargs: Any) -> AsyncGeneration:
        """Submit a video-to-video generation (restyle `video`) and return its handle.

        Takes the fields of `VideoToVideo`; same rules as `generate`.
        """
        return await self._submit(*_routes_video.VideoToVideo(*args, **kwargs).body())

    @arguments_of(lambda: _routes_video.Lipsync)
    async def lipsync(self, *args: Any, **kwargs: Any) -> AsyncGeneration:
        """Submit a lip-sync of `face` to `audio` and return its handle.

        Takes the fields of `Lipsync`; same rules as `generate`.
        """
        return await self._submit(*_routes_video.Lipsync(*args, **kwargs).body())

    @arguments_of(lambda: _routes_video.ElementsToVideo)
    async def from_elements(self, *args: Any, **kwargs: Any) -> AsyncGeneration:
        """Submit one scene made of `prompt` and reference media; return its handle.

        Takes the fields of `ElementsToVideo`; same rules as `generate`.

        Example:
            >>> gen = await client.videos.from_elements(                      # doctest: +SKIP
            ...     "The bottle turns on a marble table", images=[front, side],
            ...     audio=[voice], keyframes=[(front, 0), (side, 4.5)])
        """
        return await self._submit(*_routes_video.ElementsToVideo(*args, **kwargs).body())

    def generate_many(
        self,
        requests: Iterable[_requests.Route | Mapping[str, Any]],
        *,
        concurrency: int = 8,
        journal: str | os.PathLike[str] | None = None,
        max_credits: float | None = None,
        resubmit_unknown: bool = False,
        batch_id: str | None = None,
        lease: float | None = None,
    ) -> AsyncBatch:
        """Submit many generations; yield a `BatchOutcome` for each as it finishes.

        `requests` are request objects of any route (`TextToVideo`, `ImageToVideo`,
        `FramesToVideo`, `ElementsToVideo`, `VideoToVideo`, `Lipsync`, `TextToImage`,
        `ImageEdit`) or dicts of `TextToVideo` / `ImageToVideo` fields, all validated now: one
        bad item raises `InvalidRequestError` (``requests[3].duration``) and nothing is sent.
        A journal knows a local file in a request by its content (an edited file is a new
        item). POSTs are paced at the generation rate; at most `concurrency`
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
            batch_id: with ``journal="postgresql://..."``, the batch that workers on any
                number of machines share: each passes the same requests and `batch_id`, each
                item is claimed (and sent) by one worker, and each worker yields the outcomes
                of the items it claimed. Needs ``kolbo-async[postgres]``.
            lease: seconds a worker holds its items without renewing them (default 60;
                renewed while it lives); a dead worker's items are then taken over:
                re-attached when their id is known, else reported outcome-unknown.

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
        # Imported here: the batch machinery (journals, budgets, feeds) costs import time
        # that a program making single calls should not pay.
        from ._batch import AsyncBatch, journal_spec
        from ._request_items import batch_request

        items = [batch_request(index, item) for index, item in enumerate(requests)]

        return AsyncBatch(
            self._poller,
            submitter=_Submitter(self),
            items=items,
            concurrency=concurrency,
            journal=journal_spec(journal, batch_id, lease),
            max_credits=max_credits,
            resubmit_unknown=resubmit_unknown,
        )

    async def _submit(
        self, path: str, body: dict[str, Any], *, admitted: bool = False
    ) -> AsyncGeneration:
        hooks = self._pipeline.hooks
        started = time.perf_counter()
        url = self._urls.get(path)
        if url is None:  # a route's URL is built once, on its first POST
            url = self._urls[path] = self._pipeline.prepared("POST", path).url
        call = Call("POST", path, json=body, generation=True, url=url)
        submission = await self._media.submit(call, _parse_submission, admitted=admitted)
        try:
            if hooks:
                from ._hooks import GenerationSubmitted, emit

                model = submission.model or body.get("model")
                seconds = time.perf_counter() - started
                emit(hooks, GenerationSubmitted(
                    submission.generation_id, path, model, submission.credits_charged, seconds
                ))  # fmt: skip
            return self._handle(submission.generation_id, submission=submission)
        except BaseException:
            # Charged, and not handed back: trio raises a Ctrl-C in whatever code runs (a
            # hook, say). The id is all that is left to give.
            log_orphan(call, submission, None)
            raise


class AsyncImages:
    """``client.images``: submit image generations; each returns the same handle as a video,
    whose `result()` is an `ImageResult`."""

    __slots__ = ("_videos",)

    def __init__(self, videos: AsyncVideos) -> None:
        self._videos = videos  # one submit path for every route

    @arguments_of(lambda: _routes_image.TextToImage)
    async def generate(self, *args: Any, **kwargs: Any) -> AsyncGeneration:
        """Submit a text-to-image generation and return its handle.

        Takes the fields of `TextToImage`. Same rules as `AsyncVideos.generate`: credits are
        charged now, fields left as None are not sent, the POST is never resent once it may
        have reached Kolbo. The handle's `result()` is an `ImageResult`.

        Example:
            >>> gen = await client.images.generate(                           # doctest: +SKIP
            ...     "A lighthouse at dawn", num_images=2)
            >>> paths = [await gen.download(f"light-{i}.png", index=i) for i in range(2)]
        """
        return await self._videos._submit(*_routes_image.TextToImage(*args, **kwargs).body())

    @arguments_of(lambda: _routes_image.ImageEdit)
    async def edit(self, *args: Any, **kwargs: Any) -> AsyncGeneration:
        """Submit an edit of `images` (http(s) URLs) as `prompt` says; return its handle.

        Takes the fields of `ImageEdit` (`images` is sent as ``source_images``); same rules
        as `generate`. Local files (paths) are uploaded first with `client.media.upload`.
        """
        return await self._videos._submit(*_routes_image.ImageEdit(*args, **kwargs).body())


class AsyncModels:
    """``client.models``: the model catalog."""

    __slots__ = ("_pipeline",)

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def list(self, type: str | None = "video") -> list[kolbo_async.Model]:
        """List the models for `type` (None: every model).

        ``"video"`` (text to video) and ``"video_from_image"``, or any of Kolbo's catalog
        types, one per route: ``"text_to_img"``, ``"image_editing"``,
        ``"firstlastgenerations"``, ``"elements"``, ``"video_to_video"``,
        ``"lipsync-image"``, ``"lipsync-video"`` (and the raw ``"text_to_video"``,
        ``"img_to_video"``). A model's caps are on `Model` or in its `raw`. Model identifiers
        change: fetch them rather than hard-coding.

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
        return self._handle(_requests.validate_generation_id(generation_id))


class AsyncAccount:
    """``client.account``: the account's balance."""

    __slots__ = ("_pipeline",)

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def credits(self) -> kolbo_async.Credits:
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


# The models and their converter (cattrs) are loaded with the first answer to parse.


def _parse_submission(data: dict[str, Any]) -> Submission:
    from ._answers import submitted_id
    from ._convert import structure
    from ._models import Submission

    generation_id = submitted_id(data)
    if generation_id is None:
        raise ValueError("the answer has no 'generation_id'")
    if generation_id != data["generation_id"]:
        data = {**data, "generation_id": generation_id}
    return structure(data, Submission)


def _parse_models(data: dict[str, Any]) -> list[Model]:
    from ._convert import structure
    from ._models import Model

    models = data.get("models")
    if not isinstance(models, list):
        raise ValueError("the answer has no 'models' list")
    return [
        structure(item, Model)
        for item in models
        if isinstance(item, dict) and isinstance(item.get("identifier"), str)
    ]


def _parse_credits(data: dict[str, Any]) -> Credits:
    from ._convert import structure
    from ._models import Credits

    credits = data.get("credits")
    if not isinstance(credits, dict):
        raise ValueError("the answer has no 'credits' object")
    return structure(credits, Credits)
