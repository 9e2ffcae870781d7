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
        "url",
        [
            "file:///etc/passwd",
            "ftp://cdn.kolbo.test/v.mp4",
            "data:video/mp4,AAAA",
            "https:///nohost.mp4",
        ],
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
    @pytest.mark.slow
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
        transfers = client._transfers
        assert transfers._http is None
        gen = await client.videos.generate("a cat")
        await gen.download(tmp_path / "v.mp4")
        cdn_http = transfers._http
        assert cdn_http is not None and cdn_http is not client._pipeline.http
        copy = client.with_options(max_retries=5)
        assert copy._transfers is transfers
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
                assert client._transfers.client() is http
            assert not http.is_closed
        assert len(cdn_requests(sim)) == 1
        assert (tmp_path / "v.mp4").stat().st_size == 3_000_000


class FakeCdn:
    """A CDN that answers with `answer(request, n)` (n counts its requests from 1) and keeps
    the ``Range`` of every request it served."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.ranges: list[str | None] = []
        self.if_ranges: list[str | None] = []

    def transport(self) -> httpx.MockTransport:
        def serve(request: httpx.Request) -> httpx.Response:
            if request.url.path == STATUS:
                return completed()
            self.ranges.append(request.headers.get("range"))
            self.if_ranges.append(request.headers.get("if-range"))
            return self.answer(request, len(self.ranges))

        return httpx.MockTransport(serve)


async def fetch(clock: StepClock, cdn: FakeCdn, target: Path, **options: Any) -> Path:
    """Download gen1's video through `cdn` to `target`."""
    async with AsyncKolbo(KEY, _clock=clock, _transport=cdn.transport(), **options) as client:
        return await client.generations.attach("gen1").download(target)


def asked_from(header: str | None) -> int:
    """The first byte a ``Range: bytes=N-`` asks for (0 without one)."""
    return int(header[6:].partition("-")[0]) if header else 0


def part(body: bytes, start: int, stop: int, **headers: str) -> httpx.Response:
    """A 206 carrying bytes `start`..`stop` of `body`, with its Content-Range."""
    return httpx.Response(
        206,
        headers={"Content-Range": f"bytes {start}-{stop - 1}/{len(body)}", **headers},
        content=body[start:stop],
    )


class Capped(httpx.AsyncBaseTransport):
    """The simulator behind a CDN that serves at most `cap` bytes per answer, as some CDNs do
    for large files: every GET becomes a Range request for one slice (a 206 even when the
    client asked for no range)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, cap: int) -> None:
        self.inner = inner
        self.cap = cap
        self.asked: list[str | None] = []  # the Range headers the SDK sent

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host.startswith("cdn"):
            self.asked.append(request.headers.get("range"))
            start = asked_from(request.headers.get("range"))
            request.headers["Range"] = f"bytes={start}-{start + self.cap - 1}"
        return await self.inner.handle_async_request(request)


class TestWholeFileOnly:
    """The size a CDN announces (a 200's Content-Length, a Content-Range's total) is the
    file's; nothing shorter is ever placed at path."""

    async def test_capped_slices_are_joined_into_the_whole_file(
        self, sim: Simulator, vclock: VirtualClock, tmp_path: Path
    ) -> None:
        """A 206 to a plain GET (bytes 0-999999/3000000) is the first slice, not the file:
        the rest is asked for slice by slice, at once, costing no retry (max_retries=0)."""
        async with sim.client(KEY, rate_limits=None) as plain:
            gen = await plain.videos.generate("a cat")
            whole = (await gen.download(tmp_path / "whole.mp4")).read_bytes()
        served = len(cdn_requests(sim))
        capped = Capped(sim.transport(), cap=1_000_000)
        started = vclock.now()
        async with AsyncKolbo(
            KEY, _transport=capped, _clock=vclock, rate_limits=None, max_retries=0
        ) as client:
            path = await client.generations.attach(gen.id).download(tmp_path / "v.mp4")
        assert path.read_bytes() == whole
        assert len(whole) == 3_000_000
        assert capped.asked == [None, "bytes=1000000-", "bytes=2000000-"]
        assert [r.status for r in cdn_requests(sim)[served:]] == [206, 206, 206]
        assert vclock.now() == started  # no backoff between slices
        assert leftovers(tmp_path) == ["v.mp4", "whole.mp4"]

    def test_capped_slices_blocking_client(self, tmp_path: Path) -> None:
        """The blocking Kolbo joins the slices too."""
        sim = Simulator(video_size=300_000)
        capped = Capped(sim.transport(), cap=100_000)
        with k.Kolbo(KEY, _transport=capped, rate_limits=None, max_retries=0) as client:
            gen = client.videos.generate("a cat")
            sim.complete(gen.id)
            path = gen.download(tmp_path / "v.mp4")
        assert path.stat().st_size == 300_000
        assert path.read_bytes()[4:8] == b"ftyp"
        assert capped.asked == [None, "bytes=100000-", "bytes=200000-"]
        assert len(cdn_requests(sim)) == 3

    async def test_resume_answered_with_a_capped_slice(
        self, clock: StepClock, tmp_path: Path
    ) -> None:
        """A transfer that broke at 500 of 2985 bytes, resumed by a CDN that answers 1000
        bytes at a time: the file is whole (not 1500 bytes), one backoff for the break."""
        body = bytes(range(256)) * 11 + bytes(169)  # 2985 bytes

        def answer(request: httpx.Request, n: int) -> httpx.Response:
            if n == 1:
                size = {"Content-Length": str(len(body))}
                return httpx.Response(200, headers=size, stream=_Breaking(body, 500))
            start = asked_from(request.headers.get("range"))
            return part(body, start, min(start + 1000, len(body)))

        cdn = FakeCdn(answer)
        path = await fetch(clock, cdn, tmp_path / "v.mp4")
        assert path.read_bytes() == body
        assert cdn.ranges == [None, "bytes=500-", "bytes=1500-", "bytes=2500-"]
        assert len(clock.sleeps) == 1
        assert leftovers(tmp_path) == ["v.mp4"]

    async def test_slice_that_never_moves_on_ends_without_a_file(
        self, clock: StepClock, tmp_path: Path
    ) -> None:
        """A CDN that answers every request with bytes 0-99/2985 (whatever the Range) never
        completes the file: the retry budget ends it, nothing is left at path."""
        body = bytes(2985)
        cdn = FakeCdn(lambda request, n: part(body, 0, 100))
        with pytest.raises(k.APIConnectionError, match="bytes from 0, not 100"):
            await fetch(clock, cdn, tmp_path / "v.mp4", max_retries=2)
        # Each plain GET gets the first slice, each resume the wrong one: three tries.
        assert cdn.ranges == [None, "bytes=100-"] * 3
        assert len(clock.sleeps) == 2
        assert leftovers(tmp_path) == []

    async def test_slice_shorter_than_it_announced_is_resumed(
        self, clock: StepClock, tmp_path: Path
    ) -> None:
        """A 206 announcing bytes 0-2984 that stops after 700 is a broken transfer: resumed
        from 700, and within the budget only."""
        body = bytes(range(256)) * 12

        def answer(request: httpx.Request, n: int) -> httpx.Response:
            start = asked_from(request.headers.get("range"))
            rest = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
            if n == 1:
                return httpx.Response(206, headers=rest, stream=_Breaking(body, 700))
            return httpx.Response(206, headers=rest, content=body[start:])

        cdn = FakeCdn(answer)
        path = await fetch(clock, cdn, tmp_path / "v.mp4")
        assert path.read_bytes() == body
        assert cdn.ranges == [None, "bytes=700-"]

    @pytest.mark.parametrize("total", ["*", None])
    async def test_partial_answer_without_a_size_is_refused(
        self, clock: StepClock, tmp_path: Path, total: str | None
    ) -> None:
        """A 206 to a plain GET that does not say the file's size (no Content-Range, or a
        total of "*") can never be known whole: refused at once, nothing saved."""
        headers = {} if total is None else {"Content-Range": f"bytes 0-99/{total}"}
        cdn = FakeCdn(lambda request, n: httpx.Response(206, headers=headers, content=bytes(100)))
        with pytest.raises(k.APIResponseValidationError, match="without the file's size"):
            await fetch(clock, cdn, tmp_path / "v.mp4")
        assert cdn.ranges == [None]
        assert leftovers(tmp_path) == []

    async def test_total_that_changes_starts_over(self, clock: StepClock, tmp_path: Path) -> None:
        """A resume whose Content-Range total differs from the size first announced is not
        spliced on: the file is fetched again, whole."""
        body = bytes(range(256)) * 4

        def answer(request: httpx.Request, n: int) -> httpx.Response:
            size = {"Content-Length": str(len(body))}
            if n == 1:
                return httpx.Response(200, headers=size, stream=_Breaking(body, 300))
            if n == 2:
                return httpx.Response(
                    206, headers={"Content-Range": "bytes 300-1999/2000"}, content=bytes(1700)
                )
            return httpx.Response(200, headers=size, content=body)

        cdn = FakeCdn(answer)
        path = await fetch(clock, cdn, tmp_path / "v.mp4")
        assert path.read_bytes() == body
        assert cdn.ranges == [None, "bytes=300-", None]

    async def test_more_bytes_than_announced_starts_over(
        self, clock: StepClock, tmp_path: Path
    ) -> None:
        """An answer that brings more than its Content-Length is not resumed past its end
        (where every Range would be unsatisfiable): the file is fetched again, whole."""
        body = bytes(range(256)) * 4

        def answer(request: httpx.Request, n: int) -> httpx.Response:
            if n == 1:
                lying = {"Content-Length": str(len(body) - 100)}
                return httpx.Response(200, headers=lying, stream=_Pieces([body]))
            return httpx.Response(200, content=body)

        cdn = FakeCdn(answer)
        path = await fetch(clock, cdn, tmp_path / "v.mp4")
        assert path.read_bytes() == body
        assert cdn.ranges == [None, None]


class TestOddHeaders:
    async def test_non_ascii_digit_in_content_range(self, clock: StepClock, tmp_path: Path) -> None:
        """``bytes ²-99/100`` ("²".isdigit() is true, int() refuses it) is an unreadable
        range, not a ValueError: the file is fetched again, whole."""
        body = bytes(range(256)) * 4

        def answer(request: httpx.Request, n: int) -> httpx.Response:
            size = {"Content-Length": str(len(body))}
            if n == 1:
                return httpx.Response(200, headers=size, stream=_Breaking(body, 300))
            if n == 2:
                odd = [(b"content-range", "bytes ²-1023/1024".encode())]
                return httpx.Response(206, headers=odd, content=body[300:])
            return httpx.Response(200, headers=size, content=body)

        cdn = FakeCdn(answer)
        path = await fetch(clock, cdn, tmp_path / "v.mp4")
        assert path.read_bytes() == body
        assert cdn.ranges == [None, "bytes=300-", None]

    async def test_non_ascii_digit_in_content_range_every_time(
        self, clock: StepClock, tmp_path: Path
    ) -> None:
        """A CDN that keeps sending such a range ends in a KolboError within the budget."""
        odd = [(b"content-range", "bytes ²-99/100".encode())]
        cdn = FakeCdn(lambda request, n: httpx.Response(206, headers=odd, content=bytes(100)))
        with pytest.raises(k.APIConnectionError, match="unreadable Content-Range"):
            await fetch(clock, cdn, tmp_path / "v.mp4", max_retries=1)
        assert cdn.ranges == [None, None]
        assert leftovers(tmp_path) == []

    async def test_non_ascii_digit_in_content_length(
        self, clock: StepClock, tmp_path: Path
    ) -> None:
        """A Content-Length of "²" is no length (not a ValueError): the body is taken as
        it comes."""
        odd = [(b"content-length", "²".encode())]
        cdn = FakeCdn(lambda request, n: httpx.Response(200, headers=odd, content=BODY))
        path = await fetch(clock, cdn, tmp_path / "v.mp4")
        assert path.read_bytes() == BODY
        assert cdn.ranges == [None]


def padded(head: bytes) -> bytes:
    """`head` followed by enough binary to fill the sniffed window."""
    return head + bytes(range(256)) * 8


#: The first bytes of real media: none may ever be refused.
MEDIA = {
    "mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41",
    "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01",
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01",
    "gif": b"GIF89a\x80\x02\xe0\x01\xf7\x00\x00",
    "webp": b"RIFF\x24\x00\x00\x00WEBPVP8 ",
    # A QuickTime file opening with a >1 GB mdat box whose size bytes read "<!DO".
    "mov-mdat-lt": b"<!DOmdat\x00\x00\x01\xb3",
    "mov-mdat-brace": b"{\x00\x00\x00mdat\x00\x00\x01\xb3",
}

#: Bodies that are not the media, each with the Content-Type it came with (None: none).
DOCUMENTS = {
    "html-no-type": (None, b"<!doctype html><html><body>Please sign in</body></html>"),
    "html-octet": ("application/octet-stream", b"<!DOCTYPE html><html>Access denied</html>"),
    "html-bom-space": (
        "binary/octet-stream",
        b"\xef\xbb\xbf\r\n  <html lang=en><head><title>Sign in</title></head></html>",
    ),
    "html-long-streamed": ("application/octet-stream", b"<html>" + b"<p>Sign in</p>" * 400),
    "xml-octet": (
        "application/octet-stream",
        b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>",
    ),
    "json-no-type": (None, b' \n{"error": "token expired"}'),
    "xml": ("application/xml", b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>"),
    "text-xml": ("text/xml", b"<Error><Code>NoSuchKey</Code></Error>"),
    "json": ("application/json", b'{"error":"expired"}'),
    "problem-json": ("application/problem+json", b'{"title":"Forbidden"}'),
    "text-plain": ("text/plain; charset=utf-8", b"Access Denied"),
}


class TestNotTheMediaSniffed:
    @pytest.mark.parametrize("name", DOCUMENTS)
    async def test_document_is_refused(self, clock: StepClock, tmp_path: Path, name: str) -> None:
        """A page or an error document is refused whatever it is labelled, served once,
        nothing left at path and no temporary file."""
        kind, body = DOCUMENTS[name]
        headers = {} if kind is None else {"Content-Type": kind}

        def answer(request: httpx.Request, n: int) -> httpx.Response:
            if name == "html-long-streamed":  # arrives in pieces, no length announced
                pieces = [body[i : i + 100] for i in range(0, len(body), 100)]
                return httpx.Response(200, headers=headers, stream=_Pieces(pieces))
            return httpx.Response(200, headers=headers, content=body)

        cdn = FakeCdn(answer)
        with pytest.raises(k.APIResponseValidationError, match="not the media"):
            await fetch(clock, cdn, tmp_path / "v.mp4")
        assert cdn.ranges == [None]
        assert clock.sleeps == []
        assert leftovers(tmp_path) == []

    @pytest.mark.parametrize("kind", [None, "application/octet-stream", "video/mp4"])
    @pytest.mark.parametrize("name", MEDIA)
    async def test_real_media_is_never_refused(
        self, clock: StepClock, tmp_path: Path, name: str, kind: str | None
    ) -> None:
        """Whatever its label, a body that opens as a video or an image is saved."""
        body = padded(MEDIA[name])
        headers = {} if kind is None else {"Content-Type": kind}
        cdn = FakeCdn(lambda request, n: httpx.Response(200, headers=headers, content=body))
        path = await fetch(clock, cdn, tmp_path / "v.mp4")
        assert path.read_bytes() == body

    @pytest.mark.parametrize("kind", [None, "application/octet-stream", "image/svg+xml"])
    async def test_svg_is_media(self, clock: StepClock, tmp_path: Path, kind: str | None) -> None:
        """SVG, the one image written as markup, is saved (images are coming)."""
        body = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>'
        headers = {} if kind is None else {"Content-Type": kind}
        cdn = FakeCdn(lambda request, n: httpx.Response(200, headers=headers, content=body))
        path = await fetch(clock, cdn, tmp_path / "v.svg")
        assert path.read_bytes() == body

    async def test_resumed_slice_is_not_sniffed(self, clock: StepClock, tmp_path: Path) -> None:
        """The middle of a file can hold any bytes: only a body that starts it is looked at."""
        body = padded(MEDIA["mp4"])[:600] + b"{" + b"x" * 600

        def answer(request: httpx.Request, n: int) -> httpx.Response:
            if n == 1:
                size = {"Content-Length": str(len(body))}
                return httpx.Response(200, headers=size, stream=_Breaking(body, 600))
            return part(body, 600, len(body))

        cdn = FakeCdn(answer)
        path = await fetch(clock, cdn, tmp_path / "v.mp4")
        assert path.read_bytes() == body
        assert cdn.ranges == [None, "bytes=600-"]

    @pytest.mark.parametrize("encoding", ["br", "zstd", "x-weird", "gzip, br"])
    async def test_encoding_httpx_cannot_undo(
        self, clock: StepClock, tmp_path: Path, encoding: str
    ) -> None:
        """A Content-Encoding the SDK did not ask for (it sends identity) and httpx has no
        decoder for would be saved still encoded: refused at once, not retried."""
        from httpx._decoders import SUPPORTED_DECODERS

        if all(e.strip() in SUPPORTED_DECODERS for e in encoding.split(",")):
            pytest.skip(f"{encoding} is decodable here")
        headers = {"Content-Encoding": encoding, "Content-Type": "video/mp4"}
        encoded = b"\x1b\x00encoded" * 50
        if encoding.startswith("gzip"):
            encoded = gzip.compress(encoded)  # httpx undoes this layer, not the other
        cdn = FakeCdn(
            lambda request, n: httpx.Response(
                200, headers=headers, stream=httpx.ByteStream(encoded)
            )
        )
        with pytest.raises(k.APIResponseValidationError, match="cannot be decoded"):
            await fetch(clock, cdn, tmp_path / "v.mp4")
        assert cdn.ranges == [None]
        assert clock.sleeps == []
        assert leftovers(tmp_path) == []

    async def test_gzip_the_sdk_did_not_ask_for_is_decoded(
        self, clock: StepClock, tmp_path: Path
    ) -> None:
        """gzip, which httpx undoes, still yields the media."""
        headers = {"Content-Encoding": "gzip"}
        packed = gzip.compress(BODY)
        cdn = FakeCdn(
            lambda request, n: httpx.Response(200, headers=headers, stream=httpx.ByteStream(packed))
        )
        path = await fetch(clock, cdn, tmp_path / "v.mp4")
        assert path.read_bytes() == BODY

    @pytest.mark.parametrize("length", ["0", None])
    async def test_empty_body(self, clock: StepClock, tmp_path: Path, length: str | None) -> None:
        """An empty 200 is never the media: refused, not retried, nothing at path."""
        headers = {"Content-Type": "video/mp4"}
        if length is not None:
            headers["Content-Length"] = length

        def answer(request: httpx.Request, n: int) -> httpx.Response:
            if length is None:
                return httpx.Response(200, headers=headers, stream=_Pieces([]))
            return httpx.Response(200, headers=headers, content=b"")

        cdn = FakeCdn(answer)
        with pytest.raises(k.APIResponseValidationError, match="empty"):
            await fetch(clock, cdn, tmp_path / "v.mp4")
        assert cdn.ranges == [None]
        assert clock.sleeps == []
        assert leftovers(tmp_path) == []

    def test_blocking_client(self, tmp_path: Path) -> None:
        """The blocking Kolbo refuses a sign-in page labelled octet-stream as well."""
        sim = Simulator()
        page = b"<!doctype html><html><body>Please sign in</body></html>"

        class SignIn(httpx.AsyncBaseTransport):
            def __init__(self) -> None:
                self.inner = sim.transport()

            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                answer = await self.inner.handle_async_request(request)
                if not request.url.host.startswith("cdn"):
                    return answer
                await answer.aread()
                headers = {"Content-Type": "application/octet-stream"}
                return httpx.Response(200, headers=headers, content=page)

        with k.Kolbo(KEY, _transport=SignIn(), rate_limits=None) as client:
            gen = client.videos.generate("a cat")
            sim.complete(gen.id)
            with pytest.raises(k.APIResponseValidationError, match="web page"):
                gen.download(tmp_path / "v.mp4")
        assert len(cdn_requests(sim)) == 1
        assert leftovers(tmp_path) == []


#: A 2985-byte file with no control-free stretch: served in 1000-byte slices below.
SLICED = padded(MEDIA["mp4"])[:2985]
SIGN_IN = (b"<!DOCTYPE html><html><body>Sign in to continue</body></html>" * 20)[:1000]


def sliced(body: bytes, request: httpx.Request, **headers: str) -> httpx.Response:
    """The 1000-byte slice of `body` a capped CDN answers to `request`."""
    start = asked_from(request.headers.get("range"))
    return part(body, start, min(start + 1000, len(body)), **headers)


#: Continuation slices that are not the media: (Content-Type or None, body).
SLICE_DOCUMENTS = {
    "html-no-type": (None, SIGN_IN),
    "html-labelled-video": ("video/mp4", SIGN_IN),
    "html-bom-space-octet": ("application/octet-stream", b"\xef\xbb\xbf\n  <HTML>" + b"x" * 990),
    "xml-octet": ("application/octet-stream", b"<?xml version='1.0'?><Error>" + b"e" * 972),
    "html-labelled": ("text/html", b"\x00" * 1000),
    "json-labelled": ("application/json", b'{"error":"expired"}' + b" " * 981),
}


class TestContinuationSlices:
    """A slice that continues the file is checked too: a page there is never spliced in."""

    @pytest.mark.parametrize("name", SLICE_DOCUMENTS)
    async def test_page_in_a_continuation_slice_is_refused(
        self, clock: StepClock, tmp_path: Path, name: str
    ) -> None:
        """A capped CDN whose second slice (right Content-Range) is a sign-in page or an error
        document, however labelled: refused, not retried, nothing at path."""
        kind, page = SLICE_DOCUMENTS[name]

        def answer(request: httpx.Request, n: int) -> httpx.Response:
            if n == 1:
                return sliced(SLICED, request, **{"Content-Type": "video/mp4"})
            headers = {} if kind is None else {"Content-Type": kind}
            return part(SLICED[:1000] + page[:1000] + SLICED[2000:], 1000, 2000, **headers)

        cdn = FakeCdn(answer)
        with pytest.raises(k.APIResponseValidationError, match="not the media"):
            await fetch(clock, cdn, tmp_path / "v.mp4")
        assert cdn.ranges == [None, "bytes=1000-"]
        assert clock.sleeps == []
        assert leftovers(tmp_path) == []

    @pytest.mark.parametrize(
        "middle",
        [
            b'{"error": "expired"} ',  # JSON-like text: sniffed only on a first answer
            b"<head><title>x</title>",  # markup, but not a page's unmistakable opening
            b"<Error><Code>AccessDenied</Code></Error>",
            b"<html" + b"\x00\x01",  # a page's opening, then binary: media after all
        ],
    )
    async def test_media_that_reads_like_text_mid_file_is_saved(
        self, clock: StepClock, tmp_path: Path, middle: bytes
    ) -> None:
        """The middle of a video can hold any bytes: a slice opening with ``{`` or ``<`` and
        text is joined on unless it opens as a page and stays text."""
        body = SLICED[:1000] + middle + SLICED[1000 + len(middle) :]
        cdn = FakeCdn(lambda request, n: sliced(body, request, **{"Content-Type": "video/mp4"}))
        path = await fetch(clock, cdn, tmp_path / "v.mp4")
        assert path.read_bytes() == body
        assert cdn.ranges == [None, "bytes=1000-", "bytes=2000-"]

    def test_blocking_client(self, tmp_path: Path) -> None:
        """The blocking Kolbo refuses a sign-in page in a continuation slice as well."""

        def answer(request: httpx.Request, n: int) -> httpx.Response:
            if n == 1:
                return sliced(SLICED, request)
            return part(SLICED[:1000] + SIGN_IN + SLICED[2000:], 1000, 2000)

        cdn = FakeCdn(answer)
        with (
            k.Kolbo(KEY, _transport=cdn.transport(), rate_limits=None) as client,
            pytest.raises(k.APIResponseValidationError, match="web page"),
        ):
            client.generations.attach("gen1").download(tmp_path / "v.mp4")
        assert cdn.ranges == [None, "bytes=1000-"]
        assert leftovers(tmp_path) == []


NEW = bytes(reversed(SLICED))  # the file after the CDN's copy changed


class TestOneVersion:
    """Every byte placed comes from one version of the file."""

    @pytest.mark.parametrize(
        ("headers", "sent"),
        [
            ({"ETag": '"v1"'}, '"v1"'),
            ({"ETag": '"v1"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"}, '"v1"'),
            # A weak ETag may not be sent; a Last-Modified a second before Date is strong.
            (
                {
                    "ETag": 'W/"v1"',
                    "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT",
                    "Date": "Mon, 01 Jan 2024 00:00:05 GMT",
                },
                None,
            ),
            (
                {
                    "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT",
                    "Date": "Mon, 01 Jan 2024 00:00:05 GMT",
                },
                "Mon, 01 Jan 2024 00:00:00 GMT",
            ),
            (
                {
                    "Last-Modified": "Mon, 01 Jan 2024 00:00:05 GMT",
                    "Date": "Mon, 01 Jan 2024 00:00:05 GMT",
                },
                None,
            ),
            ({"Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"}, None),
            ({"Last-Modified": "garbage", "Date": "Mon, 01 Jan 2024 00:00:05 GMT"}, None),
            ({}, None),
        ],
    )
    async def test_if_range_names_the_version(
        self, clock: StepClock, tmp_path: Path, headers: dict[str, str], sent: str | None
    ) -> None:
        """Every Range request carries the first answer's strong validator in If-Range (RFC
        9110 13.1.5: never a weak ETag, a date only when strong); none when there is none."""
        cdn = FakeCdn(lambda request, n: sliced(SLICED, request, **headers))
        path = await fetch(clock, cdn, tmp_path / "v.mp4")
        assert path.read_bytes() == SLICED
        assert cdn.ranges == [None, "bytes=1000-", "bytes=2000-"]
        assert cdn.if_ranges == [None, sent, sent]

    @pytest.mark.parametrize("validator", ["ETag", "Last-Modified"])
    async def test_slice_of_another_version_starts_over(
        self, clock: StepClock, tmp_path: Path, validator: str
    ) -> None:
        """The CDN's file changed after the first slice and it ignores If-Range: the slice
        of the new version is not spliced on; the file is fetched again from zero (one
        retry's backoff) and the new version alone is placed."""
        values = (
            ('"v1"', '"v2"')
            if validator == "ETag"
            else ("Mon, 01 Jan 2024 00:00:00 GMT", "Tue, 02 Jan 2024 00:00:00 GMT")
        )

        def answer(request: httpx.Request, n: int) -> httpx.Response:
            if n == 1:
                return sliced(SLICED, request, **{validator: values[0]})
            return sliced(NEW, request, **{validator: values[1]})

        cdn = FakeCdn(answer)
        path = await fetch(clock, cdn, tmp_path / "v.mp4")
        assert path.read_bytes() == NEW
        assert cdn.ranges == [None, "bytes=1000-", None, "bytes=1000-", "bytes=2000-"]
        assert len(clock.sleeps) == 1
        assert leftovers(tmp_path) == ["v.mp4"]

    async def test_version_that_keeps_changing_ends_without_a_file(
        self, clock: StepClock, tmp_path: Path
    ) -> None:
        """A file that changes under every resume ends within the retry budget."""
        cdn = FakeCdn(lambda request, n: sliced(SLICED, request, ETag=f'"v{n}"'))
        with pytest.raises(k.APIConnectionError, match="changed on the CDN"):
            await fetch(clock, cdn, tmp_path / "v.mp4", max_retries=1)
        assert cdn.ranges == [None, "bytes=1000-"] * 2
        assert leftovers(tmp_path) == []

    async def test_slice_without_a_validator_is_joined(
        self, clock: StepClock, tmp_path: Path
    ) -> None:
        """A CDN that names the version on its first answer only (some drop it on 206s):
        absence proves no change, the slices are joined as before."""

        def answer(request: httpx.Request, n: int) -> httpx.Response:
            return sliced(SLICED, request, **({"ETag": '"v1"'} if n == 1 else {}))

        cdn = FakeCdn(answer)
        path = await fetch(clock, cdn, tmp_path / "v.mp4")
        assert path.read_bytes() == SLICED
        assert cdn.if_ranges == [None, '"v1"', '"v1"']

    @pytest.mark.parametrize("length", [True, False])
    async def test_cdn_honouring_if_range_sends_the_new_file(
        self, clock: StepClock, tmp_path: Path, length: bool
    ) -> None:
        """A CDN that honours If-Range answers a resume of a changed file with the whole new
        version (a 200, its own size, announced or not): that alone is placed, at once."""
        new = NEW[:2500]

        def answer(request: httpx.Request, n: int) -> httpx.Response:
            if n == 1:
                return sliced(SLICED, request, ETag='"v1"')
            assert request.headers["if-range"] == '"v1"'
            if length:
                return httpx.Response(200, headers={"ETag": '"v2"'}, content=new)
            return httpx.Response(200, headers={"ETag": '"v2"'}, stream=_Pieces([new]))

        cdn = FakeCdn(answer)
        path = await fetch(clock, cdn, tmp_path / "v.mp4")
        assert path.read_bytes() == new
        assert cdn.ranges == [None, "bytes=1000-"]
        assert clock.sleeps == []


class _Pieces(httpx.AsyncByteStream):
    """A body that arrives in the given pieces, with no length announced."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece


class TestRedirects:
    async def test_redirect_to_file_url_given_the_cdn_host(
        self, clock: StepClock, tmp_path: Path
    ) -> None:
        """httpx gives a hostless ``file:///etc/passwd`` the CDN's host; a CDN that answers
        everything with that redirect is reported as a redirect to a non-http(s) URL (not a
        loop), after one request."""
        cdn = FakeCdn(
            lambda request, n: httpx.Response(302, headers={"Location": "file:///etc/passwd"})
        )
        with pytest.raises(k.KolboError, match="non-http") as info:
            await fetch(clock, cdn, tmp_path / "v.mp4")
        assert "too many" not in str(info.value)
        assert cdn.ranges == [None]
        assert clock.sleeps == []
        assert leftovers(tmp_path) == []

    async def test_redirect_is_followed_without_the_key(
        self, clock: StepClock, tmp_path: Path
    ) -> None:
        """An ordinary redirect to another http(s) host is followed (the file lands), and the
        key reaches neither host."""
        seen: list[httpx.Request] = []

        def answer(request: httpx.Request, n: int) -> httpx.Response:
            seen.append(request)
            if n == 1:
                return httpx.Response(302, headers={"Location": "https://cdn2.kolbo.test/x.mp4"})
            return httpx.Response(200, content=BODY)

        cdn = FakeCdn(answer)
        path = await fetch(clock, cdn, tmp_path / "v.mp4")
        assert path.read_bytes() == BODY
        assert [r.url.host for r in seen] == ["cdn.kolbo.test", "cdn2.kolbo.test"]
        assert all("x-api-key" not in r.headers for r in seen)
