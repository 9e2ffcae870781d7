"""Promises of a download's CDN side (`_download`) that its mutation run found untested
(issue 18): what hooks and logs are told, the advice of a CDN 429 that outlasts the deadline,
which answers are errors, and that a signed URL's query never shows in an error.

A virtual clock and a transport that plays Kolbo's status route and a scripted CDN.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import kolbo_async as k
from kolbo_async import AsyncKolbo
from kolbo_async._hooks import CooldownStarted, DownloadProgress, Retrying
from kolbo_async.testing import VirtualClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "4d" * 20
URL = "https://cdn-a.test/one.mp4?token=SECRET"
BODY = bytes(range(256)) * 64  # 16 KiB

Script = Callable[[httpx.Request], httpx.Response]


def media(body: bytes = BODY) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "video/mp4"})


class Service(httpx.AsyncBaseTransport):
    """Kolbo's status route (completed, with `URL`) and a CDN answering per `script`."""

    def __init__(self, script: Script, url: str = URL) -> None:
        self.script = script
        self.url = url
        self.cdn: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "api.kolbo.ai":
            body = {
                "success": True,
                "generation_id": "gen1",
                "state": "completed",
                "progress": 100,
                "result": {"urls": [self.url]},
            }
            return httpx.Response(200, json=body)
        self.cdn.append(request)
        return self.script(request)


class OneChunk(httpx.AsyncByteStream):
    """A body of unknown length (no generator left for the GC to finalize)."""

    def __init__(self, chunk: bytes) -> None:
        self.chunk: bytes | None = chunk

    def __aiter__(self) -> OneChunk:
        return self

    async def __anext__(self) -> bytes:
        chunk, self.chunk = self.chunk, None
        if chunk is None:
            raise StopAsyncIteration
        return chunk


def scripted(*answers: httpx.Response, url: str = URL) -> Service:
    """A CDN giving `answers` in turn, then the media."""
    queue = list(answers)
    return Service(lambda request: queue.pop(0) if queue else media(), url)


def kolbo(service: Service, clock: VirtualClock, **options: Any) -> AsyncKolbo:
    return AsyncKolbo(KEY, _transport=service, _clock=clock, rate_limits=None, **options)


async def test_hooks_hear_the_cooldown_the_retry_and_every_chunk_of_a_download(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = VirtualClock()
    events: list[object] = []
    service = scripted(httpx.Response(429, text="slow down", headers={"retry-after": "3"}))
    caplog.set_level(logging.DEBUG, logger="kolbo_async")
    target = tmp_path / "v.mp4"
    async with kolbo(service, clock, hooks=[events.append]) as client:
        await client.generations.attach("gen1").download(target)
    assert target.read_bytes() == BODY
    assert [e for e in events if isinstance(e, CooldownStarted)] == [
        CooldownStarted(None, "cdn-a.test", 3.0)
    ]
    retries = [e for e in events if isinstance(e, Retrying)]
    assert retries == [Retrying("GET", "/one.mp4", 1, 3.0, "HTTP 429")]
    progress = [e for e in events if isinstance(e, DownloadProgress)]
    assert progress[0] == DownloadProgress(str(target), 0, len(BODY))
    assert progress[-1] == DownloadProgress(str(target), len(BODY), len(BODY))
    assert all(e.path == str(target) for e in progress)
    received = [e.received for e in progress]
    assert received == sorted(received) and len(received) >= 2
    messages = [record.getMessage() for record in caplog.records]
    assert any(
        m.startswith("download broke at 0 bytes (429 ")
        and "slow down" in m
        and m.endswith("); resuming in 3.00 s")
        for m in messages
    ), messages
    assert not any("SECRET" in m for m in messages)


async def test_a_capped_slice_is_logged_with_what_is_still_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = VirtualClock()
    first = httpx.Response(
        206,
        headers={"content-range": f"bytes 0-99/{len(BODY)}", "content-type": "video/mp4"},
        content=BODY[:100],
    )
    rest = httpx.Response(
        206,
        headers={
            "content-range": f"bytes 100-{len(BODY) - 1}/{len(BODY)}",
            "content-type": "video/mp4",
        },
        content=BODY[100:],
    )
    caplog.set_level(logging.DEBUG, logger="kolbo_async")
    async with kolbo(scripted(first, rest), clock) as client:
        path = await client.generations.attach("gen1").download(tmp_path / "v.mp4")
    assert path.read_bytes() == BODY
    messages = [record.getMessage() for record in caplog.records]
    assert f"download has 100 of {len(BODY)} bytes; asking for the rest" in messages


# -- a CDN asking for longer than the caller has ----------------------------------------------


@pytest.mark.parametrize("retry_after", [30, 120])
async def test_a_cdn_429_asking_for_the_rest_of_the_deadline_or_more_is_a_rate_limit_error(
    tmp_path: Path, retry_after: int
) -> None:
    """Asked to wait until the deadline (30 s of 30) or past it: its advice at once, not a
    timeout later, and nothing left behind."""
    clock = VirtualClock()
    service = scripted(
        httpx.Response(429, text="slow down", headers={"retry-after": str(retry_after)})
    )
    async with kolbo(service, clock) as client:
        with pytest.raises(k.RateLimitError) as info:
            await client.generations.attach("gen1").download(tmp_path / "v.mp4", timeout=30)
    assert info.value.retry_after == retry_after
    assert info.value.status_code == 429
    assert clock.now() == 0.0
    assert len(service.cdn) == 1
    assert list(tmp_path.iterdir()) == []


async def test_a_cdn_503_asking_past_the_deadline_is_a_timeout_not_a_rate_limit(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    service = scripted(httpx.Response(503, text="busy", headers={"retry-after": "45"}))
    async with kolbo(service, clock) as client:
        with pytest.raises(k.GenerationTimeoutError):
            await client.generations.attach("gen1").download(tmp_path / "v.mp4", timeout=30)
    assert len(service.cdn) == 1


async def test_a_cdn_429_on_the_last_try_keeps_its_retry_after(tmp_path: Path) -> None:
    clock = VirtualClock()
    service = scripted(httpx.Response(429, text="slow down", headers={"retry-after": "5"}))
    async with kolbo(service, clock, max_retries=0) as client:
        with pytest.raises(k.RateLimitError) as info:
            await client.generations.attach("gen1").download(tmp_path / "v.mp4", timeout=None)
    assert info.value.retry_after == 5.0
    assert "slow down" in str(info.value)


# -- what is an error ------------------------------------------------------------------------


async def test_a_300_answer_is_an_error_not_the_media(tmp_path: Path) -> None:
    """300 Multiple Choices is not followed by httpx: its body is not the video."""
    clock = VirtualClock()
    service = scripted(httpx.Response(300, text="choose one", headers={"content-type": "video/mp4"}))
    async with kolbo(service, clock, max_retries=0) as client:
        with pytest.raises(k.APIStatusError) as info:
            await client.generations.attach("gen1").download(tmp_path / "v.mp4")
    assert info.value.status_code == 300
    assert list(tmp_path.iterdir()) == []


async def test_a_cdn_error_answer_names_its_body(tmp_path: Path) -> None:
    clock = VirtualClock()
    service = scripted(httpx.Response(404, text="no such object here"))
    async with kolbo(service, clock) as client:
        with pytest.raises(k.NotFoundError) as info:
            await client.generations.attach("gen1").download(tmp_path / "v.mp4")
    assert "no such object here" in str(info.value)
    assert len(service.cdn) == 1


# -- a signed URL's secret never shows; the refused page is quoted --------------------------------


PAGE = "<!doctype html><html><body>Please   sign\nin \u00e9</body></html>"


async def test_a_page_sniffed_in_a_media_answer_is_quoted_without_the_urls_query(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    service = scripted(media(PAGE.encode() + b"\xff"))
    async with kolbo(service, clock) as client:
        with pytest.raises(k.APIResponseValidationError) as info:
            await client.generations.attach("gen1").download(tmp_path / "v.mp4")
    message = str(info.value)
    assert "https://cdn-a.test/one.mp4 " in message
    assert "SECRET" not in message
    assert "Please sign in \u00e9</body></html>\ufffd" in message  # whitespace folded
    assert info.value.body == PAGE + "\ufffd"


async def test_a_page_served_as_html_is_quoted_without_the_urls_query(tmp_path: Path) -> None:
    clock = VirtualClock()
    page = httpx.Response(
        200, text=PAGE + "x" * 200, headers={"content-type": "text/html; charset=utf-8"}
    )
    service = scripted(page)
    async with kolbo(service, clock) as client:
        with pytest.raises(k.APIResponseValidationError) as info:
            await client.generations.attach("gen1").download(tmp_path / "v.mp4")
    message = str(info.value)
    assert "https://cdn-a.test/one.mp4 " in message
    assert "SECRET" not in message
    folded = " ".join((PAGE + "x" * 200).split())
    assert message.endswith(folded[:120])
    assert info.value.body == PAGE + "x" * 200


async def test_an_empty_body_is_refused_with_an_empty_body(tmp_path: Path) -> None:
    clock = VirtualClock()
    service = scripted(media(b""))
    async with kolbo(service, clock, max_retries=0) as client:
        with pytest.raises(k.APIResponseValidationError) as info:
            await client.generations.attach("gen1").download(tmp_path / "v.mp4")
    assert info.value.body == b""
    assert str(info.value).endswith("with an empty body, not the media")
    assert "SECRET" not in str(info.value)


# -- result URLs that are never fetched ----------------------------------------------------------


LONG = "x" * 100


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "ftp://cdn-a.test/one.mp4?token=SECRET#part",
            "The result URL 'ftp://cdn-a.test/one.mp4' is not an http(s) URL; not fetched",
        ),
        (
            f"ftp://cdn-a.test/{LONG}.mp4?token=SECRET",
            f"The result URL {f'ftp://cdn-a.test/{LONG}'[:80]!r} is not an http(s) URL; "
            "not fetched",
        ),
        (
            f"https://[::1/{LONG}",
            f"The result URL {f'https://[::1/{LONG}'[:80]!r} is not a valid URL; "
            "not fetched",
        ),
    ],
)
async def test_a_result_url_that_cannot_be_fetched_is_named_without_its_query(
    tmp_path: Path, url: str, message: str
) -> None:
    clock = VirtualClock()
    service = scripted(url=url)
    async with kolbo(service, clock) as client:
        with pytest.raises(k.KolboError) as info:
            await client.generations.attach("gen1").download(tmp_path / "v.mp4")
    assert str(info.value) == message
    assert service.cdn == []


# -- a cooldown that outlasts the deadline -------------------------------------------------------


async def test_a_cdn_cooldown_reaching_the_deadline_ends_the_download_at_once(
    tmp_path: Path,
) -> None:
    """A first download's 429 holds the host for 20 s; a second download with 20 s left does
    not wait it out (nor ask the CDN): its deadline passes at once."""
    clock = VirtualClock()
    service = scripted(httpx.Response(429, text="slow down", headers={"retry-after": "20"}))
    async with kolbo(service, clock, max_retries=0) as client:
        with pytest.raises(k.RateLimitError):
            await client.generations.attach("gen1").download(tmp_path / "one.mp4", timeout=None)
        with pytest.raises(k.GenerationTimeoutError):
            await client.generations.attach("gen1").download(tmp_path / "two.mp4", timeout=20)
    assert clock.now() == 0.0
    assert len(service.cdn) == 1
    assert list(tmp_path.iterdir()) == []


# -- what a finished download logs, what a broken one says -------------------------------------


async def test_a_finished_download_is_logged_without_the_urls_query_or_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = VirtualClock()
    service = scripted(url="https://user:pw@cdn-a.test/one.mp4?token=SECRET")
    caplog.set_level(logging.DEBUG, logger="kolbo_async")
    target = tmp_path / "v.mp4"
    async with kolbo(service, clock) as client:
        await client.generations.attach("gen1").download(target)
    messages = [record.getMessage() for record in caplog.records]
    assert f"downloaded https://cdn-a.test/one.mp4 to {target}" in messages


async def test_a_cdn_that_cannot_be_reached_is_named_without_the_urls_query(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused (test)", request=request)

    service = Service(refuse)
    async with kolbo(service, clock, max_retries=0) as client:
        with pytest.raises(k.APIConnectionError) as info:
            await client.generations.attach("gen1").download(tmp_path / "v.mp4")
    assert str(info.value).startswith("Download of https://cdn-a.test/one.mp4 failed: ")
    assert "SECRET" not in str(info.value)
    assert info.value.request is not None
    assert info.value.request.url.host == "cdn-a.test"


async def test_cdn_requests_carry_the_clients_timeout(tmp_path: Path) -> None:
    clock = VirtualClock()
    service = scripted()
    async with kolbo(service, clock, timeout=httpx.Timeout(7.0)) as client:
        await client.generations.attach("gen1").download(tmp_path / "v.mp4")
    assert service.cdn[0].extensions["timeout"]["read"] == 7.0


# On trio, httpx's abandoned body iterators reach the GC here (a ResourceWarning): asyncio only.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_encoding_that_breaks_mid_body_is_named(tmp_path: Path) -> None:
    clock = VirtualClock()
    broken = httpx.Response(
        200,
        stream=OneChunk(b"\x1f\x8b this is not gzip at all"),
        headers={"content-type": "video/mp4", "content-encoding": "gzip"},
    )
    service = scripted(broken)
    async with kolbo(service, clock, max_retries=0) as client:
        with pytest.raises(k.APIResponseValidationError) as info:
            await client.generations.attach("gen1").download(tmp_path / "v.mp4")
    assert "(Content-Encoding 'gzip')" in str(info.value)
    assert list(tmp_path.iterdir()) == []


# -- the quoted page -----------------------------------------------------------------------------


async def test_a_long_page_sniffed_in_a_media_answer_quotes_its_first_bytes(
    tmp_path: Path,
) -> None:
    """Only the sniffed head (512 bytes) is kept as the error's body; the message quotes its
    first 120 characters, whitespace folded, and names the URL without its query."""
    clock = VirtualClock()
    page = ("<!doctype html><html><body>" + "word " * 300).encode() + b"\xff"
    service = scripted(media(page))
    async with kolbo(service, clock) as client:
        with pytest.raises(k.APIResponseValidationError) as info:
            await client.generations.attach("gen1").download(tmp_path / "v.mp4")
    head = page[:512].decode()
    assert info.value.body == head
    message = str(info.value)
    assert message.endswith(" ".join(head.split())[:120])
    assert "https://cdn-a.test/one.mp4 " in message
    assert "SECRET" not in message


async def test_a_small_html_page_of_broken_utf8_is_quoted(tmp_path: Path) -> None:
    clock = VirtualClock()
    page = b"<html><body>Access denied \xff</body></html>"
    answer = httpx.Response(200, content=page, headers={"content-type": "text/html"})
    async with kolbo(scripted(answer), clock) as client:
        with pytest.raises(k.APIResponseValidationError) as info:
            await client.generations.attach("gen1").download(tmp_path / "v.mp4")
    assert str(info.value).endswith("not the media: <html><body>Access denied \ufffd</body></html>")


@pytest.mark.parametrize(("size", "quoted"), [(64 * 1024, True), (64 * 1024 + 1, False)])
async def test_an_html_page_is_quoted_only_up_to_64_kib(
    tmp_path: Path, size: int, quoted: bool
) -> None:
    clock = VirtualClock()
    page = b"<html>" + b"a" * (size - 6)
    answer = httpx.Response(200, content=page, headers={"content-type": "text/html"})
    async with kolbo(scripted(answer), clock) as client:
        with pytest.raises(k.APIResponseValidationError) as info:
            await client.generations.attach("gen1").download(tmp_path / "v.mp4")
    assert str(info.value).endswith("not the media: " + ("<html>" + "a" * 114 if quoted else ""))


async def test_an_html_page_of_unknown_size_is_not_quoted(tmp_path: Path) -> None:
    clock = VirtualClock()
    answer = httpx.Response(
        200,
        stream=OneChunk(b"<html><body>Access denied</body></html>"),
        headers={"content-type": "text/html"},
    )
    async with kolbo(scripted(answer), clock) as client:
        with pytest.raises(k.APIResponseValidationError) as info:
            await client.generations.attach("gen1").download(tmp_path / "v.mp4")
    assert str(info.value).endswith("not the media: ")
