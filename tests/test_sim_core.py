"""The simulator's core with no HTTP at all: plain requests in, plain answers out."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from kolbo_async.testing import SimRequest, Simulator, VirtualClock

KEY = "kolbo_live_" + "a" * 40


def call(
    sim: Simulator,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = KEY,
    query: dict[str, str] | None = None,
    host: str = "api",
) -> tuple[int, Any, dict[str, str]]:
    headers = {"x-api-key": key} if key else {}
    answer = sim.handle(
        SimRequest(
            method,
            path,
            query=query or {},
            headers=headers,
            body=json.dumps(body).encode() if body is not None else b"",
            host=host,
        )
    )
    data: Any = answer.body
    if answer.headers.get("content-type") == "application/json":
        data = json.loads(answer.body)
    return answer.status, data, answer.headers


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(clock: VirtualClock) -> Simulator:
    return Simulator(clock=clock)


def submit(sim: Simulator, **body: Any) -> dict[str, Any]:
    status, data, _ = call(sim, "POST", "/api/v1/generate/video", {"prompt": "a cat", **body})
    assert status == 200, data
    return dict(data)


class TestLifecycle:
    def test_pending_processing_completed(self, sim: Simulator, clock: VirtualClock) -> None:
        """A generation goes pending -> processing (rising progress) -> completed."""
        gen = submit(sim)
        assert gen["poll_url"] == f"/api/v1/generate/{gen['generation_id']}/status"
        assert gen["poll_interval_hint"] == 8
        path = gen["poll_url"]
        seen = []
        for _ in range(20):
            _, body, _ = call(sim, "GET", path)
            seen.append((body["state"], body["progress"]))
            clock.advance(8)
        assert seen[0] == ("pending", 0)
        states = [s for s, _ in seen]
        assert "processing" in states
        assert states[-1] == "completed"
        progress = [p for _, p in seen]
        assert progress == sorted(progress)
        _, final, _ = call(sim, "GET", path)
        assert final["progress"] == 100
        assert final["result"]["urls"][0].startswith(sim.cdn_url)
        assert final["credits_used"] == 35

    def test_ids_look_like_object_ids(self, sim: Simulator) -> None:
        """Generation ids are 24 lowercase hex characters."""
        gen_id = submit(sim)["generation_id"]
        assert len(gen_id) == 24
        int(gen_id, 16)

    def test_failure_refunds(self, sim: Simulator, clock: VirtualClock) -> None:
        """A failed generation carries error + failure and gives the credits back."""
        sim.plan(outcome="failed")
        before = sim.credits()
        gen = submit(sim)
        assert sim.credits() == before - 35
        clock.advance(1000)
        _, body, _ = call(sim, "GET", gen["poll_url"])
        assert body["state"] == "failed"
        assert body["failure"]["category"] == "content_policy"
        assert isinstance(body["error"], str)
        assert sim.credits() == before

    def test_prompt_markers(self, sim: Simulator, clock: VirtualClock) -> None:
        """[fail] and [filtered] in a prompt script the outcome (for the sandbox)."""
        failed = submit(sim, prompt="x [fail]")
        filtered = submit(sim, prompt="x [filtered]")
        clock.advance(1000)
        assert call(sim, "GET", failed["poll_url"])[1]["state"] == "failed"
        body = call(sim, "GET", filtered["poll_url"])[1]
        assert (body["state"], body["result"]["urls"]) == ("completed", [])

    def test_cancel_then_409(self, sim: Simulator, clock: VirtualClock) -> None:
        """Cancel refunds a running generation; cancelling a finished one is 409."""
        before = sim.credits()
        gen = submit(sim)
        cancel = f"/api/v1/generate/{gen['generation_id']}/cancel"
        status, body, _ = call(sim, "POST", cancel, {})
        assert (status, body["state"], body["credits_refunded"]) == (200, "cancelled", 35)
        assert sim.credits() == before
        status, body, _ = call(sim, "POST", cancel, {})
        assert status == 409
        assert body["state"] == "cancelled"
        other = submit(sim)
        clock.advance(1000)
        assert call(sim, "POST", f"/api/v1/generate/{other['generation_id']}/cancel", {})[0] == 409

    def test_unknown_or_foreign_id_is_404(self, sim: Simulator) -> None:
        """An id that does not exist, or belongs to another key, is not found."""
        gen = submit(sim)
        assert call(sim, "GET", "/api/v1/generate/" + "0" * 24 + "/status")[0] == 404
        other = "kolbo_live_" + "b" * 40
        assert call(sim, "GET", gen["poll_url"], key=other)[0] == 404


class TestValidationAndBilling:
    @pytest.mark.parametrize(
        ("body", "code"),
        [
            ({}, "MISSING_FIELDS"),
            ({"prompt": "  "}, "MISSING_FIELDS"),
            ({"prompt": "a", "model": "nope"}, "MODEL_NOT_FOUND"),
            ({"prompt": "a", "model": "fal-ai/kling-video/v3/pro/image-to-video"}, "WRONG_MODEL_TYPE"),
        ],
    )
    def test_rejections(self, sim: Simulator, body: dict[str, Any], code: str) -> None:
        """Bad submissions are 400 with the documented envelope and code."""
        status, data, _ = call(sim, "POST", "/api/v1/generate/video", body)
        assert status == 400
        assert data["success"] is False
        assert data["code"] == code
        assert not sim.generations

    def test_price_uses_the_catalog(self, sim: Simulator) -> None:
        """credit x duration x resolution multiplier, snapped to supported durations."""
        gen = submit(sim, model="fal-ai/kling-video/v3/pro/text-to-video", duration=10,
                     resolution="1080p")
        assert gen["credits_charged"] == 18 * 10 * 1.25
        snapped = submit(sim, model="veo3", duration=5)
        assert snapped["credits_charged"] in (40 * 4, 40 * 6)

    def test_insufficient_credits_is_400_with_code(self, clock: VirtualClock) -> None:
        """Not enough credits: 400 INSUFFICIENT_CREDITS, nothing created."""
        sim = Simulator(clock=clock, credits=20)
        status, body, _ = call(sim, "POST", "/api/v1/generate/video", {"prompt": "a"})
        assert (status, body["code"]) == (400, "INSUFFICIENT_CREDITS")
        assert not sim.generations

    def test_credits_endpoint(self, sim: Simulator) -> None:
        """The balance is reported in the documented shape."""
        submit(sim)
        _, body, _ = call(sim, "GET", "/api/v1/account/credits")
        assert set(body["credits"]) == {"total", "plan_credits", "credit_pack", "redemption"}
        assert body["credits"]["total"] == 10_000 - 35

    def test_auth(self, clock: VirtualClock) -> None:
        """Any kolbo_live_ key by default; exactly the configured one when required."""
        sim = Simulator(clock=clock)
        assert call(sim, "GET", "/api/v1/models", key=None)[0] == 401
        assert call(sim, "GET", "/api/v1/models", key="sk-123")[0] == 401
        assert call(sim, "GET", "/api/v1/models", key="kolbo_live_YOUR_API_KEY")[0] == 200
        strict = Simulator(clock=clock, api_key=KEY)
        status, body, _ = call(strict, "GET", "/api/v1/models", key="kolbo_live_other")
        assert (status, body["code"]) == (401, "INVALID_API_KEY")


class TestCatalog:
    @pytest.mark.parametrize(
        ("wanted", "raw"),
        [("video", "text_to_video"), ("video_from_image", "img_to_video"),
         ("text_to_video", "text_to_video"), ("img_to_video", "img_to_video")],
    )
    def test_type_filter(self, sim: Simulator, wanted: str, raw: str) -> None:
        """SDK aliases and raw types both filter the catalog."""
        _, body, _ = call(sim, "GET", "/api/v1/models", query={"type": wanted})
        assert body["count"] == len(body["models"]) > 0
        assert all(raw in m["types"] for m in body["models"])

    def test_no_type_lists_everything(self, sim: Simulator) -> None:
        """Without a type, every model is listed."""
        _, every, _ = call(sim, "GET", "/api/v1/models")
        _, video, _ = call(sim, "GET", "/api/v1/models", query={"type": "video"})
        assert every["count"] > video["count"]
        assert call(sim, "GET", "/api/v1/models", query={"type": "music"})[1]["count"] == 0


class TestRateLimits:
    def test_fixed_windows(self, clock: VirtualClock) -> None:
        """10 generation POSTs per minute window; the 11th is 429 with the documented body."""
        sim = Simulator(clock=clock, rate_limits=True)
        for _ in range(10):
            submit(sim)
        status, body, headers = call(sim, "POST", "/api/v1/generate/video", {"prompt": "a"})
        assert status == 429
        assert body == {"status": False, "message": "Too many requests, please try again later"}
        assert 0 < float(headers["retry-after"]) <= 60
        assert len(sim.generations) == 10  # rejected before any charge
        clock.advance(60)
        submit(sim)

    def test_retry_after_scales_with_speed(self) -> None:
        """With a fast clock Retry-After is in real seconds."""
        sim = Simulator(speed=60.0, rate_limits=True, generations_per_minute=1)
        submit(sim)
        status, _, headers = call(sim, "POST", "/api/v1/generate/video", {"prompt": "a"})
        assert status == 429
        assert float(headers["retry-after"]) <= 1.0

    def test_off_by_default_in_process(self, sim: Simulator) -> None:
        """transport()/mock() users get no rate limits unless asked."""
        sim.transport()
        for _ in range(15):
            submit(sim)


class TestFaults:
    def test_injected_faults_are_consumed_in_order(self, sim: Simulator) -> None:
        """inject() scripts the next answers of a route, then it behaves again."""
        sim.inject("models", "503")
        sim.inject("models", "html_502")
        assert call(sim, "GET", "/api/v1/models")[0] == 503
        status, body, _ = call(sim, "GET", "/api/v1/models")
        assert status == 502
        assert b"<html>" in body
        assert call(sim, "GET", "/api/v1/models")[0] == 200

    def test_drop_after_creates_drop_before_does_not(self, sim: Simulator) -> None:
        """drop_after processes the POST; drop_before never does."""
        sim.inject("generate", "drop_before")
        answer = sim.handle(SimRequest("POST", "/api/v1/generate/video",
                                       headers={"x-api-key": KEY}, body=b'{"prompt":"a"}'))
        assert answer.fault == "drop_before"
        assert not sim.generations
        sim.inject("generate", "drop_after")
        answer = sim.handle(SimRequest("POST", "/api/v1/generate/video",
                                       headers={"x-api-key": KEY}, body=b'{"prompt":"a"}'))
        assert answer.fault == "drop_after"
        assert len(sim.generations) == 1

    def test_random_rates_are_seeded(self, clock: VirtualClock) -> None:
        """The same seed gives the same faults."""
        def run() -> list[int]:
            sim = Simulator(clock=clock, seed=7)
            sim.faults.status_error_rate = 0.5
            gen = submit(sim)
            return [call(sim, "GET", gen["poll_url"])[0] for _ in range(20)]

        first = run()
        assert first == run()
        assert 200 in first
        assert any(code >= 500 for code in first)

    def test_requests_are_recorded(self, sim: Simulator) -> None:
        """Every request is recorded with its headers, body and answer status."""
        submit(sim, duration=5)
        record = sim.requests[-1]
        assert (record.method, record.status, record.json["duration"]) == ("POST", 200, 5)
        assert record.headers["x-api-key"] == KEY


class TestCdn:
    def test_ranges(self, sim: Simulator, clock: VirtualClock) -> None:
        """The CDN serves the video whole or by Range, with no key needed."""
        gen = submit(sim)
        clock.advance(1000)
        call(sim, "GET", gen["poll_url"])
        path = f"/videos/{gen['generation_id']}.mp4"
        whole = sim.handle(SimRequest("GET", path, host="cdn"))
        data = b"".join(sim.video_chunks(whole))
        assert whole.status == 200
        assert data[4:8] == b"ftyp"
        part = sim.handle(SimRequest("GET", path, headers={"range": "bytes=4-7"}, host="cdn"))
        assert part.status == 206
        assert b"".join(sim.video_chunks(part)) == b"ftyp"
        assert part.headers["content-range"] == f"bytes 4-7/{len(data)}"


@pytest.mark.anyio
class TestVirtualClock:
    async def test_sleepers_wake_in_deadline_order(self) -> None:
        """Concurrent sleepers wake in order of their deadlines, at those times."""
        clock = VirtualClock()
        woke: list[tuple[str, float]] = []

        async def nap(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append((name, clock.now()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(nap, "late", 30)
            tg.start_soon(nap, "early", 10)
            tg.start_soon(nap, "middle", 20)
        assert woke == [("early", 10), ("middle", 20), ("late", 30)]

    async def test_cancelled_sleeper_does_not_block_others(self) -> None:
        """A sleeper cancelled while first in line hands over to the next."""
        clock = VirtualClock()
        done = []

        async def nap() -> None:
            await clock.sleep(50)
            done.append(clock.now())

        async with anyio.create_task_group() as tg:
            tg.start_soon(nap)
            with anyio.CancelScope() as scope:
                scope.cancel()
                await clock.sleep(5)
        assert done == [50]
