"""Each simulator adapter once over its real path: respx, and a real loopback server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async import AsyncKolbo
from kolbo_async.testing import Simulator

KEY = "kolbo_live_YOUR_API_KEY"
DOCS = Path(__file__).resolve().parent / "kolbo_docs_python_example.py"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Simulator, str]]:
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
        assert any(line.startswith("Video URL: http://") for line in printed)

    def test_cdn_is_another_origin_with_ranges(self, served: tuple[Simulator, str]) -> None:
        """The result lives on another origin that serves Range requests, keyless."""
        sim, base_url = served
        with httpx.Client() as http:
            gen_id = http.post(
                f"{base_url}/api/v1/generate/video", headers={"X-API-Key": KEY},
                json={"prompt": "a cat"},
            ).json()["generation_id"]
            sim.plan()  # nothing queued for this one; just exercise the API
            for _ in range(200):
                status = http.get(
                    f"{base_url}/api/v1/generate/{gen_id}/status", headers={"X-API-Key": KEY}
                ).json()
                if status["state"] == "completed":
                    break
                import time

                time.sleep(0.02)
            url = status["result"]["urls"][0]
            assert not url.startswith(base_url)
            whole = http.get(url)
            part = http.get(url, headers={"Range": "bytes=10-19"})
        assert whole.status_code == 200
        assert part.status_code == 206
        assert part.content == whole.content[10:20]

    def test_dropped_connection_and_429(self, served: tuple[Simulator, str]) -> None:
        """Faults cross the real socket: a reset connection, a 429 with Retry-After."""
        sim, base_url = served
        sim.inject("credits", "drop_after")
        sim.inject("credits", "429")
        with httpx.Client() as http:
            with pytest.raises(httpx.TransportError):
                http.get(f"{base_url}/api/v1/account/credits", headers={"X-API-Key": KEY})
            limited = http.get(f"{base_url}/api/v1/account/credits", headers={"X-API-Key": KEY})
        assert limited.status_code == 429
        assert limited.json() == {"status": False,
                                  "message": "Too many requests, please try again later"}
        assert float(limited.headers["retry-after"]) > 0

    @pytest.mark.anyio
    async def test_sdk_over_loopback(self, served: tuple[Simulator, str], tmp_path: Path) -> None:
        """The SDK over real HTTP: generate, wait, download; the key never reaches the CDN."""
        sim, base_url = served
        async with AsyncKolbo(KEY, base_url=base_url, rate_limits=None) as client:
            gen = await client.videos.generate("a cat")
            path = await gen.download(tmp_path / "v.mp4")
        assert path.read_bytes()[4:8] == b"ftyp"
        cdn = [r for r in sim.requests if r.host == "cdn"]
        assert cdn
        assert all("x-api-key" not in r.headers for r in cdn)


class TestRespx:
    @pytest.mark.anyio
    async def test_mock_routes_a_users_own_client(self) -> None:
        """sim.mock(router) serves code that builds its own httpx clients."""
        sim = Simulator(speed=1000.0)
        with respx.mock(assert_all_called=False) as router:
            sim.mock(router)
            async with AsyncKolbo(KEY, rate_limits=None) as client:
                models = await client.models.list()
                assert models
                sim.inject("status", "503")
                gen = await client.videos.generate("a cat")
                assert (await gen.status()).generation_id == gen.id
            polls = [r.status for r in sim.requests if r.path.endswith("/status")]
            assert polls == [503, 200]
            assert router.calls.call_count >= 3

    @pytest.mark.anyio
    async def test_mock_key_checks(self) -> None:
        """A required key is enforced through respx too."""
        sim = Simulator(api_key="kolbo_live_right")
        with respx.mock(assert_all_called=False) as router:
            sim.mock(router)
            async with AsyncKolbo("kolbo_live_wrong", rate_limits=None) as client:
                with pytest.raises(k.AuthenticationError):
                    await client.account.credits()


