"""Promises of the CDN side (`Transfers`) that its mutation run found untested (issue 18).

A CDN's 429 holds this client's next requests to that host, every download's, for its
`Retry-After` (1 s without); a later, shorter 429 never cuts a longer cooldown; other hosts
are not held. Downloads run on a virtual clock, with a transport that plays the API and a
scripted CDN; their file work runs in worker threads, during which a virtual clock may jump,
so those tests order steps by events and bound times from below only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest

import kolbo_async as k
from kolbo_async import AsyncKolbo
from kolbo_async._transfers import Transfers
from kolbo_async.testing import VirtualClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "3e" * 20
BODY = bytes(range(256)) * 64
#: Which CDN file each generation's result names.
URLS = {"gen1": "https://cdn-a.test/one.mp4", "gen2": "https://cdn-a.test/two.mp4"}

Script = Callable[[httpx.Request], Awaitable[httpx.Response]]


def media() -> httpx.Response:
    return httpx.Response(200, content=BODY, headers={"content-type": "video/mp4"})


def too_many(retry_after: int) -> httpx.Response:
    return httpx.Response(429, text="slow down", headers={"retry-after": str(retry_after)})


class Service(httpx.AsyncBaseTransport):
    """Kolbo's status route (every generation completed) and CDNs answering per `script`,
    recording when each CDN request arrived."""

    def __init__(self, clock: VirtualClock, script: Script) -> None:
        self.clock = clock
        self.script = script
        self.cdn: list[tuple[float, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "api.kolbo.ai":
            gid = request.url.path.split("/")[-2]
            body = {
                "success": True,
                "generation_id": gid,
                "state": "completed",
                "progress": 100,
                "result": {"urls": [URLS[gid]]},
            }
            return httpx.Response(200, json=body)
        self.cdn.append((self.clock.now(), request.url.path))
        return await self.script(request)


def kolbo(service: Service) -> AsyncKolbo:
    return AsyncKolbo(KEY, _transport=service, _clock=service.clock, rate_limits=None)


async def test_a_cdn_429_holds_every_download_from_that_host_for_its_retry_after(
    tmp_path: Path,
) -> None:
    """The first download meets a 429 asking for 20 s; a second download from the same host,
    started right after it, waits for that cooldown too."""
    clock = VirtualClock()
    limited = anyio.Event()

    async def script(request: httpx.Request) -> httpx.Response:
        if not limited.is_set():
            limited.set()
            return too_many(20)
        return media()

    service = Service(clock, script)
    async with kolbo(service) as client, anyio.create_task_group() as tg:
        tg.start_soon(client.generations.attach("gen1").download, tmp_path / "one.mp4")
        await limited.wait()
        await client.generations.attach("gen2").download(tmp_path / "two.mp4")
    assert service.cdn[0] == (0.0, "/one.mp4")
    assert sorted(path for _, path in service.cdn[1:]) == ["/one.mp4", "/two.mp4"]
    assert all(at >= 20.0 for at, _ in service.cdn[1:]), service.cdn
    assert (tmp_path / "one.mp4").read_bytes() == BODY
    assert (tmp_path / "two.mp4").read_bytes() == BODY


async def test_a_later_shorter_cdn_429_does_not_cut_a_longer_cooldown(tmp_path: Path) -> None:
    """Two downloads on the wire at once: the first is answered at 1 s with a 429 asking
    for 30 s, the second at 2 s with one asking for 2 s. Neither asks again before 31 s."""
    clock = VirtualClock()
    first = {"/one.mp4": (1.0, 30), "/two.mp4": (2.0, 2)}
    arrived: list[str] = []
    both = anyio.Event()

    async def script(request: httpx.Request) -> httpx.Response:
        slow = first.pop(request.url.path, None)
        if slow is None:
            return media()
        arrived.append(request.url.path)
        if len(arrived) == 2:
            both.set()
        await both.wait()  # both on the wire before any time passes
        await clock.sleep(slow[0])
        return too_many(slow[1])

    service = Service(clock, script)
    async with kolbo(service) as client, anyio.create_task_group() as tg:
        tg.start_soon(client.generations.attach("gen1").download, tmp_path / "one.mp4")
        tg.start_soon(client.generations.attach("gen2").download, tmp_path / "two.mp4")
    assert sorted(service.cdn[:2]) == [(0.0, "/one.mp4"), (0.0, "/two.mp4")]
    assert len(service.cdn) == 4
    assert all(at >= 31.0 for at, _ in service.cdn[2:]), service.cdn


# -- the cooldowns themselves, on plain numbers ------------------------------------------------


def test_a_cooldown_holds_its_host_for_the_retry_after_and_no_other_host() -> None:
    transfers = Transfers(limit=2)
    assert transfers.delay("cdn-a.test", 0.0) == 0.0
    transfers.cool_down("cdn-a.test", 10.0, 20.0)
    assert transfers.delay("cdn-a.test", 15.0) == 15.0
    assert transfers.delay("cdn-a.test", 30.0) == 0.0
    assert transfers.delay("cdn-b.test", 15.0) == 0.0


def test_a_cooldown_without_retry_after_is_one_second() -> None:
    transfers = Transfers(limit=2)
    transfers.cool_down("cdn-a.test", 10.0, None)
    assert transfers.delay("cdn-a.test", 10.0) == 1.0


def test_a_later_shorter_cooldown_never_cuts_a_longer_one() -> None:
    transfers = Transfers(limit=2)
    transfers.cool_down("cdn-a.test", 0.0, 30.0)
    transfers.cool_down("cdn-a.test", 1.0, 2.0)
    assert transfers.delay("cdn-a.test", 2.0) == 28.0


def test_a_cooldown_is_logged_with_its_host_and_length(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="kolbo_async")
    Transfers(limit=2).cool_down("cdn-a.test", 0.0, 30.0)
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["downloads from cdn-a.test cooling down for 30.00 s after a 429"]


class _Server:
    """A keep-alive HTTP/1.1 server on loopback that counts the connections open to it.

    A request for ``/second`` is answered once at most `cap` connections are open (or after
    two seconds), noting how many were open then."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open = 0
        self.at_second: int | None = None
        self.closed = anyio.Event()  # set when a connection closes (then renewed)

    async def handle(self, stream: anyio.abc.ByteStream) -> None:
        self.open += 1
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    buffer += await stream.receive()
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                if head.split(b" ")[1] == b"/second":
                    with anyio.move_on_after(2):
                        while self.open > self.cap:
                            await self.closed.wait()  # a real socket's close is on its way
                    self.at_second = self.open
                await stream.send(
                    b"HTTP/1.1 200 OK\r\ncontent-type: video/mp4\r\ncontent-length: 2\r\n\r\nok"
                )
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            self.open -= 1
            self.closed.set()
            self.closed = anyio.Event()


async def test_the_sdks_cdn_pool_holds_no_more_connections_than_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a cap of one, an idle connection to one CDN host is closed before one to another
    host opens (real sockets: only a real pool holds connections)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    server = _Server(cap=1)
    one = await anyio.create_tcp_listener(local_host="127.0.0.1")
    two = await anyio.create_tcp_listener(local_host="127.0.0.2")
    async with one, two, anyio.create_task_group() as tg:
        tg.start_soon(one.serve, server.handle)
        tg.start_soon(two.serve, server.handle)
        transfers = Transfers(limit=1)
        try:
            http = transfers.client()
            for host, listener, path in (("127.0.0.1", one, "first"), ("127.0.0.2", two, "second")):
                port = listener.extra(anyio.abc.SocketAttribute.local_port)
                answer = await http.get(f"http://{host}:{port}/{path}")
                assert answer.content == b"ok"
        finally:
            await transfers.aclose()
            tg.cancel_scope.cancel()
    assert server.at_second == 1


async def test_a_closed_transfers_never_opens_a_new_pool() -> None:
    """Closed before any download: asking for its client raises instead of opening (and
    leaking) a connection pool."""
    transfers = Transfers(limit=2)
    await transfers.aclose()
    with pytest.raises(k.KolboError) as info:
        transfers.client()
    assert str(info.value) == "This client is closed; create a new one to download."
    assert transfers._http is None
