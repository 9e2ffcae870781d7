"""AsyncKolbo construction, options and lifecycle."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async import AsyncKolbo, RateLimits

from .conftest import StepClock

KEY = "kolbo_live_" + "c3" * 20


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


class TestConstructor:
    def test_missing_key_names_the_variable(self) -> None:
        """No key anywhere is a KolboError that tells the user about KOLBO_API_KEY."""
        with pytest.raises(k.KolboError, match="KOLBO_API_KEY"):
            AsyncKolbo()

    def test_key_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """KOLBO_API_KEY is used when no key is passed."""
        monkeypatch.setenv("KOLBO_API_KEY", KEY)
        assert AsyncKolbo()._pipeline.settings.api_key == KEY

    @pytest.mark.parametrize(
        ("env", "expected"),
        [
            ({}, "https://api.kolbo.ai"),
            ({"KOLBO_API_URL": "https://sapirapi.kolbo.ai/api"}, "https://sapirapi.kolbo.ai"),
            (
                {"KOLBO_API_URL": "https://a.example/api", "KOLBO_BASE_URL": "https://b.example"},
                "https://b.example",
            ),
            ({"KOLBO_API_BASE": "https://c.example/api"}, "https://c.example"),
            (
                {"KOLBO_API_BASE": "https://c.example/api", "KOLBO_API_URL": "https://a.example"},
                "https://a.example",
            ),
        ],
    )
    def test_base_url_env_fallbacks(
        self, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
    ) -> None:
        """KOLBO_BASE_URL, KOLBO_API_URL, KOLBO_API_BASE, then the default; /api is dropped."""
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert str(AsyncKolbo(KEY).base_url).rstrip("/") == expected

    @pytest.mark.parametrize(
        "url", ["https://api.kolbo.ai/api", "https://api.kolbo.ai/api/v1/", "https://api.kolbo.ai/"]
    )
    def test_base_url_forms_are_normalised(self, url: str) -> None:
        """The /api and /api/v1 forms Kolbo's own tools use are accepted."""
        assert AsyncKolbo(KEY, base_url=url)._pipeline.settings.root == "https://api.kolbo.ai"

    def test_plain_http_is_refused_unless_loopback(self) -> None:
        """The key never crosses the network in clear."""
        with pytest.raises(k.InvalidRequestError) as info:
            AsyncKolbo(KEY, base_url="http://api.kolbo.ai")
        assert info.value.field == "base_url"
        AsyncKolbo(KEY, base_url="http://127.0.0.1:8080")
        AsyncKolbo(KEY, base_url="http://localhost:8080/api")

    def test_sync_http_client_is_a_type_error(self) -> None:
        """An httpx.Client cannot drive the async core."""
        with pytest.raises(TypeError, match="AsyncClient"):
            AsyncKolbo(KEY, http_client=httpx.Client())  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"max_retries": -1},
            {"max_retries": True},
            {"timeout": 0},
            {"timeout": "10"},
            {"max_concurrent_requests": 0},
            {"rate_limits": {"generations_per_minute": 10}},
        ],
    )
    def test_bad_options(self, kwargs: dict[str, object]) -> None:
        """Bad settings are InvalidRequestErrors naming the argument."""
        with pytest.raises(k.InvalidRequestError) as info:
            AsyncKolbo(KEY, **kwargs)  # type: ignore[arg-type]
        assert info.value.field == next(iter(kwargs))

    def test_repr_has_no_key(self) -> None:
        """The key is in no repr of the client or its settings."""
        client = AsyncKolbo(KEY)
        assert KEY not in repr(client)
        assert KEY not in repr(client._pipeline.settings)

    def test_import_does_not_load_the_simulator(self) -> None:
        """import kolbo_async pulls in neither the simulator nor its server or mocks, nor
        what only some programs use (asyncio for the blocking client, the journals and their
        drivers, a shared rate budget, hooks, tracing, trio, multipart bodies): import time is
        measured against
        the dependencies alone."""
        code = (
            "import sys, kolbo_async; "
            "bad = [m for m in sys.modules if m.startswith(('kolbo_async.testing', 'uvicorn', "
            "'respx', 'sqlite3', 'trio', 'psycopg', 'redis', 'opentelemetry', "
            "'kolbo_async._journal.', 'kolbo_async._journal_pg', 'kolbo_async._shared_budget', "
            "'kolbo_async._hooks', 'kolbo_async.otel', 'anyio.to_thread', 'kolbo_async._batch', "
            "'kolbo_async._rerun', 'kolbo_async._budget', 'kolbo_async._multipart'))] "
            "+ [m for m in ('asyncio', 'kolbo_async._journal') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)"
        )
        assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0

    def test_version(self) -> None:
        """kolbo_async.__version__ comes from the installed metadata."""
        assert k.__version__.count(".") >= 2



@pytest.mark.anyio
class TestLifecycle:
    async def test_user_http_client_is_left_open(self, router: respx.MockRouter) -> None:
        """Closing the SDK client never closes a client the user passed in."""
        async with httpx.AsyncClient() as http:
            async with AsyncKolbo(KEY, http_client=http):
                pass
            assert not http.is_closed

    async def test_own_http_client_is_closed(self) -> None:
        """aclose() closes the pool the SDK opened; later calls raise a clear KolboError."""
        client = AsyncKolbo(KEY)
        await client.aclose()
        assert client._pipeline.http.is_closed
        with pytest.raises(k.KolboError, match="closed"):
            await client.models.list()

    async def test_with_options_shares_pool_and_limiter(
        self, router: respx.MockRouter, clock: StepClock
    ) -> None:
        """with_options() changes timeout/retries for a few calls and shares the rest."""
        route = router.get("https://api.kolbo.ai/api/v1/models").mock(
            side_effect=[httpx.Response(503)] * 2 + [httpx.Response(200, json={"models": []})]
        )
        async with AsyncKolbo(KEY, max_retries=0, rate_limits=RateLimits(), _clock=clock) as client:
            patient = client.with_options(timeout=5, max_retries=3)
            assert patient.max_retries == 3
            assert patient.timeout.read == 5
            assert client.timeout.read == 60
            assert patient._pipeline.http is client._pipeline.http
            assert patient._pipeline.pacer is client._pipeline.pacer
            assert patient._pipeline.limiter is client._pipeline.limiter
            assert await patient.models.list() == []
            assert route.call_count == 3
            assert len(clock.sleeps) == 2  # two backoffs, on the client's clock
        with pytest.raises(k.KolboError, match="closed"):
            await patient.models.list()

    async def test_generation_post_gets_at_least_120s(self, router: respx.MockRouter) -> None:
        """A generation POST may take 120 s to answer whatever the client's timeout."""
        route = router.post("https://api.kolbo.ai/api/v1/generate/video").respond(
            200, json={"success": True, "generation_id": "g"}
        )
        router.get("https://api.kolbo.ai/api/v1/models").respond(200, json={"models": []})
        async with AsyncKolbo(KEY, timeout=10, rate_limits=None) as client:
            await client.videos.generate("a cat")
            await client.models.list()
        post_timeout = route.calls.last.request.extensions["timeout"]
        assert post_timeout["read"] == 120
        assert post_timeout["connect"] == 10
