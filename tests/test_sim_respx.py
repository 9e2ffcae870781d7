"""`Simulator.mock(router)`: the simulator behind respx, for clients the caller builds."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async.testing import Simulator, VirtualClock

KEY = "kolbo_live_YOUR_API_KEY"
AUTH = {"X-API-Key": KEY}


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
