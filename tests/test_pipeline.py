"""The request pipeline, asserted at the HTTP level with respx: retries, errors, key safety."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async import AsyncKolbo

from .conftest import StepClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "a1" * 20
API = "https://api.kolbo.ai"
SUBMITTED = {
    "success": True,
    "generation_id": "gen1",
    "type": "video",
    "model": "auto",
    "credits_charged": 35,
    "poll_url": "/api/v1/generate/gen1/status",
    "poll_interval_hint": 8,
}
PROCESSING = {"success": True, "generation_id": "gen1", "state": "processing", "progress": 40}

MakeClient = Callable[..., AsyncKolbo]


@pytest.fixture
async def make_client(clock: StepClock) -> AsyncIterator[MakeClient]:
    clients: list[AsyncKolbo] = []

    def make(**kwargs: Any) -> AsyncKolbo:
        kwargs.setdefault("rate_limits", None)
        client = AsyncKolbo(KEY, _clock=clock, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def router() -> respx.MockRouter:
    with respx.mock(base_url=API, assert_all_called=False) as mock:
        yield mock


class TestGenerationPostNeverPaysTwice:
    async def test_dropped_after_send_raises_outcome_unknown_once(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """A POST whose connection drops after sending is not retried and says so."""
        route = router.post("/api/v1/generate/video").mock(
            side_effect=httpx.RemoteProtocolError("Server disconnected")
        )
        client = make_client(max_retries=5)
        with pytest.raises(k.SubmissionOutcomeUnknownError, match="NOT resubmitted"):
            await client.videos.generate("a cat")
        assert route.call_count == 1

    async def test_read_timeout_raises_outcome_unknown_once(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """A POST that times out reading the answer may have been charged: no retry."""
        route = router.post("/api/v1/generate/video").mock(side_effect=httpx.ReadTimeout("slow"))
        with pytest.raises(k.SubmissionOutcomeUnknownError):
            await make_client(max_retries=5).videos.generate("a cat")
        assert route.call_count == 1

    @pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
    async def test_5xx_is_not_retried(
        self, router: respx.MockRouter, make_client: MakeClient, status: int
    ) -> None:
        """A 5xx (or 408) to a generation POST may follow a charge: raised, not retried."""
        route = router.post("/api/v1/generate/video").respond(
            status, json={"success": False, "error": "boom", "code": "GENERATION_ERROR"}
        )
        with pytest.raises(k.APIStatusError) as info:
            await make_client(max_retries=5).videos.generate("a cat")
        assert route.call_count == 1
        assert info.value.status_code == status

    async def test_connect_error_is_retried(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """A POST that never connected cannot have been charged: it is retried."""
        route = router.post("/api/v1/generate/video").mock(
            side_effect=[httpx.ConnectError("refused"), httpx.Response(200, json=SUBMITTED)]
        )
        gen = await make_client().videos.generate("a cat")
        assert gen.id == "gen1"
        assert route.call_count == 2

    async def test_429_is_retried_after_retry_after(
        self, router: respx.MockRouter, make_client: MakeClient, clock: StepClock
    ) -> None:
        """A 429 is rejected before any charge: retried once the Retry-After has passed."""
        limited = httpx.Response(
            429,
            headers={"Retry-After": "7"},
            json={"status": False, "message": "Too many requests, please try again later"},
        )
        route = router.post("/api/v1/generate/video").mock(
            side_effect=[limited, httpx.Response(200, json=SUBMITTED)]
        )
        start = clock.now()
        gen = await make_client().videos.generate("a cat")
        assert gen.id == "gen1"
        assert route.call_count == 2
        assert clock.now() - start >= 7

    async def test_429_retries_are_bounded(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """After max_retries 429s the caller gets RateLimitError with retry_after."""
        router.post("/api/v1/generate/video").respond(
            429, headers={"Retry-After": "3"}, json={"status": False, "message": "Too many"}
        )
        with pytest.raises(k.RateLimitError) as info:
            await make_client(max_retries=1).videos.generate("a cat")
        assert info.value.retry_after == 3
        assert "Too many" in str(info.value)


class TestGetRetries:
    @pytest.mark.parametrize(
        "failure",
        [
            httpx.Response(503, text="<html><body>502 Bad Gateway</body></html>"),
            httpx.Response(500, json={"success": False, "error": "x"}),
            httpx.Response(408),
            httpx.ReadTimeout("slow"),
            httpx.RemoteProtocolError("dropped"),
            httpx.ConnectError("refused"),
        ],
        ids=["html-503", "500", "408", "read-timeout", "dropped", "refused"],
    )
    async def test_transient_failures_are_retried(
        self, router: respx.MockRouter, make_client: MakeClient, failure: object
    ) -> None:
        """A status GET is retried on 408, 5xx, timeouts and dropped connections."""
        route = router.get("/api/v1/generate/gen1/status").mock(
            side_effect=[failure, httpx.Response(200, json=PROCESSING)]
        )
        status = await make_client().generations.attach("gen1").status()
        assert status.progress == 40
        assert route.call_count == 2

    async def test_retries_stop_at_max_retries(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """max_retries=2 means three attempts, then the error."""
        route = router.get("/api/v1/generate/gen1/status").respond(502, text="bad gateway")
        with pytest.raises(k.InternalServerError, match="bad gateway"):
            await make_client(max_retries=2).generations.attach("gen1").status()
        assert route.call_count == 3

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 409])
    async def test_client_errors_are_not_retried(
        self, router: respx.MockRouter, make_client: MakeClient, status: int
    ) -> None:
        """A 4xx other than 408/425/429 is an answer, not a glitch."""
        route = router.get("/api/v1/generate/gen1/status").respond(
            status, json={"success": False, "error": "no"}
        )
        with pytest.raises(k.APIStatusError):
            await make_client(max_retries=3).generations.attach("gen1").status()
        assert route.call_count == 1

    async def test_retry_after_http_date_is_honoured(
        self, router: respx.MockRouter, make_client: MakeClient, clock: StepClock
    ) -> None:
        """Retry-After as an HTTP date in the past means no extra wait, and it still retries."""
        route = router.get("/api/v1/generate/gen1/status").mock(
            side_effect=[
                httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
                httpx.Response(200, json=PROCESSING),
            ]
        )
        await make_client().generations.attach("gen1").status()
        assert route.call_count == 2
        assert clock.sleeps and max(clock.sleeps) <= 8


class TestErrorMapping:
    @pytest.mark.parametrize(
        ("status", "body", "cls"),
        [
            (400, {"success": False, "error": "Insufficient credits", "code": "INSUFFICIENT_CREDITS"},
             k.InsufficientCreditsError),
            (402, {"success": False, "error": "Pay up"}, k.InsufficientCreditsError),
            (400, {"success": False, "error": "Model not found", "code": "MODEL_NOT_FOUND"},
             k.BadRequestError),
            (401, {"success": False, "error": "Invalid API key", "code": "INVALID_API_KEY"},
             k.AuthenticationError),
            (403, {"success": False, "error": "Forbidden"}, k.PermissionDeniedError),
        ],
    )
    async def test_post_errors_map_by_code_then_status(
        self,
        router: respx.MockRouter,
        make_client: MakeClient,
        status: int,
        body: dict[str, Any],
        cls: type[k.APIStatusError],
    ) -> None:
        """The body's code decides first, then the status; the message is the server's."""
        router.post("/api/v1/generate/video").respond(status, json=body)
        with pytest.raises(cls) as info:
            await make_client().videos.generate("a cat")
        assert info.value.status_code == status
        assert info.value.body == body
        assert body["error"] in str(info.value)
        assert isinstance(info.value.response, httpx.Response)

    async def test_insufficient_credits_is_not_a_bad_request(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """INSUFFICIENT_CREDITS needs another reaction than a malformed request."""
        router.post("/api/v1/generate/video").respond(
            400, json={"success": False, "error": "Insufficient credits", "code": "INSUFFICIENT_CREDITS"}
        )
        with pytest.raises(k.InsufficientCreditsError) as info:
            await make_client().videos.generate("a cat")
        assert not isinstance(info.value, k.BadRequestError)
        assert info.value.code == "INSUFFICIENT_CREDITS"

    async def test_html_error_page_is_a_status_error_with_raw_text(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """A proxy's HTML page becomes an APIStatusError carrying the raw text."""
        page = "<html><head><title>403 Forbidden</title></head><body>cloudflare</body></html>"
        router.get("/api/v1/models").respond(403, text=page)
        with pytest.raises(k.PermissionDeniedError) as info:
            await make_client().models.list()
        assert info.value.body == page
        assert info.value.code is None

    @pytest.mark.parametrize(
        "content", [b"not json", b"<html>ok</html>", b"[1, 2]", b"\xff\xfe", b'"text"']
    )
    async def test_2xx_that_is_not_a_json_object(
        self, router: respx.MockRouter, make_client: MakeClient, content: bytes
    ) -> None:
        """A 2xx body that is not a JSON object is an APIResponseValidationError, not retried."""
        route = router.get("/api/v1/models").respond(200, content=content)
        with pytest.raises(k.APIResponseValidationError) as info:
            await make_client(max_retries=3).models.list()
        assert route.call_count == 1
        assert info.value.status_code == 200

    async def test_200_with_success_false_is_an_error(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """A 200 saying success: false is reported as the error it describes."""
        router.get("/api/v1/account/credits").respond(
            200, json={"success": False, "error": "Invalid API key", "code": "INVALID_API_KEY"}
        )
        with pytest.raises(k.AuthenticationError, match="Invalid API key"):
            await make_client().account.credits()

    async def test_status_without_state_is_a_validation_error(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """A status answer without `state` cannot be acted on: APIResponseValidationError."""
        router.get("/api/v1/generate/gen1/status").respond(200, json={"success": True})
        with pytest.raises(k.APIResponseValidationError, match="state"):
            await make_client().generations.attach("gen1").status()

    async def test_submission_without_id_is_outcome_unknown(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """A 200 to a paid POST without generation_id cannot be trusted either way: Kolbo
        may have charged. Outcome unknown, the answer kept, and never sent again."""
        route = router.post("/api/v1/generate/video").respond(200, json={"success": True})
        with pytest.raises(k.SubmissionOutcomeUnknownError) as info:
            await make_client().videos.generate("a cat")
        assert info.value.response is not None
        assert info.value.response.status_code == 200
        assert route.call_count == 1


class TestKeySafety:
    async def test_key_is_sent_to_the_api_as_x_api_key(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """Every API request carries the key in X-API-Key."""
        route = router.get("/api/v1/models").respond(200, json={"success": True, "models": []})
        await make_client().models.list()
        assert route.calls.last.request.headers["X-API-Key"] == KEY

    async def test_redirects_are_not_followed(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """A 30x to another host is an error, and the other host never sees the key."""
        router.get("/api/v1/models").respond(
            302, headers={"Location": "https://evil.example/steal"}
        )
        with respx.mock(assert_all_called=False) as outside:
            evil = outside.get("https://evil.example/steal").respond(200, json={})
            with pytest.raises(k.APIStatusError, match="not followed"):
                await make_client().models.list()
            assert not evil.called

    async def test_redirects_not_followed_even_with_a_following_http_client(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """A user's http_client with follow_redirects=True still does not follow API redirects."""
        router.get("/api/v1/models").respond(301, headers={"Location": "https://evil.example/"})
        async with httpx.AsyncClient(follow_redirects=True) as http:
            with pytest.raises(k.APIStatusError):
                await make_client(http_client=http).models.list()

    async def test_errors_and_logs_never_hold_the_key(
        self,
        router: respx.MockRouter,
        make_client: MakeClient,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Messages, args, reprs, the kept request and DEBUG logs are free of the key."""
        router.get("/api/v1/generate/gen1/status").mock(
            side_effect=[
                httpx.Response(503),
                httpx.Response(401, json={"success": False, "error": f"bad key {KEY}"}),
            ]
        )
        caplog.set_level(logging.DEBUG, logger="kolbo_async")
        with pytest.raises(k.AuthenticationError) as info:
            await make_client().generations.attach("gen1").status()
        error = info.value
        for text in (str(error), repr(error), repr(error.args), repr(error.response.request.headers)):
            assert KEY not in text
        assert KEY not in error.response.request.headers.get("X-API-Key", "")
        assert caplog.records, "requests and retries are logged at DEBUG"
        for record in caplog.records:
            assert KEY not in record.getMessage()

    async def test_client_repr_has_no_key(self, make_client: MakeClient) -> None:
        """repr(client) shows the base URL, never the key."""
        assert KEY not in repr(make_client())
        assert "api.kolbo.ai" in repr(make_client())


class TestRequestShape:
    async def test_fields_left_none_are_not_sent(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """Omitted fields are absent (Smart Select when no model) and extra_body is merged."""
        route = router.post("/api/v1/generate/video").respond(200, json=SUBMITTED)
        await make_client().videos.generate(
            "a cat", duration=5, extra_body={"preset_id": "p1"}
        )
        sent = json.loads(route.calls.last.request.content)
        assert sent == {"prompt": "a cat", "duration": 5, "preset_id": "p1"}

    async def test_from_image_body(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """from_image posts image_url and the optional prompt to the from-image route."""
        route = router.post("/api/v1/generate/video/from-image").respond(200, json=SUBMITTED)
        gen = await make_client().videos.from_image(
            "https://example.com/photo.jpg", prompt="Slow zoom", model="m1", aspect_ratio="9:16"
        )
        assert gen.submission is not None and gen.submission.credits_charged == 35
        sent = json.loads(route.calls.last.request.content)
        assert sent == {
            "image_url": "https://example.com/photo.jpg",
            "prompt": "Slow zoom",
            "model": "m1",
            "aspect_ratio": "9:16",
        }

    async def test_invalid_input_sends_nothing(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """InvalidRequestError comes before any byte goes out."""
        route = router.post("/api/v1/generate/video").respond(200, json=SUBMITTED)
        client = make_client()
        with pytest.raises(k.InvalidRequestError) as info:
            await client.videos.generate("   ")
        assert info.value.field == "prompt"
        with pytest.raises(k.InvalidRequestError):
            await client.videos.generate("a cat", duration=float("nan"))
        assert not route.called

    async def test_status_url_is_built_from_the_id(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """The id is quoted as one path segment; poll_url is never followed."""
        evil = dict(SUBMITTED, generation_id="a/../b c", poll_url="https://evil.example/x")
        router.post("/api/v1/generate/video").respond(200, json=evil)
        route = router.get(url__regex=r".*/status$").respond(
            200, json=dict(PROCESSING, generation_id="a/../b c")
        )
        gen = await make_client().videos.generate("a cat")
        await gen.status()
        assert route.calls.last.request.url.raw_path == b"/api/v1/generate/a%2F..%2Fb%20c/status"

    async def test_models_list_passes_type(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """models.list(type=...) sends the type and reads the catalog."""
        route = router.get("/api/v1/models").respond(
            200,
            json={
                "success": True,
                "count": 2,
                "models": [
                    {"identifier": "seedance-2", "credit": 30, "types": ["img_to_video"]},
                    {"name": "no identifier: skipped"},
                ],
            },
        )
        models = await make_client().models.list(type="video_from_image")
        assert route.calls.last.request.url.params["type"] == "video_from_image"
        assert [m.identifier for m in models] == ["seedance-2"]
        assert models[0].cost(5) == 150

    async def test_credits(self, router: respx.MockRouter, make_client: MakeClient) -> None:
        """account.credits() reads the credits object."""
        router.get("/api/v1/account/credits").respond(
            200,
            json={"success": True, "credits": {"total": 120, "plan_credits": 100, "credit_pack": 20}},
        )
        credits = await make_client().account.credits()
        assert (credits.total, credits.plan_credits, credits.redemption) == (120, 100, None)
