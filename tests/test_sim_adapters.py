"""Each simulator adapter once over its real path, with plain httpx (no SDK)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async.testing import Simulator, VirtualClock

KEY = "kolbo_live_YOUR_API_KEY"
AUTH = {"X-API-Key": KEY}
DOCS = Path(__file__).resolve().parent / "kolbo_docs_python_example.py"


class TestTransport:
    pytestmark = pytest.mark.anyio

    async def test_generate_poll_download(self) -> None:
        """A whole generation in-process: submit, poll on virtual time, ranged download."""
        clock = VirtualClock()
        sim = Simulator(clock=clock)
        async with httpx.AsyncClient(transport=sim.transport()) as http:
            posted = await http.post(f"{sim.base_url}/api/v1/generate/video", headers=AUTH,
                                     json={"prompt": "a cat"})
            assert posted.json()["credits_charged"] == 35
            status_url = sim.base_url + posted.json()["poll_url"]
            states = []
            while not states or states[-1] != "completed":
                states.append((await http.get(status_url, headers=AUTH)).json()["state"])
                await clock.sleep(posted.json()["poll_interval_hint"])
            assert states[0] == "pending"
            assert "processing" in states
            url = (await http.get(status_url, headers=AUTH)).json()["result"]["urls"][0]
            assert url.startswith(sim.cdn_url)
            whole = await http.get(url)
            part = await http.get(url, headers={"Range": "bytes=4-7"})
        assert (whole.status_code, whole.headers["accept-ranges"]) == (200, "bytes")
        assert int(whole.headers["content-length"]) == len(whole.content)
        assert (part.status_code, part.content) == (206, b"ftyp")
        cdn = [r for r in sim.requests if r.host == "cdn"]
        assert len(cdn) == 2
        assert all("x-api-key" not in r.headers for r in cdn)

    async def test_faults_raise_what_a_socket_would(self) -> None:
        """drop_before, drop_after and slow map to httpx's own exceptions."""
        clock = VirtualClock()
        sim = Simulator(clock=clock)
        sim.faults.slow_seconds = 30
        url = f"{sim.base_url}/api/v1/account/credits"
        async with httpx.AsyncClient(transport=sim.transport(), timeout=10) as http:
            sim.inject("credits", "drop_before")
            with pytest.raises(httpx.ConnectError):
                await http.get(url, headers=AUTH)
            sim.inject("credits", "drop_after")
            with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
                await http.get(url, headers=AUTH)
            sim.inject("credits", "slow")
            with pytest.raises(httpx.ReadTimeout):
                await http.get(url, headers=AUTH)
            assert clock.now() == 10  # waited the read timeout, on the virtual clock
            sim.inject("credits", "slow")
            answered = await http.get(url, headers=AUTH, timeout=60)
            assert answered.status_code == 200
            assert clock.now() == 40
        assert [r.fault for r in sim.requests] == ["drop_before", "drop_after", "slow", "slow"]

    async def test_drop_after_create_still_charges(self) -> None:
        """A POST whose answer is lost has still created and charged a generation."""
        sim = Simulator(clock=VirtualClock())
        sim.faults.generate_drop_after_create_rate = 1.0
        async with httpx.AsyncClient(transport=sim.transport()) as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.post(f"{sim.base_url}/api/v1/generate/video", headers=AUTH,
                                json={"prompt": "a"})
        assert len(sim.generations) == 1
        assert sim.credits() == 10_000 - 35


class TestRespx:
    pytestmark = pytest.mark.anyio

    async def test_mock_serves_api_and_cdn(self) -> None:
        """sim.mock(router) serves clients the caller builds, faults included."""
        sim = Simulator(clock=VirtualClock())
        with respx.mock(assert_all_called=False) as router:
            assert sim.mock(router) is router
            async with httpx.AsyncClient() as http:
                models = await http.get(f"{sim.base_url}/api/v1/models",
                                        params={"type": "video"}, headers=AUTH)
                assert models.json()["count"] == len(models.json()["models"]) > 0
                gen = (await http.post(f"{sim.base_url}/api/v1/generate/video", headers=AUTH,
                                       json={"prompt": "a"})).json()
                sim.inject("status", "503")
                status_url = sim.base_url + gen["poll_url"]
                assert (await http.get(status_url, headers=AUTH)).status_code == 503
                sim.complete(gen["generation_id"])
                done = (await http.get(status_url, headers=AUTH)).json()
                part = await http.get(done["result"]["urls"][0], headers={"Range": "bytes=0-7"})
                assert part.status_code == 206
                sim.inject("models", "drop_before")
                with pytest.raises(httpx.ConnectError):
                    await http.get(f"{sim.base_url}/api/v1/models", headers=AUTH)
            assert router.calls.call_count == 6

    async def test_mock_serves_the_sdk_end_to_end_download_included(
        self, tmp_path: Path
    ) -> None:
        """An SDK client the caller builds, behind sim.mock(router), downloads the whole file
        (a streamed CDN answer once came back empty through respx)."""
        sim = Simulator(clock=VirtualClock())
        with respx.mock(assert_all_called=False) as router:
            sim.mock(router)
            async with k.AsyncKolbo("kolbo_live_x", base_url=sim.base_url,
                                    _clock=sim.clock) as client:
                gen = await client.videos.generate("a cat")
                path = await gen.download(tmp_path / "cat.mp4")
        assert path.read_bytes()[4:8] == b"ftyp"
        cdn = [r for r in sim.requests if r.path.endswith(".mp4")]
        assert path.stat().st_size > 1000 and cdn and all(r.status == 200 for r in cdn)

    async def test_mock_enforces_the_key(self) -> None:
        """A required key is enforced through respx too."""
        sim = Simulator(api_key="kolbo_live_right")
        with respx.mock(assert_all_called=False) as router:
            sim.mock(router)
            async with httpx.AsyncClient() as http:
                wrong = await http.get(f"{sim.base_url}/api/v1/account/credits",
                                       headers={"X-API-Key": "kolbo_live_wrong"})
        assert (wrong.status_code, wrong.json()["code"]) == (401, "INVALID_API_KEY")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Simulator, str]]:
    """One real loopback server for the module (starting uvicorn costs ~50 ms)."""
    sim = Simulator(speed=200.0, processing_seconds=30.0)
    with sim.serve() as base_url:
        yield sim, base_url


class TestServe:
    def test_docs_python_example_runs_unmodified(self, served: tuple[Simulator, str]) -> None:
        """Kolbo's own `requests` example works with only scheme, host and port changed."""
        _, base_url = served
        source = DOCS.read_text().replace("https://api.kolbo.ai", base_url)
        printed: list[str] = []
        namespace = {"print": lambda *a: printed.append(" ".join(map(str, a)))}
        exec(compile(source, str(DOCS), "exec"), namespace)
        assert printed[0].startswith("Generation ID:")
        assert any(line.startswith("State: processing") for line in printed)
        assert printed[-1].startswith("Video URL: http://")

    def test_cdn_is_another_origin_with_ranges(self, served: tuple[Simulator, str]) -> None:
        """The result lives on another origin that serves Range requests, keyless."""
        sim, base_url = served
        assert sim.base_url == base_url
        with httpx.Client() as http:
            gen = http.post(f"{base_url}/api/v1/generate/video", headers=AUTH,
                            json={"prompt": "a cat"}).json()
            assert 0 < gen["poll_interval_hint"] < 1  # 8 simulated seconds at speed 200
            sim.complete(gen["generation_id"])
            status = http.get(base_url + gen["poll_url"], headers=AUTH).json()
            url = status["result"]["urls"][0]
            assert url.startswith(sim.cdn_url)
            assert not url.startswith(base_url)
            whole = http.get(url)
            part = http.get(url, headers={"Range": "bytes=10-19"})
            head = http.head(url)
        assert whole.status_code == 200
        assert whole.content[4:8] == b"ftyp"
        assert (part.status_code, part.content) == (206, whole.content[10:20])
        assert head.headers["content-length"] == str(len(whole.content))
        cdn = [r for r in sim.requests if r.host == "cdn"]
        assert cdn
        assert all("x-api-key" not in r.headers for r in cdn)

    def test_dropped_connection_and_429(self, served: tuple[Simulator, str]) -> None:
        """Faults cross the real socket: a reset connection, a 429 with Retry-After."""
        sim, base_url = served
        sim.inject("credits", "drop_after")
        sim.inject("credits", "drop_before")
        sim.inject("credits", "429")
        sim.inject("credits", "html_502")
        url = f"{base_url}/api/v1/account/credits"
        with httpx.Client() as http:
            for _ in range(2):
                with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                    http.get(url, headers=AUTH)
            limited = http.get(url, headers=AUTH)
            proxy = http.get(url, headers=AUTH)
            fine = http.get(url, headers=AUTH)
        assert limited.status_code == 429
        assert limited.json() == {"status": False,
                                  "message": "Too many requests, please try again later"}
        assert 0 < float(limited.headers["retry-after"]) <= 60 / 200
        assert (proxy.status_code, proxy.headers["content-type"]) == (502, "text/html")
        assert fine.json()["success"] is True

    def test_rate_limits_are_on_when_served(self, served: tuple[Simulator, str]) -> None:
        """serve() turns Kolbo's rate limits on unless told otherwise."""
        _, base_url = served
        limited = 0
        with httpx.Client() as http:
            for _ in range(25):  # two windows at most hold 20
                answer = http.post(f"{base_url}/api/v1/generate/video/from-image", headers=AUTH,
                                   json={"image_url": "https://x.test/a.jpg"})
                limited += answer.status_code == 429
        assert limited >= 5  # 10 per 60 simulated seconds (0.3 s real at speed 200)

    def test_large_video_streams(self) -> None:
        """A large video_size is served in chunks over a real socket, with ranges."""
        sim = Simulator(speed=1000.0, video_size=3_000_000)
        with sim.serve() as base_url, httpx.Client() as http:
            gen_id = http.post(f"{base_url}/api/v1/generate/video", headers=AUTH,
                               json={"prompt": "a"}).json()["generation_id"]
            sim.complete(gen_id)
            url = f"{sim.cdn_url}/videos/{gen_id}.mp4"
            with http.stream("GET", url) as response:
                size = sum(len(chunk) for chunk in response.iter_bytes())
            tail = http.get(url, headers={"Range": "bytes=-5"})
        assert size == 3_000_000
        assert tail.headers["content-range"] == "bytes 2999995-2999999/3000000"

    def test_missing_uvicorn_says_how_to_install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without uvicorn, serve() names the extra to install."""
        monkeypatch.setitem(sys.modules, "uvicorn", None)
        with pytest.raises(ImportError, match=r"kolbo-async\[sim\]"), Simulator().serve():
            pass
