"""The blocking wrapper: same surface, same results, threads, loops, Ctrl-C, shutdown.

Everything here runs against `FakeKolbo`, a thread-safe `httpx.MockTransport` handler, so the
wrapper is tested on its own (no simulator) and each scenario takes milliseconds.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.from_thread import start_blocking_portal

import kolbo_async as k
import kolbo_async._batch
import kolbo_async._client
import kolbo_async._sync
from kolbo_async import AsyncGeneration, AsyncKolbo, Generation, Kolbo
from kolbo_async._progress import GenerationProgress
from kolbo_async.testing import VirtualClock

KEY = "kolbo_live_" + "9a" * 20
CDN = "https://cdn.example.com/"
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(4000)

# ---------------------------------------------------------------------------------------------
# An in-process Kolbo


class FakeKolbo:
    """A thread-safe Kolbo behind `httpx.MockTransport`, scripted by the prompt.

    Each status GET moves a generation one step along its script, then it stays on the last
    step; a ``"held"`` generation moves only when the test calls `advance`.
    """

    SCRIPTS: typing.ClassVar[dict[str, list[tuple[str, int]]]] = {
        "a cat": [("pending", 0), ("processing", 40), ("completed", 100)],
        "held": [("pending", 0), ("processing", 50), ("completed", 100)],
        "fail": [("processing", 10), ("failed", 10)],
        "forever": [("processing", 5)],
    }

    def __init__(self) -> None:
        # Reentrant: a test's SIGINT handler runs in whatever the main thread was doing,
        # this fake's own answer (lock held) included, and may touch the fake too.
        self.lock = threading.RLock()
        self.requests: list[httpx.Request] = []
        self.prompts: dict[str, str] = {}
        self.steps: dict[str, int] = {}
        self.cancelled: set[str] = set()
        self.arrived = threading.Condition(self.lock)
        self.transport = httpx.MockTransport(self.handle)

    def wait_for(self, count: int, path_end: str = "") -> None:
        """Block until `count` requests whose path ends with `path_end` have arrived (a
        rendezvous with the loop's thread instead of a guessed sleep)."""
        with self.arrived:
            done = self.arrived.wait_for(
                lambda: sum(r.url.path.endswith(path_end) for r in self.requests) >= count,
                timeout=10,
            )
        assert done, f"fewer than {count} requests to *{path_end} arrived"

    def polls(self) -> int:
        with self.lock:
            return sum(r.url.path.endswith("/status") for r in self.requests)

    def advance(self, generation_id: str) -> None:
        with self.lock:
            self.steps[generation_id] += 1

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            self.arrived.notify_all()
            return self._answer(request)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.example.com":
            return httpx.Response(200, content=VIDEO)
        if request.headers.get("x-api-key") != KEY:
            return _error(401, "INVALID_API_KEY", "Invalid API key")
        path = request.url.path
        if request.method == "POST" and path.startswith("/api/v1/generate/video"):
            prompt = json.loads(request.content).get("prompt") or "a cat"
            if prompt not in self.SCRIPTS:
                return _error(400, "MODEL_NOT_FOUND", f"no script for {prompt!r}")
            generation_id = f"{len(self.prompts) + 1:024x}"
            self.prompts[generation_id] = prompt
            self.steps[generation_id] = 0
            return _ok(
                generation_id=generation_id,
                type="video",
                model="auto",
                credits_charged=10,
                poll_url=f"/api/v1/generate/{generation_id}/status",
                poll_interval_hint=0.05,  # the SDK's floor: tests stay fast
            )
        if match := re.fullmatch(r"/api/v1/generate/([^/]+)/(status|cancel)", path):
            generation_id, action = match.groups()
            if generation_id not in self.prompts:
                return _error(404, "NOT_FOUND", "Generation not found")
            state, body = self._status(generation_id)
            if action == "cancel":
                if state in ("completed", "failed", "cancelled"):
                    return _error(409, "ALREADY_FINISHED", "Generation already finished")
                self.cancelled.add(generation_id)
                return _ok(generation_id=generation_id, state="cancelled", credits_refunded=10)
            if self.prompts[generation_id] != "held":
                self.steps[generation_id] += 1
            return _ok(**body)
        if path == "/api/v1/models":
            model = {"identifier": "kling-2", "name": "Kling", "credit": 10, "types": ["video"]}
            return _ok(models=[model], count=1)
        if path == "/api/v1/account/credits":
            return _ok(credits={"total": 90, "plan_credits": 90, "credit_pack": 0})
        return _error(404, "NOT_FOUND", "no such route")

    def _status(self, generation_id: str) -> tuple[str, dict[str, Any]]:
        script = self.SCRIPTS[self.prompts[generation_id]]
        state, progress = script[min(self.steps[generation_id], len(script) - 1)]
        if generation_id in self.cancelled:
            state = "cancelled"
        body: dict[str, Any] = {
            "generation_id": generation_id,
            "state": state,
            "progress": progress,
            "poll_interval_hint": 0.05,
        }
        if state == "completed":
            body["result"] = {"urls": [CDN + "v.mp4"], "thumbnail_url": CDN + "t.jpg"}
        if state == "failed":
            body["error"] = "The provider rejected the prompt"
        return state, body


def _ok(**fields: Any) -> httpx.Response:
    return httpx.Response(200, json={"success": True, **fields})


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"success": False, "error": message, "code": code})


def kolbo(fake: FakeKolbo, **options: Any) -> Kolbo:
    """A blocking client on `fake`, unpaced, on its own `VirtualClock`: polls at the
    fake's hint take no real time (a waiter whose generation does not move spins through
    virtual time until its deadline, so those tests give generous deadlines)."""
    return Kolbo(KEY, _transport=fake.transport, rate_limits=None, _clock=VirtualClock(), **options)


@pytest.fixture
def fake() -> FakeKolbo:
    """A fresh `FakeKolbo`."""
    return FakeKolbo()


@pytest.fixture
def client(fake: FakeKolbo) -> Iterator[Kolbo]:
    """A blocking client on `fake`, closed afterwards."""
    with kolbo(fake) as client:
        yield client


def _loop_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("kolbo-")}


def _threads_end(before: set[threading.Thread]) -> bool:
    """Whether every loop or closing thread started since `before` ends within 5 s."""
    for _ in range(50):  # a hang guard, not a measure: a thread that ends returns at once
        left = _loop_threads() - before
        if not left:
            return True
        gc.collect()  # an unclosed client's thread stops when its last holder is collected
        next(iter(left)).join(timeout=0.1)
    return False


@pytest.fixture(autouse=True)
def _no_thread_left_behind() -> Iterator[None]:
    """Every test leaves the threads as it found them: no portal or helper thread leaks."""
    before = _loop_threads()
    yield
    assert _threads_end(before)


# ---------------------------------------------------------------------------------------------
# The surface: every public name and parameter of the async classes, found by introspection

RENAMED = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__"}


def _blocking_annotation(annotation: str) -> str:
    """What an async annotation reads as on the blocking side."""
    # An async stream (the progress object, a future batch's AsyncIterator) is a plain
    # iterator there; every other AsyncX class has a blocking X.
    annotation = annotation.replace("GenerationProgress", "Iterator[kolbo_async.GenerationStatus]")
    return re.sub(r"\bAsync(?=[A-Z])", "", annotation)


def _public(cls: type) -> dict[str, Any]:
    return {
        name: inspect.getattr_static(cls, name)
        for name in dir(cls)
        if not name.startswith("_") or name in RENAMED or name in RENAMED.values()
    }


def _twins() -> list[tuple[type, type]]:
    """(async class, blocking class) pairs: the clients, the handles, and every namespace."""
    pairs: list[tuple[type, type]] = [
        (AsyncKolbo, Kolbo),
        (AsyncGeneration, Generation),
        (kolbo_async._batch.AsyncBatch, kolbo_async._sync_handles.Batch),
    ]
    # Resolved in the defining modules: __init__ renames __module__ to "kolbo_async".
    blocking = typing.get_type_hints(Kolbo, vars(kolbo_async._sync))
    for name, cls in typing.get_type_hints(AsyncKolbo, vars(kolbo_async._client)).items():
        pairs.append((cls, blocking.get(name, type(None))))
    return pairs


class TestSurface:
    @pytest.mark.parametrize(("async_cls", "sync_cls"), _twins(), ids=lambda c: c.__name__)
    def test_every_public_name_and_parameter_is_mirrored(
        self, async_cls: type, sync_cls: type
    ) -> None:
        """Each public name of the async class exists on the blocking one: same parameters,
        kinds, defaults and (mapped) annotations, no coroutine, and a docstring that starts
        like the async one and points to it."""
        assert sync_cls is not type(None), f"Kolbo lacks the namespace for {async_cls}"
        theirs = _public(sync_cls)
        for async_name, member in _public(async_cls).items():
            name = RENAMED.get(async_name, async_name)
            assert name in theirs, f"{sync_cls.__name__} lacks {name}"
            twin = theirs[name]
            if isinstance(member, property):
                twin = twin.fget
            func = member.fget if isinstance(member, property) else member
            if callable(func):
                assert not inspect.iscoroutinefunction(twin), name
                assert not inspect.isasyncgenfunction(twin), name
                mine = inspect.signature(func)
                other = inspect.signature(twin)
                assert list(mine.parameters) == list(other.parameters), name
                for param, same in zip(
                    mine.parameters.values(), other.parameters.values(), strict=True
                ):
                    assert (param.kind, param.default) == (same.kind, same.default), name
                    expected = _blocking_annotation(str(param.annotation))
                    assert str(same.annotation) == expected, f"{name}({param.name})"
                expected = _blocking_annotation(str(mine.return_annotation))
                assert str(other.return_annotation) == expected, f"{name} -> ..."
            if name.startswith("__"):
                continue
            doc = inspect.getdoc(twin) or ""
            assert doc, f"{sync_cls.__name__}.{name} has no docstring"
            summary = _blocking_annotation((inspect.getdoc(func) or "").split("\n\n")[0])
            assert doc.startswith(summary), f"{sync_cls.__name__}.{name}: summary differs"
            assert f"`{async_cls.__name__}.{async_name}`" in doc, f"{name}: no 'Same as'"

    def test_namespaces_are_typed_attributes(self) -> None:
        """Kolbo declares the same namespaces as AsyncKolbo, typed with blocking classes."""
        assert Kolbo.__annotations__ == {
            name: _blocking_annotation(value) for name, value in AsyncKolbo.__annotations__.items()
        }

    def test_every_exported_async_name_has_a_twin(self) -> None:
        """A new exported Async class or async function cannot be forgotten by the wrapper."""
        paired = {a for a, _ in _twins()}
        for name in k.__all__:
            obj = getattr(k, name)
            if isinstance(obj, type):
                if name.startswith("Async"):
                    assert obj in paired, f"{name} has no blocking twin in this test's pairs"
            elif callable(obj):
                returns = str(inspect.signature(obj).return_annotation)
                is_async = inspect.iscoroutinefunction(obj) or inspect.isasyncgenfunction(obj)
                # One function may serve both worlds (as_completed): then it says so.
                serves_both = all(
                    re.sub(r"\bAsync(?=[A-Z])", "", part.strip()) in returns.split(" | ")
                    for part in returns.split(" | ")
                )
                assert not is_async, f"{name} needs a blocking twin"
                assert "Async" not in returns or serves_both, f"{name} needs a blocking twin"

    def test_async_http_client_only(self) -> None:
        """A blocking httpx.Client cannot be the transport: a clear TypeError, no thread."""
        with httpx.Client() as http, pytest.raises(TypeError, match="AsyncClient"):
            Kolbo(KEY, http_client=http)  # type: ignore[arg-type]

    def test_constructor_errors_are_the_async_ones(self) -> None:
        """No key: the same KolboError as AsyncKolbo, and the loop thread is stopped."""
        with pytest.raises(k.KolboError, match="KOLBO_API_KEY"):
            Kolbo()
        with pytest.raises(k.InvalidRequestError):
            Kolbo(KEY, max_retries=-1)

    def test_repr_has_no_key(self, client: Kolbo) -> None:
        """repr(Kolbo) shows the base URL and never the key."""
        assert KEY not in repr(client)
        assert repr(client).startswith("<Kolbo base_url='https://api.kolbo.ai'")

    def test_properties_and_with_options(self, client: Kolbo) -> None:
        """Properties read the async client's; with_options returns a working Kolbo."""
        assert client.max_retries == 2
        assert client.rate_limits is None
        patient = client.with_options(timeout=300, max_retries=5)
        assert isinstance(patient, Kolbo)
        assert (patient.max_retries, patient.timeout.read) == (5, 300)
        assert patient.account.credits().total == 90


# ---------------------------------------------------------------------------------------------
# The same scenarios through AsyncKolbo (on asyncio and trio) and Kolbo, written once


class Api:
    """Either client behind one interface: `do(fn)` calls ``fn(client)`` and settles it."""

    def __init__(self, kind: str, fake: FakeKolbo) -> None:
        self.kind = kind
        self._fake = fake
        self._stack = ExitStack()
        self._portal = None
        if kind != "sync":
            self._portal = self._stack.enter_context(start_blocking_portal(kind))
        self.client = self.another(api_key=KEY)

    def another(self, **options: Any) -> Any:
        """One more client of the same kind on the same fake, closed with the rest."""
        options.update(_transport=self._fake.transport, rate_limits=None, _clock=VirtualClock())
        if self._portal is None:
            return self._stack.enter_context(Kolbo(**options))

        async def make() -> AsyncKolbo:
            return AsyncKolbo(**options)

        client = self._portal.call(make)
        self._stack.callback(self._portal.call, client.aclose)
        return client

    def do(self, fn: Callable[[Any], Any]) -> Any:
        if self._portal is None:
            return fn(self.client)

        async def run() -> Any:
            result = fn(self.client)
            return await result if inspect.isawaitable(result) else result

        return self._portal.call(run)

    def collect(self, updates: Any) -> list[Any]:
        if self._portal is None:
            return list(updates)

        async def run() -> list[Any]:
            return [u async for u in updates]

        return self._portal.call(run)

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(params=["asyncio", "trio", "sync"])
def api(request: pytest.FixtureRequest, fake: FakeKolbo) -> Iterator[Api]:
    """The async client on each backend, then the blocking one."""
    api = Api(request.param, fake)
    yield api
    api.close()


class TestSameBehaviour:
    """Same arguments, same results, same exception classes, whichever client."""

    def test_generate_progress_result(self, api: Api) -> None:
        """Submit, stream every change, read the result."""
        gen = api.do(lambda c: c.videos.generate("a cat", duration=5, aspect_ratio="16:9"))
        assert gen.submission.credits_charged == 10
        updates = api.collect(gen.progress())
        assert [(u.state, u.progress) for u in updates] == [
            ("pending", 0),
            ("processing", 40),
            ("completed", 100),
        ]
        assert api.do(lambda c: gen.result()).url == CDN + "v.mp4"

    def test_failure_raises_the_same_class(self, api: Api) -> None:
        """A failed generation raises GenerationFailedError from wait() and result()."""
        gen = api.do(lambda c: c.videos.from_image("https://example.com/a.jpg", prompt="fail"))
        with pytest.raises(k.GenerationFailedError, match="rejected") as info:
            api.do(lambda c: gen.wait())
        assert info.value.generation_id == gen.id
        with pytest.raises(k.GenerationFailedError):
            api.do(lambda c: gen.result())

    def test_cancel_and_409(self, api: Api) -> None:
        """cancel() returns the status; on 409 (already finished) the current one."""
        running = api.do(lambda c: c.videos.generate("forever"))
        assert api.do(lambda c: running.cancel()).state == "cancelled"
        with pytest.raises(k.GenerationCancelledError):
            api.do(lambda c: running.wait())
        done = api.do(lambda c: c.videos.generate("a cat"))
        api.do(lambda c: done.wait())
        assert api.do(lambda c: done.cancel()).state == "completed"

    def test_attach_models_credits(self, api: Api, fake: FakeKolbo) -> None:
        """attach() makes no request; models.list and account.credits parse the same."""
        gen = api.do(lambda c: c.videos.generate("a cat"))
        sent = len(fake.requests)
        again = api.do(lambda c: c.generations.attach(gen.id))
        assert (again.id, again.submission, len(fake.requests)) == (gen.id, None, sent)
        assert api.do(lambda c: again.wait()).state == "completed"
        assert [m.identifier for m in api.do(lambda c: c.models.list())] == ["kling-2"]
        assert api.do(lambda c: c.account.credits()).total == 90

    def test_errors_are_the_same_classes(self, api: Api, fake: FakeKolbo) -> None:
        """Bad input fails before any request; API errors map to the same classes."""
        with pytest.raises(k.InvalidRequestError) as info:
            api.do(lambda c: c.videos.generate("  "))
        assert info.value.field == "prompt"
        with pytest.raises(k.InvalidRequestError):
            api.do(lambda c: c.generations.attach(""))
        with pytest.raises(k.InvalidRequestError):
            api.do(lambda c: c.generations.attach("0" * 24).progress(timeout=-1))
        assert fake.requests == []
        with pytest.raises(k.BadRequestError):
            api.do(lambda c: c.videos.generate("no such script"))
        with pytest.raises(k.NotFoundError):
            api.do(lambda c: c.generations.attach("f" * 24).status())
        stranger = api.another(api_key="kolbo_live_" + "0" * 40)
        with pytest.raises(k.AuthenticationError, match="Invalid API key"):
            api.do(lambda c: stranger.account.credits())

    def test_download(self, api: Api, tmp_path: Path) -> None:
        """download() writes the video and reports progress."""
        gen = api.do(lambda c: c.videos.generate("a cat"))
        seen: list[int] = []
        path = api.do(
            lambda c: gen.download(tmp_path / "v.mp4", on_progress=lambda d, t: seen.append(d))
        )
        assert path.read_bytes() == VIDEO
        assert seen[-1] == len(VIDEO)
        with pytest.raises(k.InvalidRequestError):
            api.do(lambda c: gen.download(tmp_path / "v.mp4"))
        thumb = api.do(lambda c: gen.download_thumbnail(tmp_path / "t.jpg"))
        assert thumb.read_bytes() == VIDEO

    def test_with_options_copy(self, api: Api) -> None:
        """A with_options copy works and shares the original's pool."""
        patient = api.do(lambda c: c.with_options(max_retries=5))
        assert patient.max_retries == 5
        assert api.do(lambda c: patient.account.credits()).total == 90

    def test_closing_a_copy_leaves_the_original_open(self, api: Api) -> None:
        """Closing a with_options copy does nothing to the original."""
        patient = api.do(lambda c: c.with_options(max_retries=5))
        api.do(lambda c: patient.aclose() if api.kind != "sync" else patient.close())
        assert api.do(lambda c: c.account.credits()).total == 90


# ---------------------------------------------------------------------------------------------
# What only the blocking client has to get right


class TestProgress:
    def test_items_stream_as_they_happen(self, client: Kolbo, fake: FakeKolbo) -> None:
        """Each item arrives before the next state exists: the server moves on only after
        the loop body saw the previous item, so collecting first would time out."""
        gen = client.videos.generate("held")
        seen = []
        for update in gen.progress(timeout=10):
            seen.append((update.state, update.progress))
            fake.advance(gen.id)
        assert seen == [("pending", 0), ("processing", 50), ("completed", 100)]

    def test_break_releases_the_stream(
        self, fake: FakeKolbo, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``break`` closes the async stream at once; nothing polls afterwards."""
        closed: list[GenerationProgress] = []
        original = GenerationProgress.aclose

        async def aclose(self: GenerationProgress) -> None:
            closed.append(self)
            await original(self)

        monkeypatch.setattr(GenerationProgress, "aclose", aclose)
        clock = VirtualClock()
        with Kolbo(KEY, _transport=fake.transport, rate_limits=None, _clock=clock) as client:
            gen = client.videos.generate("forever")
            for update in gen.progress():
                assert update.state == "processing"
                break
            assert len(closed) == 1
            polls = fake.polls()
            # A minute on the loop's clock: 1,200 poll intervals for anything left polling.
            client._runner.call(clock.sleep, 60)
            assert fake.polls() == polls

    def test_an_exception_in_the_loop_body_releases_it_too(self, client: Kolbo) -> None:
        """An exception out of the loop body closes the stream; the client stays usable."""
        gen = client.videos.generate("forever")

        def body() -> None:
            for _ in gen.progress():
                raise LookupError

        with pytest.raises(LookupError):
            body()
        assert client.account.credits().total == 90

    def test_timeout_is_validated_at_call_time(self, client: Kolbo) -> None:
        """A bad timeout raises from progress() itself, as AsyncGeneration.progress does."""
        with pytest.raises(k.InvalidRequestError):
            client.generations.attach("0" * 24).progress(timeout=0)


class TestThreadsAndLoops:
    def test_shared_between_threads(self, client: Kolbo) -> None:
        """Ten threads submit and wait on one client at the same moment."""
        barrier = threading.Barrier(10)
        results: dict[int, tuple[str, str]] = {}
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                barrier.wait(timeout=10)
                gen = client.videos.generate("a cat")
                results[i] = (gen.id, gen.wait(timeout=20).state)
            except BaseException as error:  # reported below, not lost in the thread
                errors.append(error)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        assert {state for _, state in results.values()} == {"completed"}
        assert len({gen_id for gen_id, _ in results.values()}) == 10

    def test_inside_a_running_asyncio_loop(self, client: Kolbo) -> None:
        """Called synchronously from a coroutine (a notebook cell), it neither deadlocks
        nor complains."""

        async def cell() -> str:
            return client.videos.generate("a cat").wait().state

        assert asyncio.run(cell()) == "completed"

    def test_inside_a_running_trio_loop(self, client: Kolbo) -> None:
        """The same from inside trio.run."""

        async def cell() -> list[str]:
            return [u.state for u in client.videos.generate("a cat").progress()]

        assert anyio.run(cell, backend="trio") == ["pending", "processing", "completed"]

    def test_calling_back_from_on_progress_is_a_clear_error(
        self, client: Kolbo, tmp_path: Path
    ) -> None:
        """on_progress runs on the loop's thread; re-entering the client there would
        deadlock, so it raises KolboError instead."""
        gen = client.videos.generate("a cat")
        with pytest.raises(k.KolboError, match="callbacks"):
            gen.download(tmp_path / "v.mp4", on_progress=lambda d, t: client.account.credits())
        assert client.account.credits().total == 90


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signals reach the main thread only",
)
class TestCtrlC:
    @pytest.mark.slow
    @pytest.mark.parametrize("how", ["wait", "progress"])
    def test_ctrl_c_comes_back_promptly(self, fake: FakeKolbo, how: str) -> None:
        """SIGINT during a wait raises KeyboardInterrupt at once, the polling on the loop
        stops too, and close() still works."""
        client = Kolbo(KEY, _transport=fake.transport, rate_limits=None)
        gen = client.videos.generate("forever")
        block = gen.wait if how == "wait" else lambda: list(gen.progress())
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        started = time.monotonic()
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                block()
            assert time.monotonic() - started < 2
            polls = fake.polls()
            time.sleep(0.3)  # six poll intervals
            assert fake.polls() <= polls + 1  # at most the one already in flight
        finally:
            timer.cancel()
            closing = time.monotonic()
            client.close()
        assert time.monotonic() - closing < 2


class TestClose:
    def test_close_stops_the_thread_and_refuses_calls(self, fake: FakeKolbo) -> None:
        """close() joins the loop thread; a closed client or handle raises KolboError."""
        before = _loop_threads()
        with kolbo(fake) as client:
            assert len(_loop_threads() - before) == 1
            gen = client.videos.generate("a cat")
        assert _loop_threads() == before
        client.close()  # idempotent
        with pytest.raises(k.KolboError, match="closed"):
            client.account.credits()
        with pytest.raises(k.KolboError, match="closed"):
            gen.wait()
        with pytest.raises(k.KolboError, match="closed"):
            client.with_options(max_retries=1).account.credits()

    def test_a_user_http_client_is_left_open(self, fake: FakeKolbo) -> None:
        """A user's httpx.AsyncClient is used on the wrapper's loop and not closed."""
        http = httpx.AsyncClient(transport=fake.transport)
        with Kolbo(KEY, http_client=http, rate_limits=None, _clock=VirtualClock()) as client:
            assert client.account.credits().total == 90
        assert not http.is_closed
        anyio.run(http.aclose)

    def test_closing_under_a_running_call(self, fake: FakeKolbo) -> None:
        """A thread waiting when another closes the client gets a clear KolboError."""
        client = kolbo(fake)
        gen = client.videos.generate("forever")
        errors: list[BaseException] = []

        def wait() -> None:
            try:
                gen.wait()
            except BaseException as error:  # reported below
                errors.append(error)

        waiter = threading.Thread(target=wait)
        waiter.start()
        fake.wait_for(2, "/status")  # the waiter is polling
        client.close()
        waiter.join(timeout=10)
        assert [type(e) for e in errors] == [k.KolboError]
        assert "closed" in str(errors[0])

    def test_closing_while_threads_keep_calling(self, fake: FakeKolbo) -> None:
        """Threads calling in a loop while the client closes only ever see KolboError."""
        client = kolbo(fake)
        errors: list[BaseException] = []

        def hammer() -> None:
            try:
                while True:
                    client.account.credits()
            except BaseException as error:  # the loop ends only by an error
                errors.append(error)

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for thread in threads:
            thread.start()
        fake.wait_for(16, "/credits")  # every thread is calling by now, or nearly
        client.close()
        for thread in threads:
            thread.join(timeout=10)
        assert len(errors) == 8
        assert all(isinstance(e, k.KolboError) and "closed" in str(e) for e in errors), errors

    def test_closing_from_on_progress(self, fake: FakeKolbo, tmp_path: Path) -> None:
        """close() from the loop's own thread hands the closing over instead of joining
        itself (a deadlock); the running call finishes or raises KolboError, whichever
        comes first, and the client ends up closed."""
        before = _loop_threads()
        client = kolbo(fake)
        gen = client.videos.generate("a cat")
        target = tmp_path / "v.mp4"
        try:
            path = gen.download(target, on_progress=lambda d, t: client.close())
        except k.KolboError as error:
            # The closing thread won the race: a clear error, and nothing half-written.
            assert "closed while this call was running" in str(error)
            assert list(tmp_path.iterdir()) == []
        else:
            # The transfer won: the whole video is in place, and no temporary file is left.
            assert path == target
            assert path.read_bytes() == VIDEO
            assert list(tmp_path.iterdir()) == [target]
        assert _threads_end(before)
        with pytest.raises(k.KolboError, match="closed"):
            client.account.credits()

    def test_handles_and_copies_outlive_the_client_object(self, fake: FakeKolbo) -> None:
        """A handle or with_options copy keeps the loop alive after the Kolbo is dropped;
        dropping the last of them stops the thread."""
        before = _loop_threads()
        gen = kolbo(fake).videos.generate("a cat")
        patient = kolbo(fake).with_options()
        gc.collect()
        assert gen.wait().state == "completed"
        assert patient.account.credits().total == 90
        patient.close()  # a copy's close leaves the shared thread to the original
        del gen, patient
        assert _threads_end(before), "dropped clients keep their threads"

    @pytest.mark.parametrize("busy", [False, True], ids=["idle", "waiting-in-a-thread"])
    def test_forgetting_to_close_does_not_hang_exit(self, busy: bool) -> None:
        """An interpreter with an unclosed Kolbo (even one still waiting) exits promptly."""
        code = (
            "import threading, httpx\n"
            "from kolbo_async import Kolbo\n"
            "status = {'success': True, 'generation_id': 'g', 'state': 'processing'}\n"
            "t = httpx.MockTransport(lambda r: httpx.Response(200, json=status))\n"
            "c = Kolbo('kolbo_live_x', _transport=t, rate_limits=None)\n"
            "gen = c.generations.attach('g')\n"
            f"if {busy}:\n"
            "    threading.Thread(target=gen.wait, daemon=True).start()\n"
            "    import time; time.sleep(0.2)\n"
            "print('ok')\n"
        )
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=False
        )
        assert (proc.returncode, proc.stdout) == (0, "ok\n"), proc.stderr
        assert time.monotonic() - started < 5


def test_a_wrong_constructor_argument_names_kolbo_and_starts_no_thread() -> None:
    """Kolbo takes AsyncKolbo's parameters (one declaration); a wrong one is Kolbo's error,
    raised before any loop thread exists."""
    before = threading.active_count()
    with pytest.raises(TypeError, match=r"^Kolbo\(\): got an unexpected keyword argument 'bogus'"):
        Kolbo(KEY, bogus=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^Kolbo\(\): too many positional arguments"):
        Kolbo(KEY, "https://api.kolbo.ai")  # type: ignore[misc]
    assert threading.active_count() == before
