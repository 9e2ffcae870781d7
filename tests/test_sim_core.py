"""The simulator's core with no HTTP at all: plain requests in, plain answers out."""

from __future__ import annotations

import json
from typing import Any

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


class TestScripting:
    def test_complete_and_fail_helpers(self, sim: Simulator) -> None:
        """complete() and fail() end a running generation now; fail() refunds it."""
        before = sim.credits()
        done, bad = submit(sim), submit(sim)
        sim.complete(done["generation_id"])
        sim.fail(bad["generation_id"], {"code": "PROVIDER_DOWN", "retryable": True})
        assert call(sim, "GET", done["poll_url"])[1]["progress"] == 100
        body = call(sim, "GET", bad["poll_url"])[1]
        assert body["state"] == "failed"
        assert (body["failure"]["code"], body["failure"]["retryable"]) == ("PROVIDER_DOWN", True)
        assert sim.credits() == before - 35
        with pytest.raises(ValueError, match="already completed"):
            sim.fail(done["generation_id"])

    def test_plan_sets_failure_and_time(self, sim: Simulator, clock: VirtualClock) -> None:
        """plan() scripts the next generation's outcome, failure and processing time."""
        sim.plan("failed", processing_seconds=10, failure={"category": "provider"})
        gen = submit(sim)
        clock.advance(3 + 10)
        body = call(sim, "GET", gen["poll_url"])[1]
        assert (body["state"], body["failure"]["category"]) == ("failed", "provider")
        assert sim.generations[gen["generation_id"]].request["prompt"] == "a cat"
        with pytest.raises(ValueError, match="outcome"):
            sim.plan("exploded")

    def test_failure_refunds_without_a_poll(self, sim: Simulator, clock: VirtualClock) -> None:
        """The balance reflects a failure as soon as it happens, polled or not."""
        sim.plan("failed")
        submit(sim)
        clock.advance(1000)
        assert call(sim, "GET", "/api/v1/account/credits")[1]["credits"]["total"] == 10_000

    def test_create_generation_without_http(self, sim: Simulator, clock: VirtualClock) -> None:
        """Pre-created generations cost nothing and are visible to their key only."""
        gen_id = sim.create_generation(key=KEY, processing_seconds=1, outcome="filtered")
        record = sim.generations[gen_id]
        assert (record.key, record.credits, record.state) == (KEY, 0, "pending")
        clock.advance(5)
        body = call(sim, "GET", f"/api/v1/generate/{gen_id}/status")[1]
        assert (body["state"], body["result"]["urls"]) == ("completed", [])
        assert not sim.requests[:-1]

    def test_balance_buckets_in_order(self, clock: VirtualClock) -> None:
        """Charges take plan credits, then packs, then redemptions; refunds put them back."""
        sim = Simulator(clock=clock, credits={"plan_credits": 20, "credit_pack": 10,
                                              "redemption": 100})
        gen = submit(sim)  # 35
        balance = call(sim, "GET", "/api/v1/account/credits")[1]["credits"]
        assert balance == {"total": 95, "plan_credits": 0, "credit_pack": 0, "redemption": 95}
        call(sim, "POST", f"/api/v1/generate/{gen['generation_id']}/cancel", {})
        balance = call(sim, "GET", "/api/v1/account/credits")[1]["credits"]
        assert balance == {"total": 130, "plan_credits": 20, "credit_pack": 10, "redemption": 100}


class TestMoreValidation:
    def test_from_image_needs_image_url(self, sim: Simulator) -> None:
        """Image to video requires image_url; prompt is optional."""
        path = "/api/v1/generate/video/from-image"
        assert call(sim, "POST", path, {"prompt": "zoom"})[1]["code"] == "MISSING_FIELDS"
        status, body, _ = call(sim, "POST", path, {"image_url": "https://x.test/a.jpg"})
        assert (status, body["type"], body["model"]) == (200, "video", "auto")

    def test_invalid_json_is_missing_fields(self, sim: Simulator) -> None:
        """A body that is not a JSON object is a 400 MISSING_FIELDS."""
        answer = sim.handle(SimRequest("POST", "/api/v1/generate/video",
                                       headers={"x-api-key": KEY}, body=b"{nope"))
        assert answer.status == 400
        assert json.loads(answer.body)["code"] == "MISSING_FIELDS"

    def test_visual_dna_limit_follows_the_model(self, sim: Simulator) -> None:
        """Three Visual DNA ids at most, unless the model allows more."""
        four = ["a", "b", "c", "d"]
        status, _, _ = call(sim, "POST", "/api/v1/generate/video",
                            {"prompt": "a", "visual_dna_ids": four})
        assert status == 400
        submit(sim, model="minimax-h3", visual_dna_ids=four)

    def test_unsupported_values_snap(self, sim: Simulator, clock: VirtualClock) -> None:
        """Unsupported durations and aspect ratios snap to the closest supported value."""
        gen = submit(sim, model="veo3", duration=7.5, aspect_ratio="21:9")
        sim.complete(gen["generation_id"])
        result = call(sim, "GET", gen["poll_url"])[1]["result"]
        assert (result["duration"], result["aspect_ratio"], result["model"]) == (8, "16:9", "veo3")
        assert gen["credits_charged"] == 40 * 8

    def test_sound_multiplier(self, sim: Simulator) -> None:
        """sound_enabled multiplies the price when the model has a sound multiplier."""
        gen = submit(sim, model="veo3", duration=4, sound_enabled=True)
        assert gen["credits_charged"] == 40 * 4 * 1.5

    def test_unknown_fields_are_ignored(self, sim: Simulator) -> None:
        """Fields the simulator does not know are accepted, as the real API does."""
        submit(sim, skip_color_palette=True, project_id="p1")


class TestMoreRateLimits:
    def test_ip_limit_counts_every_request(self, clock: VirtualClock) -> None:
        """The per-address limit counts all requests, generation POSTs included."""
        sim = Simulator(clock=clock, rate_limits=True, requests_per_minute=5)
        submit(sim)
        for _ in range(4):
            assert call(sim, "GET", "/api/v1/models")[0] == 200
        status, _, headers = call(sim, "GET", "/api/v1/models")
        assert (status, headers["retry-after"]) == (429, "60")

    def test_retry_after_is_a_decimal_on_a_fast_clock(self) -> None:
        """Retry-After is seconds until the window ends, divided by the speed."""
        sim = Simulator(clock=VirtualClock(start=30), rate_limits=True, generations_per_minute=0)
        assert call(sim, "POST", "/api/v1/generate/video", {"prompt": "a"})[2][
            "retry-after"] == "30"
        fast = Simulator(speed=1e9, rate_limits=True, generations_per_minute=0)
        header = call(fast, "POST", "/api/v1/generate/video", {"prompt": "a"})[2]["retry-after"]
        assert 0 < float(header) < 1e-6 or header == "0"


class TestMoreFaults:
    def test_refused_posts_create_nothing(self, sim: Simulator) -> None:
        """generate_refuse_rate refuses before reading: no generation, no charge."""
        sim.faults.generate_refuse_rate = 1.0
        answer = sim.handle(SimRequest("POST", "/api/v1/generate/video",
                                       headers={"x-api-key": KEY}, body=b'{"prompt":"a"}'))
        assert answer.fault == "drop_before"
        assert not sim.generations
        assert sim.credits() == 10_000

    def test_drop_after_create_charges(self, sim: Simulator) -> None:
        """generate_drop_after_create_rate creates and charges, then drops the answer."""
        sim.faults.generate_drop_after_create_rate = 1.0
        answer = sim.handle(SimRequest("POST", "/api/v1/generate/video",
                                       headers={"x-api-key": KEY}, body=b'{"prompt":"a"}'))
        assert answer.fault == "drop_after"
        assert len(sim.generations) == 1
        assert sim.credits() == 10_000 - 35

    def test_generate_429_rate(self, sim: Simulator) -> None:
        """generate_429_rate answers 429 with Retry-After and charges nothing."""
        sim.faults.generate_429_rate = 1.0
        status, body, headers = call(sim, "POST", "/api/v1/generate/video", {"prompt": "a"})
        assert (status, body["status"], "retry-after" in headers) == (429, False, True)
        assert not sim.generations

    def test_injected_kinds(self, sim: Simulator) -> None:
        """invalid_json, slow, insufficient_credits and 429 each do what they say."""
        sim.inject("credits", "invalid_json")
        broken = sim.handle(SimRequest("GET", "/api/v1/account/credits",
                                       headers={"x-api-key": KEY}))
        assert broken.status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(broken.body)
        sim.inject("models", "slow")
        sim.faults.slow_seconds = 2.5
        slow = sim.handle(SimRequest("GET", "/api/v1/models", headers={"x-api-key": KEY}))
        assert (slow.status, slow.fault, slow.delay) == (200, "slow", 2.5)
        sim.inject("generate", "insufficient_credits")
        assert call(sim, "POST", "/api/v1/generate/video", {"prompt": "a"})[1]["code"] == (
            "INSUFFICIENT_CREDITS")
        sim.faults.insufficient_credits = True
        assert call(sim, "POST", "/api/v1/generate/video", {"prompt": "a"})[0] == 400
        with pytest.raises(ValueError, match="fault"):
            sim.inject("status", "explode")
        with pytest.raises(ValueError, match="route"):
            sim.inject("nowhere", "500")


class TestMoreCdn:
    def _done(self, sim: Simulator) -> str:
        gen = submit(sim)
        sim.complete(gen["generation_id"])
        return str(gen["generation_id"])

    def test_suffix_range_head_and_416(self, sim: Simulator) -> None:
        """Suffix ranges, HEAD and unsatisfiable ranges follow RFC 9110."""
        path = f"/videos/{self._done(sim)}.mp4"
        size = int(sim.handle(SimRequest("HEAD", path, host="cdn")).headers["content-length"])
        head = sim.handle(SimRequest("HEAD", path, host="cdn"))
        assert (head.status, head.chunks, head.headers["accept-ranges"]) == (200, None, "bytes")
        tail = sim.handle(SimRequest("GET", path, headers={"range": "bytes=-10"}, host="cdn"))
        assert tail.headers["content-range"] == f"bytes {size - 10}-{size - 1}/{size}"
        assert len(b"".join(sim.video_chunks(tail))) == 10
        bad = sim.handle(SimRequest("GET", path, headers={"range": f"bytes={size}-"}, host="cdn"))
        assert bad.status == 416

    def test_large_video_size_is_padded(self, clock: VirtualClock) -> None:
        """video_size serves a large file, produced in chunks."""
        sim = Simulator(clock=clock, video_size=1_000_000)
        path = f"/videos/{self._done(sim)}.mp4"
        answer = sim.handle(SimRequest("GET", path, host="cdn"))
        data = b"".join(sim.video_chunks(answer))
        assert len(data) == int(answer.headers["content-length"]) == 1_000_000
        part = sim.handle(SimRequest("GET", path, headers={"range": "bytes=500000-500099"},
                                     host="cdn"))
        assert b"".join(sim.video_chunks(part)) == data[500_000:500_100]

    def test_not_ready_filtered_and_thumbs(self, sim: Simulator) -> None:
        """Only completed videos exist; filtered ones have no video; thumbnails are JPEG."""
        running = submit(sim)["generation_id"]
        assert sim.handle(SimRequest("GET", f"/videos/{running}.mp4", host="cdn")).status == 404
        gen_id = self._done(sim)
        thumb = sim.handle(SimRequest("GET", f"/thumbs/{gen_id}.jpg", host="cdn"))
        assert (thumb.status, thumb.headers["content-type"]) == (200, "image/jpeg")
        sim.plan("filtered")
        filtered = submit(sim)["generation_id"]
        sim.complete(filtered, filtered=True)
        assert sim.handle(SimRequest("GET", f"/videos/{filtered}.mp4", host="cdn")).status == 404
