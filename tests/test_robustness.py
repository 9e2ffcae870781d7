"""Bad input and bad answers, fuzzed: only documented errors come out, nothing leaks the key."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kolbo_async as k
from kolbo_async import AsyncKolbo
from kolbo_async.testing import Simulator, VirtualClock

from .conftest import StepClock

KEY = "kolbo_live_" + "7c" * 20
FUZZ = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=50),
    st.text(min_size=5000, max_size=6000).map(lambda s: s or "x" * 5000),
    st.sampled_from(["", " ", "\u200b", "🎬", "ftp://x", "https://", "http:///nohost", "16x9"]),
    st.lists(st.text(max_size=10), max_size=40),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def run(fn: Any) -> None:
    anyio.run(fn, backend="asyncio")


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


class TestFuzzedInput:
    @pytest.mark.slow
    @FUZZ
    @given(
        prompt=VALUES, model=VALUES, aspect_ratio=VALUES, duration=VALUES,
        enhance_prompt=VALUES, visual_dna_ids=VALUES, reference_images=VALUES,
        resolution=VALUES, sound_enabled=VALUES, extra_body=VALUES, image=st.booleans(),
    )
    def test_generation_calls(
        self, router: respx.MockRouter, image: bool, prompt: Any, **fields: Any
    ) -> None:
        """Any arguments: InvalidRequestError with nothing sent, or one well-formed POST."""
        route = router.route(host="api.kolbo.ai").respond(
            200, json={"success": True, "generation_id": "g"}
        )
        route.reset()

        async def call() -> None:
            async with AsyncKolbo(KEY, rate_limits=None, max_retries=0) as client:
                if image:  # the from-image route takes no reference_images
                    fields.pop("reference_images", None)
                    await client.videos.from_image(prompt, **fields)
                else:
                    await client.videos.generate(prompt, **fields)

        try:
            run(call)
        except k.InvalidRequestError as error:
            assert error.field
            assert not route.called
        else:
            assert route.call_count == 1
            json.loads(route.calls.last.request.content)

    @FUZZ
    @given(value=VALUES)
    def test_attach_and_list(self, router: respx.MockRouter, value: Any) -> None:
        """attach() and models.list() reject bad values without a request."""
        route = router.route(host="api.kolbo.ai").respond(200, json={"models": []})
        route.reset()

        async def call() -> None:
            async with AsyncKolbo(KEY, rate_limits=None) as client:
                with contextlib.suppress(k.InvalidRequestError):
                    client.generations.attach(value)
                try:
                    await client.models.list(type=value)
                except k.InvalidRequestError:
                    assert not route.called

        run(call)

    @FUZZ
    @given(api_key=VALUES, base_url=VALUES, timeout=VALUES, max_retries=VALUES,
           max_concurrent_requests=VALUES)
    def test_client_settings(self, **kwargs: Any) -> None:
        """Any settings: a working client, or a KolboError naming what is wrong."""
        try:
            AsyncKolbo(**kwargs)
        except k.InvalidRequestError as error:
            assert error.field
        except k.KolboError as error:
            assert "KOLBO_API_KEY" in str(error)

    @FUZZ
    @given(
        # Half small integers (the boundary at 0), half anything; a new file most of the time.
        index=st.booleans().flatmap(lambda small: st.integers(-3, 3) if small else VALUES),
        place=st.sampled_from(["new", "new", "new", "dir", "no_parent", "exists", "empty"]),
    )
    def test_download_arguments(
        self, router: respx.MockRouter, tmp_path: Path, index: Any, place: str
    ) -> None:
        """Bad download arguments are refused, naming the field, before anything is fetched;
        good ones go on to wait for the video (here until the deadline)."""
        route = router.route(host="api.kolbo.ai").respond(200, json={"state": "processing"})
        route.reset()
        (tmp_path / "taken.mp4").write_bytes(b"mine")
        path = {
            "new": tmp_path / "v.mp4",
            "dir": tmp_path,
            "no_parent": tmp_path / "missing" / "v.mp4",
            "exists": tmp_path / "taken.mp4",
            "empty": "",
        }[place]
        faulty = set()
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            faulty.add("index")
        if place != "new":
            faulty.add("path")

        async def call() -> None:
            async with AsyncKolbo(KEY, rate_limits=None, _clock=StepClock()) as client:
                gen = client.generations.attach("g")
                await gen.download(path, index=index, timeout=30)

        if faulty:
            with pytest.raises(k.InvalidRequestError) as info:
                run(call)
            assert info.value.field in faulty
            assert not route.called
        else:
            with pytest.raises(k.GenerationTimeoutError):
                run(call)
            assert route.called
        assert (tmp_path / "taken.mp4").read_bytes() == b"mine"
        assert not (tmp_path / "v.mp4").exists()

    @pytest.mark.parametrize("path", [None, 5, ["a"], "x" * 5000, "a\x00b.mp4"])
    def test_download_path_of_the_wrong_kind(self, router: respx.MockRouter, path: Any) -> None:
        """A path that is no file name is an InvalidRequestError naming `path`, at once."""
        route = router.route(host="api.kolbo.ai").respond(200, json={"state": "processing"})

        async def call() -> None:
            async with AsyncKolbo(KEY, rate_limits=None) as client:
                await client.generations.attach("g").download(path, timeout=0.001)

        with pytest.raises(k.InvalidRequestError) as info:
            run(call)
        assert info.value.field == "path"
        assert not route.called

    @pytest.mark.parametrize(
        "kwargs",
        [{"timeout": -1}, {"timeout": 0}, {"timeout": True}, {"timeout": "60"},
         {"timeout": float("nan")}],
    )
    def test_handle_timeouts(self, kwargs: dict[str, Any]) -> None:
        """A bad deadline is an InvalidRequestError."""
        gen = AsyncKolbo(KEY).generations.attach("g")
        with pytest.raises(k.InvalidRequestError):
            gen.progress(**kwargs)


BODIES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([
        b"", b"null", b"[]", b"42", b'"text"', b"<html>502 Bad Gateway</html>",
        b'{"success": false}', b'{"success": true}', b'{"state": 5}', b'{"state": null}',
        b'{"state": "processing", "progress": "lots"}', b'{"state": "completed", "result": 7}',
        b'{"state": "completed", "result": {"urls": "https://x"}}', b'{"state": "mystery"}',
        b'{"success": false, "error": {"nested": true}, "code": 5}', b'{"status": false}',
    ]),
    st.dictionaries(st.sampled_from(["state", "progress", "result", "error", "failure",
                                     "generation_id", "success", "credits_used"]),
                    VALUES, max_size=6).map(lambda d: json.dumps(d, default=str).encode()),
)


class TestFuzzedAnswers:
    @pytest.mark.slow
    @FUZZ
    @given(status=st.sampled_from([200, 201, 400, 401, 404, 409, 418, 429, 500, 502]),
           body=BODIES)
    def test_status_answers(self, router: respx.MockRouter, status: int, body: bytes) -> None:
        """Whatever the server says, status() returns a status or raises a KolboError."""
        router.get(url__regex=r".*/status$").respond(status, content=body)

        async def call() -> None:
            async with AsyncKolbo(KEY, rate_limits=None, max_retries=0) as client:
                try:
                    result = await client.generations.attach("g").status()
                except k.KolboError as error:
                    if isinstance(error, (k.APIStatusError, k.APIResponseValidationError)):
                        assert error.body is not None
                else:
                    assert isinstance(result, k.GenerationStatus)
                    assert isinstance(result.state, str)

        run(call)


class TestKeyNeverLeaks:
    def test_nowhere_in_a_faulty_generation(
        self, caplog: pytest.LogCaptureFixture, tmp_path: Any
    ) -> None:
        """Through faults, errors and a download: no log record, repr, error or CDN request
        carries the key."""
        caplog.set_level(logging.DEBUG)
        clock = VirtualClock()
        sim = Simulator(clock=clock)
        seen: list[str] = []

        async def flow() -> None:
            async with sim.client(KEY) as client:
                seen.append(repr(client))
                for fault in ("500", "html_502", "drop_after", "429", "slow"):
                    sim.inject("status", fault)
                gen = await client.videos.generate("a cat")
                seen.extend([repr(gen), repr(gen.submission)])
                async for update in gen.progress():
                    seen.append(repr(update))
                path = await gen.download(tmp_path / "v.mp4")
                seen.append(repr(path))
                for bad in (lambda: client.videos.generate("x", model="nope"),
                            lambda: client.generations.attach("0" * 24).status()):
                    try:
                        await bad()
                    except k.KolboError as error:
                        seen.extend([str(error), repr(error), repr(error.args)])
                        response = getattr(error, "response", None)
                        if response is not None:
                            seen.append(str(response.request.headers))

        anyio.run(flow, backend="trio")
        for text in seen:
            assert KEY not in text
        for record in caplog.records:
            assert KEY not in record.getMessage()
        cdn = [r for r in sim.requests if r.host == "cdn"]
        assert cdn
        assert all("x-api-key" not in r.headers for r in cdn)
        api = [r for r in sim.requests if r.host == "api" and r.fault != "drop_before"]
        assert all(r.headers.get("x-api-key") == KEY for r in api)

    def test_not_in_bad_key_errors(self) -> None:
        """Even a key the server rejects (and might echo) stays out of the error."""
        echoed = httpx.Response(401, json={"success": False, "error": f"Invalid key {KEY}"})

        async def flow() -> None:
            transport = httpx.MockTransport(lambda request: echoed)
            async with AsyncKolbo(KEY, _transport=transport) as client:
                with pytest.raises(k.AuthenticationError) as info:
                    await client.account.credits()
            assert KEY not in str(info.value)
            assert KEY not in repr(info.value.args)

        anyio.run(flow)
