"""`Simulator.serve()`: the simulator over real HTTP on loopback (uvicorn in a thread)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kolbo_async.testing import Simulator

KEY = "kolbo_live_YOUR_API_KEY"
AUTH = {"X-API-Key": KEY}
DOCS = Path(__file__).resolve().parent / "kolbo_docs_python_example.py"


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

    def test_origins_come_back_after_serving(self) -> None:
        """serve() moves base_url and cdn_url to loopback only while it serves."""
        sim = Simulator(speed=1000.0)
        with sim.serve() as base_url:
            assert (sim.base_url, sim.cdn_url[:17]) == (base_url, "http://127.0.0.1:")
        assert (sim.base_url, sim.cdn_url) == ("https://api.kolbo.ai", "https://cdn.kolbo.test")
