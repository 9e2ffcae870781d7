"""The blocking wrapper: same surface, same results, threads, loops, Ctrl-C, shutdown."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.from_thread import start_blocking_portal

import kolbo_async as k
from kolbo_async import AsyncGeneration, AsyncKolbo, Generation, Kolbo
from kolbo_async._client import AsyncAccount, AsyncGenerations, AsyncModels, AsyncVideos
from kolbo_async._sync import Account, Generations, Models, Videos
from kolbo_async.testing import Simulator

KEY = "kolbo_live_" + "9a" * 20

PAIRS = [
    (AsyncKolbo, Kolbo),
    (AsyncGeneration, Generation),
    (AsyncVideos, Videos),
    (AsyncModels, Models),
    (AsyncGenerations, Generations),
    (AsyncAccount, Account),
]
RENAMED = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__"}


def public(cls: type) -> dict[str, Any]:
    names = {}
    for name in dir(cls):
        if name.startswith("_") and name not in RENAMED and name not in RENAMED.values():
            continue
        names[RENAMED.get(name, name)] = inspect.getattr_static(cls, name)
    return names


class TestSurface:
    @pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS)
    def test_every_public_name_and_parameter_is_mirrored(
        self, async_cls: type, sync_cls: type
    ) -> None:
        """Each public name of the async class exists on the blocking one, same parameters."""
        theirs = public(sync_cls)
        for name, member in public(async_cls).items():
            assert name in theirs, f"{sync_cls.__name__} lacks {name}"
            if callable(member) and not isinstance(member, type):
                mine = inspect.signature(member)
                other = inspect.signature(theirs[name])
                assert list(mine.parameters) == list(other.parameters), name
                for param, twin in zip(
                    mine.parameters.values(), other.parameters.values(), strict=True
                ):
                    assert (param.kind, param.default) == (twin.kind, twin.default), name
            if not name.startswith("__"):
                assert inspect.getdoc(theirs[name]), f"{sync_cls.__name__}.{name} has no docstring"

    def test_async_http_client_only(self) -> None:
        """A blocking httpx.Client cannot be the transport: a clear TypeError."""
        with pytest.raises(TypeError, match="AsyncClient"):
            Kolbo(KEY, http_client=httpx.Client())  # type: ignore[arg-type]

    def test_repr_has_no_key(self) -> None:
        """repr(Kolbo) shows the base URL and never the key."""
        with Kolbo(KEY) as client:
            assert KEY not in repr(client)
            assert repr(client).startswith("<Kolbo base_url=")


class Api:
    """One scenario, either client: `do(fn)` calls fn(client) and settles the result."""

    def __init__(self, kind: str, sim: Simulator) -> None:
        self.kind = kind
        self._stack = ExitStack()
        if kind == "sync":
            self.client: Any = self._stack.enter_context(
                Kolbo(KEY, _transport=sim.transport(), rate_limits=None)
            )
            self._portal = None
        else:
            self._portal = self._stack.enter_context(start_blocking_portal())

            async def make() -> AsyncKolbo:
                return AsyncKolbo(KEY, _transport=sim.transport(), rate_limits=None)

            self.client = self._portal.call(make)
            self._stack.callback(self._portal.call, self.client.aclose)

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


@pytest.fixture(params=["async", "sync"])
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    sim = Simulator(speed=400.0)
    request.node.sim = sim
    api = Api(request.param, sim)
    yield api
    api.close()


class TestSameBehaviour:
    """The same scenarios through AsyncKolbo and Kolbo, written once."""

    def test_generate_progress_result(self, api: Api) -> None:
        """Submit, stream changes, read the result."""
        gen = api.do(lambda c: c.videos.generate("a cat", duration=5))
        updates = api.collect(gen.progress())
        assert updates[-1].state == "completed"
        assert api.do(lambda c: gen.result()).url

    def test_failure_raises_the_same_class(self, api: Api) -> None:
        """A failed generation raises GenerationFailedError from wait()."""
        gen = api.do(lambda c: c.videos.generate("a cat [fail]"))
        with pytest.raises(k.GenerationFailedError) as info:
            api.do(lambda c: gen.wait())
        assert info.value.generation_id == gen.id

    def test_cancel_and_409(self, api: Api) -> None:
        """cancel() returns the status, also when already finished."""
        gen = api.do(lambda c: c.videos.generate("a cat"))
        assert api.do(lambda c: gen.cancel()).state == "cancelled"
        assert api.do(lambda c: gen.cancel()).state == "cancelled"

    def test_attach_models_credits(self, api: Api) -> None:
        """attach, models.list and account.credits return the same types."""
        gen = api.do(lambda c: c.videos.generate("a cat"))
        again = api.do(lambda c: c.generations.attach(gen.id))
        assert again.id == gen.id
        assert all(isinstance(m, k.Model) for m in api.do(lambda c: c.models.list()))
        assert isinstance(api.do(lambda c: c.account.credits()), k.Credits)

    def test_errors_are_the_same_classes(self, api: Api) -> None:
        """Bad input and API errors raise the same exception classes."""
        with pytest.raises(k.InvalidRequestError):
            api.do(lambda c: c.videos.generate(""))
        with pytest.raises(k.BadRequestError):
            api.do(lambda c: c.videos.generate("a cat", model="no-such-model"))
        with pytest.raises(k.NotFoundError):
            api.do(lambda c: c.generations.attach("0" * 24).status())

    def test_download(self, api: Api, tmp_path: Path) -> None:
        """download() writes the video and reports progress."""
        gen = api.do(lambda c: c.videos.from_image("https://example.com/a.jpg"))
        seen: list[int] = []
        path = api.do(
            lambda c: gen.download(tmp_path / "v.mp4", on_progress=lambda d, t: seen.append(d))
        )
        assert path.read_bytes()[4:8] == b"ftyp"
        assert seen


def _slow_sim() -> Simulator:
    # Slow enough that a generation is still running while the test interrupts it.
    return Simulator(speed=50.0, processing_seconds=100_000.0)


class TestBlocking:
    def test_progress_streams_and_break_releases(self) -> None:
        """Items arrive while the generation runs; break stops polling at once."""
        sim = _slow_sim()
        with Kolbo(KEY, _transport=sim.transport(), rate_limits=None) as client:
            gen = client.videos.generate("a cat")
            updates = gen.progress()
            first = next(updates)
            assert first.state in ("pending", "processing")
            for _ in updates:
                break
            updates.close()
            polls = len(sim.requests)
            time.sleep(0.3)
            assert len(sim.requests) == polls

    def test_shared_between_threads(self) -> None:
        """Ten threads submit and wait on one client at once."""
        sim = Simulator(speed=400.0)
        states: list[str] = []
        with Kolbo(KEY, _transport=sim.transport(), rate_limits=None) as client:

            def work(i: int) -> None:
                states.append(client.videos.generate(f"prompt {i}").wait().state)

            threads = [threading.Thread(target=work, args=(i,)) for i in range(10)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
        assert states == ["completed"] * 10
        assert len(sim.generations) == 10

    def test_inside_a_running_event_loop(self) -> None:
        """Called from a coroutine (a notebook cell), it neither deadlocks nor complains."""
        sim = Simulator(speed=400.0)
        with Kolbo(KEY, _transport=sim.transport(), rate_limits=None) as client:

            async def cell() -> str:
                return client.videos.generate("a cat").wait().state

            assert asyncio.run(cell()) == "completed"

            async def trio_cell() -> float | None:
                return client.account.credits().total

            assert anyio.run(trio_cell, backend="trio")

    def test_ctrl_c_comes_back_promptly(self) -> None:
        """SIGINT during wait() raises KeyboardInterrupt at once; close() still works."""
        if threading.current_thread() is not threading.main_thread():
            pytest.skip("signals reach the main thread only")
        sim = _slow_sim()
        client = Kolbo(KEY, _transport=sim.transport(), rate_limits=None)
        gen = client.videos.generate("a cat")
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            gen.wait()
        assert time.monotonic() - started < 2
        polls = len(sim.requests)
        time.sleep(0.3)
        assert len(sim.requests) <= polls + 1  # the wait on the loop was cancelled too
        client.close()

    def test_close_stops_the_thread_and_refuses_calls(self) -> None:
        """close() joins the loop thread; a closed client raises a clear KolboError."""
        before = {t.name for t in threading.enumerate()}
        client = Kolbo(KEY)
        assert "kolbo-blocking" in {t.name for t in threading.enumerate()}
        client.close()
        client.close()  # idempotent
        assert {t.name for t in threading.enumerate()} == before
        with pytest.raises(k.KolboError, match="closed"):
            client.account.credits()

    def test_closing_under_a_running_call(self) -> None:
        """A thread waiting when another closes the client gets a clear KolboError."""
        sim = _slow_sim()
        client = Kolbo(KEY, _transport=sim.transport(), rate_limits=None)
        gen = client.videos.generate("a cat")
        errors: list[BaseException] = []

        def wait() -> None:
            try:
                gen.wait()
            except BaseException as error:
                errors.append(error)

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.3)
        client.close()
        waiter.join(timeout=10)
        assert len(errors) == 1
        assert isinstance(errors[0], k.KolboError)
        assert "closed" in str(errors[0])

    def test_forgetting_to_close_does_not_hang_exit(self) -> None:
        """An interpreter with an unclosed Kolbo exits promptly."""
        code = "from kolbo_async import Kolbo; c = Kolbo('kolbo_live_x'); print('ok')"
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=False
        )
        assert proc.returncode == 0, proc.stderr
        assert time.monotonic() - started < 10


