"""`Simulator.transport()`: the simulator in-process behind httpx, faults as a socket shows them."""

from __future__ import annotations

import httpx
import pytest

from kolbo_async.testing import SimRequest, SimResponse, Simulator, VirtualClock
from kolbo_async.testing._transport import SimTransport

KEY = "kolbo_live_YOUR_API_KEY"
AUTH = {"X-API-Key": KEY}


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
            states: list[str] = []
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


class _Stub:
    """A service that is no `Simulator`: the adapters need only the face `SimService`."""

    def __init__(self) -> None:
        self.base_url = "https://api.test"
        self.cdn_url = "https://cdn.test"
        self.clock = VirtualClock()
        self.seen: list[SimRequest] = []

    def handle(self, request: SimRequest) -> SimResponse:
        self.seen.append(request)
        return SimResponse(201, {"content-type": "text/plain"}, b"made")


class TestFace:
    pytestmark = pytest.mark.anyio

    async def test_any_service_will_do(self) -> None:
        """SimTransport serves whatever has handle(), its origins and a clock."""
        stub = _Stub()
        async with httpx.AsyncClient(transport=SimTransport(stub)) as http:
            api = await http.post("https://api.test/x?a=1", content=b"hi")
            cdn = await http.get("https://cdn.test/videos/1.mp4")
        assert (api.status_code, api.content, cdn.status_code) == (201, b"made", 201)
        assert [(r.host, r.path, r.query, r.body) for r in stub.seen] == [
            ("api", "/x", {"a": "1"}, b"hi"), ("cdn", "/videos/1.mp4", {}, b"")
        ]
