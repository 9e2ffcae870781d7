"""Adversarial checks of the elements trust gate (``UNTRUSTED_REFERENCE_MEDIA_URL``, issue 14).

The refusal comes before any charge, so the SDK re-hosts each remote reference and sends once
more. It must send *only* once more, treat that second POST as the paid POST it is (a lost
answer is unknown, never resent; a 429 is waited out), never hand the API key to the host it
downloads a reference from (nor to whatever that host redirects to), and stop before any
upload or second POST when a reference cannot be fetched.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async import AsyncKolbo, ElementsToVideo, Kolbo
from kolbo_async.testing import Simulator, VirtualClock

KEY = "kolbo_live_" + "3e" * 20
OTHER = "kolbo_live_" + "a1" * 20
API = "https://api.kolbo.ai/api/v1"
ELEMENTS = "/api/v1/generate/elements"
UPLOAD = "/api/v1/media/upload"
REF = "https://example.com/ref.png"

pytestmark = pytest.mark.timeout(60)

UNTRUSTED = httpx.Response(
    400, json={"success": False, "error": "untrusted", "code": "UNTRUSTED_REFERENCE_MEDIA_URL"}
)
HOSTED = httpx.Response(200, json={"success": True, "media": {"url": "https://cdn.kolbo.ai/r.png"}})
CREATED = httpx.Response(200, json={"success": True, "generation_id": "g1"})


def _png() -> httpx.Response:
    return httpx.Response(200, content=b"\x89PNG-ref", headers={"content-type": "image/png"})


@pytest.mark.anyio
@pytest.mark.parametrize(
    "lost",
    [
        httpx.Response(502, text="<html>502 Bad Gateway</html>"),
        httpx.Response(200, text='{"success": true, "gen'),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
    ],
    ids=["gateway-502", "garbled-200", "dropped"],
)
async def test_a_lost_answer_to_the_second_post_is_unknown_and_not_sent_a_third_time(
    lost: httpx.Response | Exception,
) -> None:
    with respx.mock() as router:
        gate = router.post(f"{API}/generate/elements").mock(side_effect=[UNTRUSTED, lost])
        router.get(REF).mock(return_value=_png())
        upload = router.post(f"{API}/media/upload").mock(return_value=HOSTED)
        async with AsyncKolbo(KEY, rate_limits=None, _clock=VirtualClock()) as client:
            with anyio.fail_after(30), pytest.raises(k.SubmissionOutcomeUnknownError):
                await client.videos.from_elements("p", images=[REF])
    assert gate.call_count == 2 and upload.call_count == 1


@pytest.mark.anyio
async def test_a_429_on_the_second_post_is_waited_out_and_sent_whole_again() -> None:
    limited = httpx.Response(429, headers={"Retry-After": "2"}, json={"code": "RATE_LIMITED"})
    with respx.mock() as router:
        gate = router.post(f"{API}/generate/elements").mock(
            side_effect=[UNTRUSTED, limited, CREATED]
        )
        router.get(REF).mock(return_value=_png())
        upload = router.post(f"{API}/media/upload").mock(return_value=HOSTED)
        async with AsyncKolbo(KEY, rate_limits=None, _clock=VirtualClock()) as client:
            with anyio.fail_after(30):
                gen = await client.videos.from_elements("p", images=[REF], videos=[REF])
    assert gen.id == "g1" and upload.call_count == 1  # one URL, re-hosted once
    second, third = (call.request.content for call in gate.calls[1:])
    assert second == third and REF.encode() not in second
    assert b'"reference_videos":["https://cdn.kolbo.ai/r.png"]' in second


@pytest.mark.anyio
async def test_the_reference_host_and_its_redirect_never_see_the_key() -> None:
    with respx.mock() as router:
        router.post(f"{API}/generate/elements").mock(side_effect=[UNTRUSTED, CREATED])
        ref = router.get(REF).mock(
            return_value=httpx.Response(302, headers={"location": f"{API}/account/credits"})
        )
        bounced = router.get(f"{API}/account/credits").mock(return_value=_png())
        router.post(f"{API}/media/upload").mock(return_value=HOSTED)
        async with AsyncKolbo(KEY, rate_limits=None, _clock=VirtualClock()) as client:
            with anyio.fail_after(30):
                await client.videos.from_elements("p", images=[REF])
    for request in (ref.calls.last.request, bounced.calls.last.request):
        assert "x-api-key" not in request.headers
        assert KEY not in str(request.headers) and KEY not in str(request.url)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [404, 403, 500])
async def test_a_reference_that_cannot_be_fetched_stops_before_any_upload(status: int) -> None:
    with respx.mock(assert_all_called=False) as router:
        gate = router.post(f"{API}/generate/elements").mock(return_value=UNTRUSTED)
        router.get(REF).mock(return_value=httpx.Response(status, text="nope"))
        upload = router.post(f"{API}/media/upload").mock(return_value=HOSTED)
        async with AsyncKolbo(KEY, rate_limits=None, _clock=VirtualClock()) as client:
            with anyio.fail_after(30), pytest.raises(k.KolboError):
                await client.videos.from_elements("p", images=[REF])
    assert gate.call_count == 1 and upload.call_count == 0


@pytest.mark.anyio
async def test_a_foreign_reference_beside_local_parts_and_a_local_keyframe(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Re-hosting rebuilds the multipart body: the local parts stay parts, the foreign URL
    becomes the caller's, the keyframe's upload is not repeated; charged once."""
    clock = VirtualClock()
    sim = Simulator(clock=clock, trust_gate=True)
    png, still = tmp_path / "front.png", tmp_path / "still.png"
    png.write_bytes(b"\x89PNG-front")
    still.write_bytes(b"\x89PNG-still")
    async with AsyncKolbo(OTHER, _transport=sim.transport(), _clock=clock) as other:
        theirs = (await other.media.upload(png)).url
    before = sim.credits()
    async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        with caplog.at_level(logging.DEBUG, logger="kolbo_async"), anyio.fail_after(30):
            gen = await client.videos.from_elements(
                "p", images=[theirs, png], keyframes=[(still, 1.5)]
            )
    posts = [r for r in sim.requests if r.path == ELEMENTS]
    uploads = [r for r in sim.requests if r.path == UPLOAD and r.headers["x-api-key"] == KEY]
    assert [p.status for p in posts] == [400, 200]
    assert len(uploads) == 2  # the keyframe (once) and the re-hosted reference
    assert len(sim.generations) == 1 and sim.credits() < before
    request = sim.generations[gen.id].request
    assert theirs not in request["reference_images"] and len(request["reference_images"]) == 2
    assert KEY not in caplog.text and OTHER not in caplog.text


@pytest.mark.anyio
async def test_a_batch_behind_the_gate_pays_once_and_a_rerun_pays_nothing(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    sim = Simulator(clock=clock, trust_gate=True)
    png = tmp_path / "front.png"
    png.write_bytes(b"\x89PNG-front")
    async with AsyncKolbo(OTHER, _transport=sim.transport(), _clock=clock) as other:
        theirs = (await other.media.upload(png)).url
    requests = [ElementsToVideo("a", images=[theirs]), ElementsToVideo("b", images=[theirs, png])]
    journal = tmp_path / "gate.db"
    async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        for _ in range(2):
            with anyio.fail_after(30):
                async for outcome in client.videos.generate_many(requests, journal=journal):
                    assert outcome.error is None, outcome.error
    assert len(sim.generations) == 2
    # Each item refused once, then sent once more; the rerun sends nothing.
    assert sorted(r.status for r in sim.requests if r.path == ELEMENTS) == [200, 200, 400, 400]


def test_blocking_client_behind_the_gate(tmp_path: Path) -> None:
    clock = VirtualClock()
    sim = Simulator(clock=clock, trust_gate=True)
    png = tmp_path / "front.png"
    png.write_bytes(b"\x89PNG-front")
    with Kolbo(OTHER, _transport=sim.transport(), _clock=clock) as other:
        theirs = other.media.upload(png).url
    with Kolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        gen = client.videos.from_elements("p", images=[theirs])
        assert gen.result().url
    assert [r.status for r in sim.requests if r.path == ELEMENTS] == [400, 200]
