"""The examples under examples/, run the way a user runs them.

examples/web_app.py in-process (through httpx's ASGI transport, on asyncio and trio, the
simulator behind a public ``http_client``) for what it answers, and as a subprocess for
``--sandbox``.
Its browser test is tests/test_example_web.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest

from kolbo_async.testing import Simulator

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KEY = "kolbo_live_examples_0123456789abcdef"

Running = Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]


def _web_app() -> ModuleType:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("the 'web' extra is missing in CI: .ci/run installs it")
        pytest.skip("the 'web' extra is not installed (pip install -e '.[web]')")
    spec = importlib.util.spec_from_file_location("web_app", EXAMPLES / "web_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def web_app() -> ModuleType:
    return _web_app()


@pytest.fixture
def sim() -> Simulator:
    # 90 simulated seconds of processing take 90 ms; handles poll at the 50 ms floor.
    return Simulator(api_key=KEY, speed=1000)


@pytest.fixture
def running(web_app: ModuleType, sim: Simulator, tmp_path: Path) -> Running:
    """Start an instance of the app, lifespan and all, reached in-process through httpx.

    Each instance has its own `AsyncKolbo` and shares the file of recent generations, as a
    restarted server does. httpx's ASGITransport runs no lifespan, so this does, and hands
    its state to every request as a server would.
    """

    @contextlib.asynccontextmanager
    async def instance() -> AsyncIterator[httpx.AsyncClient]:
        app = web_app.create_app(
            recent_file=tmp_path / "recent.json",
            api_key=KEY,
            http_client=httpx.AsyncClient(transport=sim.transport()),
        )
        state: dict[str, Any] = {}
        started, stop = anyio.Event(), anyio.Event()
        calls = 0

        async def receive() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            if calls > 1:
                await stop.wait()
                return {"type": "lifespan.shutdown"}
            return {"type": "lifespan.startup"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                started.set()

        async def with_state(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
            await app({**scope, "state": dict(state)}, receive, send)

        lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(app, lifespan, receive, send)
            await started.wait()
            transport = httpx.ASGITransport(app=with_state)
            async with httpx.AsyncClient(transport=transport, base_url="http://web") as http:
                yield http
            stop.set()

    return instance


def _events(text: str) -> list[tuple[str, Any]]:
    """The (event, data) pairs of a Server-Sent Events body; ``retry`` fields as such."""
    out: list[tuple[str, Any]] = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "retry" in fields:
            out.append(("retry", int(fields["retry"])))
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def _posts(sim: Simulator) -> int:
    return sum(1 for r in sim.requests if r.method == "POST")


@pytest.mark.anyio
async def test_the_form_starts_a_generation_and_its_page_streams_it(
    running: Running, sim: Simulator
) -> None:
    async with running() as web:
        answer, page, stream = await _start_and_follow(web)
    [generation_id] = sim.generations
    assert answer.headers["location"] == f"/generations/{generation_id}"
    record = sim.generations[generation_id]
    assert (record.request["prompt"], record.duration, record.aspect_ratio) == (
        "A cat surfing", 5, "9:16"
    )
    assert page.status_code == 200
    assert f'data-generation-id="{generation_id}"' in page.text
    assert "A cat surfing" in page.text
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = _events(stream.text)
    assert events[0] == ("retry", 1000)  # the browser reconnects within a second
    statuses = [data for name, data in events if name == "status"]
    assert statuses[-1] == {"id": generation_id, "state": "completed", "progress": 100}
    assert events[-1] == ("completed", {
        "video_url": f"{sim.cdn_url}/videos/{generation_id}.mp4",
        "poster_url": f"{sim.cdn_url}/thumbs/{generation_id}.jpg",
        "model": "auto",
    })
    assert _posts(sim) == 1
    assert all(KEY not in r.text for r in (answer, page, stream))


async def _start_and_follow(
    web: httpx.AsyncClient,
) -> tuple[httpx.Response, httpx.Response, httpx.Response]:
    answer = await web.post(
        "/generations", data={"prompt": "A cat surfing", "duration": "5", "aspect_ratio": "9:16"}
    )
    assert answer.status_code == 303
    location = answer.headers["location"]
    return answer, await web.get(location), await web.get(f"{location}/events")


@pytest.mark.anyio
async def test_after_a_restart_the_id_is_listed_and_reattached_without_paying(
    running: Running, sim: Simulator
) -> None:
    async with running() as first:
        answer = await first.post("/generations", data={"prompt": "Slow zoom"})
    location = answer.headers["location"]
    generation_id = location.rsplit("/", 1)[1]
    # Done by now at Kolbo: a re-attached handle knows no poll hint (8 s) after its first poll.
    with contextlib.suppress(ValueError):  # unless it already ended
        sim.complete(generation_id)

    async with running() as again:  # a new instance: a new client, no handle in memory
        listed = (await again.get("/")).text
        page = (await again.get(location)).text
        events = _events((await again.get(f"{location}/events")).text)
    assert f'href="/generations/{generation_id}"' in listed
    assert "Slow zoom" in page
    assert events[-1][0] == "completed"
    assert _posts(sim) == 1


@pytest.mark.anyio
async def test_a_generation_started_elsewhere_is_followed_from_its_id(
    running: Running, sim: Simulator
) -> None:
    generation_id = sim.create_generation(key=KEY)
    sim.complete(generation_id)
    async with running() as web:
        page = (await web.get(f"/generations/{generation_id}")).text
        events = _events((await web.get(f"/generations/{generation_id}/events")).text)
    assert "started elsewhere" in page
    assert [name for name, _ in events] == ["retry", "status", "completed"]
    assert _posts(sim) == 0


@pytest.mark.parametrize(
    ("form", "shown"),
    [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "a cat", "duration": "five"}, "duration must be a number"),
        ({"prompt": "a cat", "aspect_ratio": "wide"}, "aspect_ratio"),
    ],
)
@pytest.mark.anyio
async def test_bad_input_is_shown_on_the_form_and_nothing_is_sent(
    running: Running, sim: Simulator, form: dict[str, str], shown: str
) -> None:
    async with running() as web:
        answer = await web.post("/generations", data=form)
    assert answer.status_code == 400
    assert 'class="error"' in answer.text and shown in answer.text
    assert form["prompt"] in answer.text  # the prompt is kept in the form
    assert _posts(sim) == 0


@pytest.mark.anyio
async def test_an_unknown_submission_outcome_is_never_resubmitted(
    running: Running, sim: Simulator
) -> None:
    sim.inject("generate", "gateway_502")  # created and charged, then the answer is lost
    async with running() as web:
        answer = await web.post("/generations", data={"prompt": "a cat"})
    assert answer.status_code == 502
    assert "Check your Kolbo dashboard before trying again" in answer.text
    assert _posts(sim) == 1 and len(sim.generations) == 1
    assert KEY not in answer.text


@pytest.mark.slow
@pytest.mark.anyio
async def test_failed_filtered_unknown_and_malformed_end_the_stream_with_a_message(
    running: Running,
) -> None:
    async with running() as web:
        answer = await web.post("/generations", data={"prompt": "[fail] a cat"})
        failed = await web.get(f"{answer.headers['location']}/events")
        answer = await web.post("/generations", data={"prompt": "[filtered] a cat"})
        filtered = await web.get(f"{answer.headers['location']}/events")
        unknown = await web.get(f"/generations/{'0' * 24}/events")
        malformed = await web.get("/generations/not%20an%20id/events")
    name, data = _events(failed.text)[-1]
    assert name == "failed" and data["state"] == "failed" and data["message"]
    name, data = _events(filtered.text)[-1]
    assert (name, data["state"]) == ("failed", "filtered")
    name, data = _events(unknown.text)[-1]
    assert name == "gone" and "does not know" in data["message"]
    name, data = _events(malformed.text)[-1]
    assert name == "gone"


@pytest.mark.anyio
async def test_an_unreadable_file_of_recent_generations_is_an_empty_list(
    running: Running, tmp_path: Path
) -> None:
    (tmp_path / "recent.json").write_text("{not json")
    async with running() as web:
        page = await web.get("/")
    assert page.status_code == 200 and "Recent" not in page.text


# -- as a user runs it -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("KOLBO_API_KEY", "KOLBO_BASE_URL", "KOLBO_API_URL", "KOLBO_API_BASE"):
        env.pop(name, None)
    return env


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_sandbox_mode_serves_a_whole_generation(web_app: ModuleType, tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "web_app.py"), "--sandbox", "--speed", "300",
         "--port", str(port), "--recent-file", str(tmp_path / "recent.json")],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode()
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the example did not start"
            time.sleep(0.05)
        assert "sandbox" in httpx.get(url).text

        submitted = httpx.post(f"{url}/generations", data={"prompt": "A drone over peaks"})
        assert submitted.status_code == 303
        events = _events(httpx.get(f"{url}{submitted.headers['location']}/events", timeout=20).text)
        name, data = events[-1]
        assert name == "completed"
        video = httpx.get(data["video_url"])
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        assert video.content[4:8] == b"ftyp"
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=10)[0].decode()
    # uvicorn ends by re-raising the signal it handled, as a process killed by it would.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output
    assert f"Kolbo web app on {url}" in output


def test_without_a_key_it_says_what_to_do(web_app: ModuleType, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "web_app.py")],
        env=_env(), capture_output=True, text=True, cwd=tmp_path, timeout=20, check=False,
    )
    assert done.returncode == 2
    assert "KOLBO_API_KEY" in done.stderr and "--sandbox" in done.stderr
    assert not (tmp_path / "kolbo-web-recent.json").exists()
