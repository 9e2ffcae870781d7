"""examples/web_app.py end to end in a real headless Chromium, against the simulator.

The browser is Debian's ``chromium`` (``.ci/run`` installs it), driven through the DevTools
protocol over ``--remote-debugging-pipe``: two pipes and NUL-separated JSON, so the test needs
no Python package, no driver binary and no download (playwright and selenium both would).

The simulator runs in this process (``Simulator.serve()``, a fast clock); the example runs as
a user runs it, ``python examples/web_app.py``, in a subprocess on a free loopback port, with
``KOLBO_BASE_URL`` pointing at the simulator. Restarting that subprocess is a real restart.
Skipped when chromium is absent, except in CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from kolbo_async.testing import Simulator

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "web_app.py"
KEY = "kolbo_live_webtest_0123456789abcdef"
#: Simulated seconds per real second. A generation is processing for 1,200 simulated seconds
#: (a minute of real time, so it is surely still running across the restart); the test
#: finishes it with `Simulator.complete` once the re-attached progress has been seen.
SPEED = 20.0
PROCESSING = 1200.0

T = TypeVar("T")


def _require(what: str, present: bool) -> None:
    if present:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing in CI: .ci/run installs it")
    pytest.skip(f"{what} is not installed")


# -- a minimal DevTools client over --remote-debugging-pipe -----------------------------------


class Browser:
    """Headless chromium, spoken to over fds 3 (commands in) and 4 (answers and events out)."""

    def __init__(self, executable: str, workdir: Path) -> None:
        to_chromium = os.pipe()
        from_chromium = os.pipe()
        # Far from 3 and 4, so that the dup2s below never clobber one another.
        child_in = fcntl.fcntl(to_chromium[0], fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_chromium[1], fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_chromium[0])
        os.close(from_chromium[1])
        self.log_path = workdir / "chromium.log"
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        devnull = os.open(os.devnull, os.O_RDONLY)
        args = [
            executable,
            "--headless",
            "--no-sandbox",  # root in a container: the setuid sandbox cannot start
            "--disable-gpu",
            "--remote-debugging-pipe",
            f"--user-data-dir={workdir / 'profile'}",
            "--no-first-run",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            "--window-size=900,860",
            "about:blank",
        ]
        try:
            # posix_spawn, not Popen: the pipes must land on fds 3 and 4 exactly, and a
            # preexec_fn is unsafe with the simulator's server thread running.
            self.pid = os.posix_spawn(
                executable,
                args,
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, devnull, 0),
                    (os.POSIX_SPAWN_DUP2, log, 1),
                    (os.POSIX_SPAWN_DUP2, log, 2),
                    (os.POSIX_SPAWN_DUP2, child_in, 3),
                    (os.POSIX_SPAWN_DUP2, child_out, 4),
                ],
                setsid=True,  # its own process group, so that close() ends every helper
            )
        finally:
            for fd in (child_in, child_out, log, devnull):
                os.close(fd)
        # .ci/run stops a group still listed here when it ends (a test killed mid-way).
        pids_dir = os.environ.get("KOLBO_BROWSER_PIDS_DIR")
        self._pid_file = Path(pids_dir) / f"{self.pid}.pgid" if pids_dir else None
        if self._pid_file is not None:
            self._pid_file.write_text(str(self.pid))
        self._out = to_chromium[1]
        self._in = from_chromium[0]
        self._ids = iter(range(1, 1 << 30))
        self._waiting: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()
        self.session = ""

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._in, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                waiter = self._waiting.pop(message["id"], None) if "id" in message else None
                if waiter is not None:
                    waiter.put(message)
        for waiter in list(self._waiting.values()):
            waiter.put({"error": {"message": "chromium exited"}})

    def send(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        """One DevTools command on the page's session (``session=None``: the browser's)."""
        answer: queue.Queue[dict[str, Any]] = queue.Queue()
        message: dict[str, Any] = {"method": method, "params": params or {}}
        session = kw.get("session", self.session)
        if session:
            message["sessionId"] = session
        with self._lock:
            message["id"] = next(self._ids)
            self._waiting[message["id"]] = answer
            os.write(self._out, json.dumps(message).encode() + b"\0")
        reply = answer.get(timeout=kw.get("timeout", 15))
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def open_page(self) -> None:
        # The first command waits for the browser to start: slow on a loaded machine.
        target = self.send(
            "Target.createTarget", {"url": "about:blank"}, session=None, timeout=60
        )
        attached = self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
            session=None,
        )
        self.session = attached["sessionId"]
        self.send("Page.enable")

    def js(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        x, y = self.js(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    def type_into(self, selector: str, text: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", {"text": text})

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, queue.Empty, OSError):
            self.send("Browser.close", session=None, timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        if self._pid_file is not None:
            self._pid_file.unlink(missing_ok=True)
        os.close(self._out)
        self._reader.join(timeout=5)
        os.close(self._in)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 15.0) -> T:
    """Poll `probe` (every 50 ms of real time) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {value!r})")
        time.sleep(0.05)


# -- the example as a user runs it ---------------------------------------------------------


class App:
    """``python examples/web_app.py`` on a loopback port, restartable on the same port."""

    def __init__(self, base_url: str, workdir: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.env = {**os.environ, "KOLBO_API_KEY": KEY, "KOLBO_BASE_URL": base_url}
        self.env.pop("KOLBO_API_URL", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        log = open(self.workdir / f"app-{self.runs}.log", "wb")  # noqa: SIM115 - the child's
        with log:
            self.proc = subprocess.Popen(
                [sys.executable, str(EXAMPLE), "--port", str(self.port),
                 "--recent-file", str(self.workdir / "recent.json")],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
            )

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.logs()
            try:
                return httpx.get(self.url + "/", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("the example to serve", ready, timeout=20)

    def stop(self) -> None:
        """What a deploy does: SIGTERM, and wait for the process to end."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("the example did not stop on SIGTERM") from None

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("app-*.log")))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    executable = shutil.which("chromium")
    _require("chromium (apt-get install chromium)", executable is not None)
    assert executable is not None
    chromium = Browser(executable, tmp_path)
    try:
        chromium.open_page()
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def app_deps() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        _require("the 'web' extra (pip install -e '.[web]')", False)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.usefixtures("app_deps")
def test_prompt_progress_video_and_restart_in_chromium(browser: Browser, tmp_path: Path) -> None:
    sim = Simulator(api_key=KEY, speed=SPEED, processing_seconds=PROCESSING)
    with sim.serve() as base_url:
        app = App(base_url, tmp_path)
        app.start()
        try:
            _drive(browser, app, sim, tmp_path)
        finally:
            app.stop()
        logs = app.logs()
    assert KEY not in logs


def _state(browser: Browser) -> dict[str, Any]:
    """What the page shows now (keys absent while it loads: undefined is not returned)."""
    shown = {"state": None, "bar": 0, "video": None}
    # Evaluated while the page navigates, it raises: then nothing is shown yet.
    with contextlib.suppress(RuntimeError):
        shown |= browser.js(
        """(() => {
            const v = document.getElementById("video");
            const text = (id) => document.getElementById(id)?.textContent;
            return {path: location.pathname, id: text("generation-id"), state: text("state"),
                    percent: text("percent"),
                    bar: document.getElementById("bar")?.value,
                    video: v && {src: v.currentSrc, ready: v.readyState, width: v.videoWidth,
                                 hidden: v.hidden, error: v.error && v.error.code}};
        })()"""
        ) or {}
    return shown


def _drive(browser: Browser, app: App, sim: Simulator, tmp_path: Path) -> None:
    prompt = "A drone over snowy peaks at golden hour"
    browser.send("Page.navigate", {"url": app.url + "/"})
    wait_for("the form", lambda: browser.js("!!document.getElementById('generate')"))
    browser.type_into("#prompt", prompt)
    browser.click("#generate")

    # Submitted: the page moved to /generations/{id} and streams progress from the handle.
    first = wait_for(
        "progress above 0 %",
        lambda: (s := _state(browser))["state"] == "processing" and s["bar"] > 0 and s,
    )
    generation_id = first["id"]
    assert first["path"] == f"/generations/{generation_id}"
    assert list(sim.generations) == [generation_id]
    assert sim.generations[generation_id].request["prompt"] == prompt

    browser.screenshot(tmp_path / "web_app-progress.png")

    # Restart the server while the generation runs; the browser notices the stream drop.
    app.stop()
    before = _state(browser)
    # A busy machine (CI's other test processes) can keep Chromium from noticing for a while.
    wait_for(
        "the page to notice", lambda: _state(browser)["state"] == "reconnecting", timeout=30
    )
    restarted_at = sim.clock.now()
    app.start()

    # The new process re-attaches by id (no POST) and the same page's progress goes on.
    resumed = wait_for(
        "progress to resume after the restart",
        lambda: (s := _state(browser))["state"] == "processing"
        and s["bar"] > before["bar"] and s,
    )
    assert resumed["id"] == generation_id
    polls_after = [
        r for r in sim.requests
        if r.time >= restarted_at and r.path == f"/api/v1/generate/{generation_id}/status"
    ]
    assert polls_after, "the restarted app never polled the generation"
    assert [r.path for r in sim.requests if r.method == "POST"] == [
        "/api/v1/generate/video"
    ]  # one POST, before the restart: never paid twice

    # Kolbo finishes it: 100 %, and the <video> loads the CDN's file (a re-attached handle
    # has no submission hint, so its next poll is up to 8.8 s away).
    sim.complete(generation_id)
    done = wait_for(
        "the video to load",
        lambda: (s := _state(browser))["video"] and s["video"]["ready"] >= 2 and s,
        timeout=20,
    )
    assert done["state"] == "completed"
    assert done["percent"] == "100 %"
    assert done["bar"] == 100
    assert done["video"]["src"] == f"{sim.cdn_url}/videos/{generation_id}.mp4"
    assert done["video"]["width"] > 0 and not done["video"]["hidden"]
    assert any(r.host == "cdn" and r.path.endswith(f"{generation_id}.mp4") for r in sim.requests)
    # The restarted front page still lists it (the JSON file of recent generations).
    assert generation_id in httpx.get(app.url + "/").text
    assert KEY not in browser.js("document.documentElement.outerHTML")

    shot = browser.screenshot(tmp_path / "web_app.png")
    assert shot.stat().st_size > 1000
    print(f"screenshot: {shot}")
