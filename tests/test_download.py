"""Downloads: atomic placement, never replacing a user's file, one deadline, CDN misbehaviour,
and CDN transfers that never hold up API calls."""

from __future__ import annotations

import errno
import gzip
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async import AsyncKolbo
from kolbo_async.testing import Simulator, VirtualClock

from .conftest import StepClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "d0" * 20
API = "https://api.kolbo.ai"
CDN = "https://cdn.kolbo.test"
STATUS = "/api/v1/generate/gen1/status"
BODY = bytes(range(256)) * 4096  # 1 MiB: several chunks, one writer batch


def status(state: str, progress: int = 0, **extra: Any) -> httpx.Response:
    body = {"success": True, "generation_id": "gen1", "state": state, "progress": progress}
    body.update(extra)
    return httpx.Response(200, json=body)


def completed(*urls: str) -> httpx.Response:
    return status(
        "completed",
        100,
        result={"urls": list(urls or [f"{CDN}/v.mp4"]), "thumbnail_url": f"{CDN}/t.jpg"},
    )


def leftovers(directory: Path) -> list[str]:
    """Everything in `directory`, temporary files included."""
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=API, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
async def client(clock: StepClock) -> AsyncIterator[AsyncKolbo]:
    async with AsyncKolbo(KEY, _clock=clock, rate_limits=None) as client:
        yield client


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(vclock: VirtualClock) -> Simulator:
    return Simulator(clock=vclock, video_size=3_000_000)


@pytest.fixture
async def sim_client(sim: Simulator) -> AsyncIterator[AsyncKolbo]:
    async with sim.client(KEY, rate_limits=None) as client:
        yield client


def cdn_requests(sim: Simulator) -> list[Any]:
    return [r for r in sim.requests if r.host == "cdn"]


class TestBasics:
    async def test_streams_to_path_without_the_key(
        self, router: respx.MockRouter, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """The video lands at path; the CDN never sees the key; progress is reported."""
        router.get(STATUS).mock(return_value=completed())
        cdn = router.get(f"{CDN}/v.mp4").respond(200, content=BODY)
        seen: list[tuple[int, int | None]] = []
        path = await client.generations.attach("gen1").download(
            tmp_path / "v.mp4", on_progress=lambda done, total: seen.append((done, total))
        )
        assert path.read_bytes() == BODY
        assert "x-api-key" not in cdn.calls.last.request.headers
        assert seen[-1] == (len(BODY), len(BODY))
        assert leftovers(tmp_path) == ["v.mp4"]
        umask = os.umask(0)
        os.umask(umask)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600

    async def test_existing_file_is_refused_before_any_wait(
        self, router: respx.MockRouter, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """An existing file is kept unless overwrite=True, and nothing is requested."""
        target = tmp_path / "v.mp4"
        target.write_bytes(b"mine")
        route = router.get(STATUS).mock(return_value=completed())
        with pytest.raises(k.InvalidRequestError, match="overwrite=True"):
            await client.generations.attach("gen1").download(target)
        assert target.read_bytes() == b"mine"
        assert not route.called

    @pytest.mark.parametrize("where", ["missing-dir/v.mp4", "."])
    async def test_bad_target_is_refused_before_any_wait(
        self, router: respx.MockRouter, client: AsyncKolbo, tmp_path: Path, where: str
    ) -> None:
        """A directory, or a file in a missing directory, is refused before the wait."""
        route = router.get(STATUS).mock(return_value=completed())
        with pytest.raises(k.InvalidRequestError, match="path"):
            await client.generations.attach("gen1").download(tmp_path / where)
        assert not route.called
        assert leftovers(tmp_path) == []

    @pytest.mark.parametrize("path", [None, 5, ["a"], b"v.mp4", "x" * 5000, "a\x00b.mp4", "/"])
    async def test_path_that_names_no_file(
        self, router: respx.MockRouter, client: AsyncKolbo, path: Any
    ) -> None:
        """A path of the wrong kind is an InvalidRequestError naming `path`, before any wait."""
        route = router.get(STATUS).mock(return_value=completed())
        with pytest.raises(k.InvalidRequestError) as info:
            await client.generations.attach("gen1").download(path)
        assert info.value.field == "path"
        assert not route.called

    async def test_short_body_leaves_no_file(
        self, router: respx.MockRouter, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """A transfer shorter than Content-Length never appears at path."""
        router.get(STATUS).mock(return_value=completed())

        def short(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, headers={"Content-Length": "100"}, content=b"x" * 10)

        router.get(f"{CDN}/v.mp4").mock(side_effect=short)
        with pytest.raises(k.APIConnectionError):
            await client.generations.attach("gen1").download(tmp_path / "v.mp4")
        assert leftovers(tmp_path) == []

    async def test_thumbnail(
        self, router: respx.MockRouter, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """download_thumbnail() fetches result.thumbnail_url."""
        router.get(STATUS).mock(return_value=completed())
        router.get(f"{CDN}/t.jpg").respond(200, content=b"jpeg")
        path = await client.generations.attach("gen1").download_thumbnail(tmp_path / "t.jpg")
        assert path.read_bytes() == b"jpeg"

    async def test_index_out_of_range(
        self, router: respx.MockRouter, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """Asking for a URL the result does not have is an InvalidRequestError."""
        router.get(STATUS).mock(return_value=completed())
        with pytest.raises(k.InvalidRequestError, match="index"):
            await client.generations.attach("gen1").download(tmp_path / "v.mp4", index=3)


class _Breaking(httpx.AsyncByteStream):
    """A body that breaks after `cut` bytes, as a reset connection does."""

    def __init__(self, body: bytes, cut: int) -> None:
        self._body = body
        self._cut = cut

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._body[: self._cut]
        raise httpx.ReadError("connection reset")


class TestResume:
    async def test_resumes_with_range(self, clock: StepClock, tmp_path: Path) -> None:
        """A broken transfer resumes from where it stopped with a Range request."""
        body = b"0123456789" * 100
        calls: list[str | None] = []

        def serve(request: httpx.Request) -> httpx.Response:
            if request.url.path == STATUS:
                return completed()
            calls.append(request.headers.get("range"))
            if request.headers.get("range") == "bytes=400-":
                return httpx.Response(206, headers={"Content-Length": "600"}, content=body[400:])
            return httpx.Response(
                200, headers={"Content-Length": str(len(body))}, stream=_Breaking(body, 400)
            )

        # respx reads mocked bodies eagerly, so a mid-stream break needs a plain transport.
        transport = httpx.MockTransport(serve)
        async with AsyncKolbo(KEY, _clock=clock, _transport=transport) as client:
            path = await client.generations.attach("gen1").download(tmp_path / "v.mp4")
        assert path.read_bytes() == body
        assert calls == [None, "bytes=400-"]

    async def test_range_answered_200_restarts_from_zero(
        self, clock: StepClock, tmp_path: Path
    ) -> None:
        """A CDN that answers a resume with the whole body (200) gets it written once, from
        byte zero: the file is exact, not the first part followed by a second copy."""
        body = bytes(range(256)) * 8
        calls: list[str | None] = []

        def serve(request: httpx.Request) -> httpx.Response:
            if request.url.path == STATUS:
                return completed()
            calls.append(request.headers.get("range"))
            if len(calls) == 1:
                return httpx.Response(
                    200, headers={"Content-Length": str(len(body))}, stream=_Breaking(body, 700)
                )
            return httpx.Response(200, headers={"Content-Length": str(len(body))}, content=body)

        transport = httpx.MockTransport(serve)
        async with AsyncKolbo(KEY, _clock=clock, _transport=transport) as client:
            path = await client.generations.attach("gen1").download(tmp_path / "v.mp4")
        assert calls == [None, "bytes=700-"]
        assert path.read_bytes() == body
        assert leftovers(tmp_path) == ["v.mp4"]


    async def test_range_answered_from_another_offset_starts_over(
        self, clock: StepClock, tmp_path: Path
    ) -> None:
        """A 206 for another range than asked is not appended: the file is fetched whole."""
        body = bytes(range(256)) * 4
        calls: list[str | None] = []

        def serve(request: httpx.Request) -> httpx.Response:
            if request.url.path == STATUS:
                return completed()
            calls.append(request.headers.get("range"))
            size = str(len(body))
            if len(calls) == 1:
                return httpx.Response(
                    200, headers={"Content-Length": size}, stream=_Breaking(body, 300)
                )
            if request.headers.get("range"):
                return httpx.Response(
                    206,
                    headers={"Content-Range": f"bytes 0-{len(body) - 1}/{size}"},
                    content=body,
                )
            return httpx.Response(200, headers={"Content-Length": size}, content=body)

        transport = httpx.MockTransport(serve)
        async with AsyncKolbo(KEY, _clock=clock, _transport=transport) as client:
            path = await client.generations.attach("gen1").download(tmp_path / "v.mp4")
        assert calls == [None, "bytes=300-", None]
        assert path.read_bytes() == body


class TestNeverReplaces:
    async def test_file_appearing_during_the_wait_is_kept(
        self, sim: Simulator, sim_client: AsyncKolbo, vclock: VirtualClock, tmp_path: Path
    ) -> None:
        """The check before the wait passes; a file written at path during the wait is still
        the user's afterwards, and no temporary file is left."""
        target = tmp_path / "v.mp4"
        sim.plan(processing_seconds=10_000)  # it ends when the test says so
        gen = await sim_client.videos.generate("a cat")
        caught: list[BaseException] = []

        async def download() -> None:
            try:
                await gen.download(target)
            except Exception as exc:
                caught.append(exc)

        async def user_writes() -> None:
            # Once the handle polls, its check of `target` is behind it: the wait has begun.
            while not any(r.path.endswith("/status") for r in sim.requests):
                await vclock.sleep(1)
            target.write_bytes(b"the user's own file")
            sim.complete(gen.id)

        async with anyio.create_task_group() as tg:
            tg.start_soon(download)
            tg.start_soon(user_writes)
        (error,) = caught
        assert isinstance(error, FileExistsError)
        assert isinstance(error, k.KolboError)
        assert target.read_bytes() == b"the user's own file"
        assert leftovers(tmp_path) == ["v.mp4"]
        assert len(cdn_requests(sim)) == 1  # it was the last step that refused

    async def test_file_appearing_mid_transfer_is_kept(
        self, router: respx.MockRouter, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """A file created at path while bytes arrive is not replaced at the end."""
        router.get(STATUS).mock(return_value=completed())
        router.get(f"{CDN}/v.mp4").respond(200, content=BODY)
        target = tmp_path / "v.mp4"

        def appear(done: int, total: int | None) -> None:
            if done and not target.exists():
                target.write_bytes(b"mine")

        with pytest.raises(FileExistsError, match="overwrite=True") as info:
            await client.generations.attach("gen1").download(target, on_progress=appear)
        assert isinstance(info.value, k.KolboError)
        assert info.value.filename == str(target)
        assert target.read_bytes() == b"mine"
        assert leftovers(tmp_path) == ["v.mp4"]

    @pytest.mark.parametrize("race", [False, True])
    async def test_without_hard_links(
        self,
        router: respx.MockRouter,
        client: AsyncKolbo,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        race: bool,
    ) -> None:
        """On a filesystem without hard links (FAT, some shares) the file still lands, and a
        file that appeared meanwhile is still never replaced."""

        def no_links(src: Any, dst: Any) -> None:
            raise PermissionError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_links)
        router.get(STATUS).mock(return_value=completed())
        router.get(f"{CDN}/v.mp4").respond(200, content=BODY)
        target = tmp_path / "v.mp4"

        def appear(done: int, total: int | None) -> None:
            if race and done and not target.exists():
                target.write_bytes(b"mine")

        gen = client.generations.attach("gen1")
        if race:
            with pytest.raises(FileExistsError):
                await gen.download(target, on_progress=appear)
            assert target.read_bytes() == b"mine"
        else:
            await gen.download(target)
            assert target.read_bytes() == BODY
        assert leftovers(tmp_path) == ["v.mp4"]

    async def test_overwrite_replaces_atomically(
        self, router: respx.MockRouter, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """overwrite=True replaces the old file, which stays whole until the new one is."""
        router.get(STATUS).mock(return_value=completed())
        router.get(f"{CDN}/v.mp4").respond(200, content=BODY)
        target = tmp_path / "v.mp4"
        target.write_bytes(b"old")
        during: list[bytes] = []
        path = await client.generations.attach("gen1").download(
            target, overwrite=True, on_progress=lambda d, t: during.append(target.read_bytes())
        )
        assert during and all(seen == b"old" for seen in during)
        assert path.read_bytes() == BODY
        assert leftovers(tmp_path) == ["v.mp4"]

    def test_blocking_client(self, tmp_path: Path) -> None:
        """The blocking Kolbo raises FileExistsError too, leaving the user's file alone."""
        sim = Simulator()
        target = tmp_path / "v.mp4"

        def appear(done: int, total: int | None) -> None:
            if done and not target.exists():
                target.write_bytes(b"mine")

        with k.Kolbo(KEY, _transport=sim.transport(), rate_limits=None) as client:
            gen = client.videos.generate("a cat")
            sim.complete(gen.id)
            with pytest.raises(FileExistsError) as info:
                gen.download(target, on_progress=appear)
            assert isinstance(info.value, k.KolboError)
            assert target.read_bytes() == b"mine"
            assert leftovers(tmp_path) == ["v.mp4"]
            # overwrite=True then replaces it with the video.
            gen.download(target, overwrite=True)
        assert target.read_bytes()[4:8] == b"ftyp"
        assert leftovers(tmp_path) == ["v.mp4"]


class TestNeverHalfWritten:
    async def test_target_absent_while_bytes_arrive(
        self, sim: Simulator, sim_client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """Observed mid-transfer, path does not exist; at the end it holds every byte."""
        target = tmp_path / "v.mp4"
        gen = await sim_client.videos.generate("a cat")
        mid: list[bool] = []

        def watch(done: int, total: int | None) -> None:
            assert total == 3_000_000
            if 0 < done < total:
                mid.append(target.exists())

        await gen.download(target, on_progress=watch)
        assert mid and not any(mid)
        assert target.stat().st_size == 3_000_000
        assert leftovers(tmp_path) == ["v.mp4"]


class TestOneDeadline:
    @pytest.mark.parametrize(("timeout", "ok"), [(130.0, False), (300.0, True)])
    async def test_waiting_counts_against_the_transfer(
        self,
        sim: Simulator,
        sim_client: AsyncKolbo,
        vclock: VirtualClock,
        tmp_path: Path,
        timeout: float,
        ok: bool,
    ) -> None:
        """About 100 s of waiting plus a CDN that takes 50 s to answer: a 130 s deadline
        passes during the transfer (nothing left at path); a 300 s one does not."""
        sim.faults.slow_seconds = 50
        sim.inject("cdn", "slow")
        target = tmp_path / "v.mp4"
        gen = await sim_client.videos.generate("a cat")
        started = vclock.now()
        if ok:
            await gen.download(target, timeout=timeout)
            assert target.stat().st_size == 3_000_000
            assert vclock.now() - started >= 143
        else:
            with pytest.raises(k.GenerationTimeoutError) as info:
                await gen.download(target, timeout=timeout)
            assert info.value.generation_id == gen.id
            assert vclock.now() - started <= 160
            assert leftovers(tmp_path) == []
        assert len(cdn_requests(sim)) == 1

    async def test_retry_that_cannot_fit_is_not_slept(
        self, router: respx.MockRouter, client: AsyncKolbo, clock: StepClock, tmp_path: Path
    ) -> None:
        """A CDN 503 with the deadline already close: the call ends at its deadline rather
        than sleeping past it."""
        router.get(STATUS).mock(return_value=completed())
        cdn = router.get(f"{CDN}/v.mp4").respond(503, text="busy")
        clock.time += 0  # the deadline below is 0.2 s away: less than any backoff
        with pytest.raises(k.GenerationTimeoutError):
            await client.generations.attach("gen1").download(tmp_path / "v.mp4", timeout=0.2)
        assert cdn.call_count == 1
        assert sum(clock.sleeps) < 0.2
        assert leftovers(tmp_path) == []


class TestNotTheMedia:
    async def test_html_page_served_with_200(
        self, router: respx.MockRouter, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """A CDN's sign-in page is refused, not saved as the video, and not retried."""
        router.get(STATUS).mock(return_value=completed())
        cdn = router.get(f"{CDN}/v.mp4").respond(
            200,
            headers={"Content-Type": "text/html; charset=utf-8"},
            text="<!doctype html><html><body>Please sign in</body></html>",
        )
        with pytest.raises(k.APIResponseValidationError, match="web page") as info:
            await client.generations.attach("gen1").download(tmp_path / "v.mp4")
        assert "sign in" in str(info.value.body)
        assert cdn.call_count == 1
        assert leftovers(tmp_path) == []

    async def test_redirect_loop(
        self, router: respx.MockRouter, client: AsyncKolbo, clock: StepClock, tmp_path: Path
    ) -> None:
        """A redirect loop is a KolboError (not httpx.TooManyRedirects), not retried."""
        router.get(STATUS).mock(return_value=completed())
        cdn = router.get(f"{CDN}/v.mp4").respond(302, headers={"Location": f"{CDN}/v.mp4"})
        with pytest.raises(k.APIConnectionError, match="redirected too many times"):
            await client.generations.attach("gen1").download(tmp_path / "v.mp4")
        assert cdn.call_count == 21  # httpx's 20 redirects, once
        assert clock.sleeps == []
        assert leftovers(tmp_path) == []

    # httpx's decoder raises while its raw-stream generators are suspended; trio reports
    # them when they are collected (a ResourceWarning, after the response was closed).
    @pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
    async def test_broken_content_encoding(self, clock: StepClock, tmp_path: Path) -> None:
        """A body that claims gzip and is not is a KolboError (not httpx.DecodingError)."""
        cdn: list[httpx.Request] = []

        def serve(request: httpx.Request) -> httpx.Response:
            if request.url.path == STATUS:
                return completed()
            cdn.append(request)
            broken = gzip.compress(BODY)[:100] + b"not gzip at all" * 100
            # A stream, not content: httpx would decode content (and fail) right here.
            return httpx.Response(
                200, headers={"Content-Encoding": "gzip"}, stream=httpx.ByteStream(broken)
            )

        async with AsyncKolbo(KEY, _clock=clock, _transport=httpx.MockTransport(serve)) as client:
            with pytest.raises(k.APIResponseValidationError, match="cannot be decoded"):
                await client.generations.attach("gen1").download(tmp_path / "v.mp4")
        assert len(cdn) == 1
        assert clock.sleeps == []
        assert leftovers(tmp_path) == []

    @pytest.mark.parametrize(
        "url", ["file:///etc/passwd", "ftp://cdn.kolbo.test/v.mp4", "data:video/mp4,AAAA",
                "https:///nohost.mp4"]
    )
    async def test_non_http_url_fails_at_once(
        self,
        router: respx.MockRouter,
        client: AsyncKolbo,
        clock: StepClock,
        tmp_path: Path,
        url: str,
    ) -> None:
        """A result URL that is not http(s) is refused with no request and no retry."""
        router.get(STATUS).mock(return_value=completed(url))
        with pytest.raises(k.KolboError, match="not"):
            await client.generations.attach("gen1").download(tmp_path / "v.mp4")
        assert [c.request.url.path for c in router.calls] == [STATUS]
        assert clock.sleeps == []
        assert leftovers(tmp_path) == []

    async def test_redirect_to_file_url(self, clock: StepClock, tmp_path: Path) -> None:
        """A CDN redirect to file:// ends the download at once, whether the transport
        refuses the scheme (httpx's own) or answers it (a mock)."""
        real = httpx.AsyncHTTPTransport()

        class Cdn(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                if request.url.scheme == "file":
                    return await real.handle_async_request(request)  # UnsupportedProtocol
                if request.url.path == STATUS:
                    return completed()
                return httpx.Response(302, headers={"Location": "file:///etc/passwd"})

        def lenient(request: httpx.Request) -> httpx.Response:
            if request.url.path == STATUS:
                return completed()
            if request.url.scheme == "file":
                return httpx.Response(200, content=b"root:x:0:0")
            return httpx.Response(302, headers={"Location": "file:///etc/passwd"})

        for transport in (Cdn(), httpx.MockTransport(lenient)):
            async with AsyncKolbo(KEY, _clock=clock, _transport=transport) as client:
                with pytest.raises(k.KolboError, match="non-http"):
                    await client.generations.attach("gen1").download(tmp_path / "v.mp4")
            assert clock.sleeps == []
            assert leftovers(tmp_path) == []
        await real.aclose()


class TestOwnConnections:
    async def test_api_answers_while_downloads_fill_the_cap(self, tmp_path: Path) -> None:
        """With max_concurrent_requests downloads stuck on a slow CDN, credits() still
        answers at once (real sockets: only a real pool can run out of connections)."""
        n = 2
        sim = Simulator()
        sim.faults.slow_seconds = 30
        with sim.serve() as base_url:
            gen_id = sim.create_generation(key=KEY)
            sim.complete(gen_id)
            sim.inject("cdn", "slow", times=n)
            async with AsyncKolbo(
                KEY,
                base_url=base_url,
                rate_limits=None,
                max_retries=0,
                max_concurrent_requests=n,
                timeout=httpx.Timeout(20, pool=1),
            ) as client:
                gen = client.generations.attach(gen_id)
                async with anyio.create_task_group() as tg:
                    for i in range(n):
                        tg.start_soon(gen.download, tmp_path / f"v{i}.mp4")
                    # The server runs in its own thread: there is no event to wait on.
                    with anyio.fail_after(10):
                        while len(cdn_requests(sim)) < n:  # noqa: ASYNC110
                            await anyio.sleep(0.01)
                    with anyio.fail_after(5):
                        credits = await client.account.credits()
                    tg.cancel_scope.cancel()
        assert credits.total == sim.credits()
        assert len(cdn_requests(sim)) == n
        assert leftovers(tmp_path) == []  # the cancelled downloads left nothing

    async def test_cdn_client_is_made_on_first_download_and_closed_with_the_client(
        self, sim: Simulator, tmp_path: Path
    ) -> None:
        """No CDN connections until a download; then its own, closed by aclose()."""
        client = sim.client(KEY, rate_limits=None)
        transfers = client._pipeline.transfers
        assert transfers._http is None
        gen = await client.videos.generate("a cat")
        await gen.download(tmp_path / "v.mp4")
        cdn_http = transfers._http
        assert cdn_http is not None and cdn_http is not client._pipeline.http
        copy = client.with_options(max_retries=5)
        assert copy._pipeline.transfers is transfers
        await copy.aclose()
        assert not cdn_http.is_closed
        await client.aclose()
        assert cdn_http.is_closed
        with pytest.raises(k.KolboError, match="closed"):
            await gen.download(tmp_path / "w.mp4")

    async def test_user_http_client_is_used_and_left_open(
        self, sim: Simulator, tmp_path: Path
    ) -> None:
        """With the user's http_client, downloads go through it (its transport, proxies and
        mocks apply) and closing the SDK leaves it open."""
        async with httpx.AsyncClient(transport=sim.transport()) as http:
            async with AsyncKolbo(
                KEY, http_client=http, _clock=sim.clock, rate_limits=None
            ) as client:
                gen = await client.videos.generate("a cat")
                await gen.download(tmp_path / "v.mp4")
                assert client._pipeline.transfers.client() is http
            assert not http.is_closed
        assert len(cdn_requests(sim)) == 1
        assert (tmp_path / "v.mp4").stat().st_size == 3_000_000
