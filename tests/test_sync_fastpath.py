"""The blocking client's fast path: a lone call runs the client's loop in the calling thread.

Who runs the loop is observed where the request lands: `ThreadedFake` records the thread
that sent each request (the transport runs inside the loop). Hand-overs are then checked the
same way: overlapping calls, a caller inside a running loop, a caller that left (Ctrl-C) while
its paid POST was still on the wire.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import kolbo_async as k
from kolbo_async import Kolbo
from tests.test_sync import KEY, FakeKolbo, kolbo


class ThreadedFake(FakeKolbo):
    """`FakeKolbo` that also records which thread sent each request, and on which loop."""

    def __init__(self) -> None:
        super().__init__()
        self.senders: list[tuple[str, threading.Thread, object]] = []
        self.transport = httpx.MockTransport(self.handle_and_record)

    def handle_and_record(self, request: httpx.Request) -> httpx.Response:
        loop = asyncio.get_running_loop()
        with self.lock:
            self.senders.append((request.url.path, threading.current_thread(), loop))
        return self.handle(request)

    def sender(self, path_end: str) -> threading.Thread:
        """The thread that sent the latest request whose path ends with `path_end`."""
        with self.lock:
            return [t for path, t, _ in self.senders if path.endswith(path_end)][-1]


@pytest.fixture
def fake() -> ThreadedFake:
    """A fresh `ThreadedFake`."""
    return ThreadedFake()


@pytest.fixture
def client(fake: ThreadedFake) -> Iterator[Kolbo]:
    """A blocking client on `fake` and a virtual clock, closed afterwards."""
    with kolbo(fake) as client:
        yield client


def _in_thread(target: Any) -> BaseException | None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as error:  # reported to the test
            errors.append(error)

    thread = threading.Thread(target=run, name="caller")
    thread.start()
    thread.join(timeout=30)
    return errors[0] if errors else None


def test_a_lone_call_runs_in_the_calling_thread(client: Kolbo, fake: ThreadedFake) -> None:
    """No thread hand-off: the request is sent by the caller's own thread, whichever it is,
    always on the client's one loop (the async core refuses any other)."""
    assert client.account.credits().total == 90
    assert fake.sender("/credits") is threading.current_thread()

    seen: list[threading.Thread] = []

    def worker() -> None:
        client.account.credits()
        seen.append(threading.current_thread())

    assert _in_thread(worker) is None
    assert fake.sender("/credits") is seen[0]
    assert len({loop for _, _, loop in fake.senders}) == 1


def test_a_whole_generation_from_a_worker_thread_stays_in_it(
    client: Kolbo, fake: ThreadedFake, tmp_path: Path
) -> None:
    """Submit, poll and download from one worker thread: every request is that thread's."""
    caller: list[threading.Thread] = []

    def script() -> None:
        caller.append(threading.current_thread())
        gen = client.videos.generate("a cat")
        assert gen.wait(timeout=20).state == "completed"
        gen.download(tmp_path / "v.mp4")

    assert _in_thread(script) is None
    api = [t for path, t, _ in fake.senders if path.startswith("/api/")]
    assert len(api) >= 3
    assert set(api) == set(caller)
    assert (tmp_path / "v.mp4").exists()


def test_overlapping_calls_share_the_loop_then_give_it_back(
    client: Kolbo, fake: ThreadedFake
) -> None:
    """While one thread runs the loop, another thread's call is run by it (not in the
    second caller's thread); once the calls are over, the next call is the caller's own."""
    gen = client.videos.generate("held")
    polling = threading.Event()
    results: list[str] = []

    def waiter() -> None:
        polling.set()
        # A held generation spins through virtual time until the test moves it on.
        results.append(client.generations.attach(gen.id).wait(timeout=86400).state)

    thread = threading.Thread(target=waiter, name="waiter")
    thread.start()
    polling.wait(timeout=10)
    fake.wait_for(3, "/status")  # the waiter is running the loop by now
    assert client.account.credits().total == 90
    assert fake.sender("/credits") is not threading.current_thread()
    fake.advance(gen.id)
    fake.advance(gen.id)
    thread.join(timeout=20)
    assert results == ["completed"]
    assert client.account.credits().total == 90
    assert fake.sender("/credits") is threading.current_thread()


def test_inside_a_running_loop_the_call_is_handed_to_the_client_thread(
    client: Kolbo, fake: ThreadedFake
) -> None:
    """A notebook cell cannot run a second loop in its thread: the client's thread does."""

    async def cell() -> int:
        return client.account.credits().total

    assert asyncio.run(cell()) == 90
    assert fake.sender("/credits").name == "kolbo-blocking"


def test_on_progress_runs_inside_the_loop_and_cannot_reenter(client: Kolbo, tmp_path: Path) -> None:
    """The callback runs in the thread that runs the loop (here the caller's); calling
    the client from it is still a clear KolboError, not a deadlock."""
    gen = client.videos.generate("a cat")
    threads: set[threading.Thread] = set()
    gen.download(
        tmp_path / "v.mp4", on_progress=lambda d, t: threads.add(threading.current_thread())
    )
    assert threads == {threading.current_thread()}
    with pytest.raises(k.KolboError, match="callbacks"):
        gen.download(tmp_path / "w.mp4", on_progress=lambda d, t: client.account.credits())


main_thread_only = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signals reach the main thread only",
)


def _sigint_after(event: threading.Event) -> threading.Thread:
    """SIGINT to this process once `event` is set (a rendezvous, not a guessed delay)."""

    def fire() -> None:
        if event.wait(timeout=10):
            os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=fire)
    thread.start()
    return thread


@main_thread_only
@pytest.mark.parametrize("how", ["download", "generate_many"])
def test_ctrl_c_comes_back_promptly_and_cancels_nothing(
    fake: ThreadedFake, tmp_path: Path, how: str
) -> None:
    """Ctrl-C during download() or a batch, while the caller runs the loop itself: the
    KeyboardInterrupt comes out at once (never inside the loop's own code), polling stops,
    nothing is cancelled at Kolbo, and the client is still usable and closes promptly."""
    client = Kolbo(KEY, _transport=fake.transport, rate_limits=None)
    polled = threading.Event()
    original = fake.handle

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/status"):
            polled.set()
        return original(request)

    fake.handle = handle  # type: ignore[method-assign]
    if how == "download":
        gen = client.videos.generate("forever")
        block: Any = lambda: gen.download(tmp_path / "v.mp4")  # noqa: E731
    else:
        batch = client.videos.generate_many([k.TextToVideo("forever")] * 2)
        block = lambda: next(batch)  # noqa: E731
    firing = _sigint_after(polled)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            block()
        assert time.monotonic() - started < 5
        polls = fake.polls()
        assert client.account.credits().total == 90  # the loop and pool survived it
        time.sleep(0.3)  # six poll intervals: anything left polling would show
        assert fake.polls() <= polls + 1
        assert not any(r.url.path.endswith("/cancel") for r in fake.requests)
    finally:
        firing.join(timeout=10)
        closing = time.monotonic()
        client.close()
    assert time.monotonic() - closing < 5
    assert list(tmp_path.iterdir()) == []


@main_thread_only
def test_a_sigint_handler_that_does_not_raise_lets_the_call_go_on(
    client: Kolbo, fake: ThreadedFake
) -> None:
    """A program's own SIGINT handler runs when the signal comes; if it raises nothing,
    the call is not interrupted, and the handler is in place again afterwards."""
    gen = client.videos.generate("held")
    seen: list[int] = []

    def mine(signum: int, frame: object) -> None:
        seen.append(signum)
        fake.advance(gen.id)
        fake.advance(gen.id)

    polled = threading.Event()
    previous = signal.signal(signal.SIGINT, mine)
    original = fake.handle

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/status"):
            polled.set()
        return original(request)

    fake.handle = handle  # type: ignore[method-assign]
    try:
        firing = _sigint_after(polled)
        assert gen.wait(timeout=86400).state == "completed"  # virtual seconds: held spins
        firing.join(timeout=10)
        assert seen == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)


@main_thread_only
def test_ctrl_c_during_a_generate_the_post_lands_without_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The caller runs the loop, the POST is on the wire, Ctrl-C: the caller is interrupted
    at once, and the client's thread takes the loop over and runs the shielded POST to its
    answer (its id logged) with no further call from the caller."""
    fake = ThreadedFake()
    on_the_wire = threading.Event()
    gate: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def post(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            opened = asyncio.Event()
            gate.append((asyncio.get_running_loop(), opened))
            on_the_wire.set()
            await opened.wait()
        with fake.lock:
            fake.senders.append((request.url.path, threading.current_thread(), None))
        return fake.handle(request)

    landed = threading.Event()

    class Landed(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            landed.set()

    watcher = Landed(logging.WARNING)
    logging.getLogger("kolbo_async").addHandler(watcher)
    client = Kolbo(KEY, _transport=httpx.MockTransport(post), rate_limits=None)
    try:
        firing = _sigint_after(on_the_wire)
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            client.videos.generate("a cat")
        assert time.monotonic() - started < 5
        firing.join(timeout=10)
        [(loop, opened)] = gate
        loop.call_soon_threadsafe(opened.set)  # Kolbo answers; nobody calls the client
        assert landed.wait(timeout=10), "the abandoned POST never landed"
        assert fake.sender("/generate/video").name == "kolbo-blocking"
    finally:
        logging.getLogger("kolbo_async").removeHandler(watcher)
        client.close()
    [generation_id] = fake.prompts
    assert any(generation_id in r.getMessage() for r in caplog.records)
