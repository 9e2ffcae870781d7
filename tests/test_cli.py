"""The `kolbo` command, driven as a user would: in-process, in a subprocess, and on a pty."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kolbo_async._cli import main

from . import forked

KEY = "kolbo_live_" + "e5" * 20
# The first curl example of Kolbo's video docs page (../shared/kolbo-video-docs.txt), verbatim.
DOCS_CURL = """curl -X POST https://api.kolbo.ai/api/v1/generate/video \\
-H "X-API-Key: kolbo_live_YOUR_API_KEY" \\
-H "Content-Type: application/json" \\
-d '{
"prompt": "A drone flying over a snowy mountain range at golden hour",
"duration": 5,
"aspect_ratio": "16:9"
}'"""


@pytest.fixture(autouse=True)
def _fast_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """A faster sandbox clock than the demo's, so the suite stays quick."""
    monkeypatch.setenv("KOLBO_SANDBOX_SPEED", "300")


def run(*argv: str) -> tuple[int, str, str]:
    """Run `kolbo` in-process; return (exit code, stdout, stderr)."""
    out = io.StringIO()
    err = io.StringIO()
    old = sys.stderr
    sys.stderr = err
    try:
        code = main(list(argv), stdout=out)
    finally:
        sys.stderr = old
    return code, out.getvalue(), err.getvalue()


class TestInProcess:
    def test_sandbox_generate_downloads_a_playable_file(self, tmp_path: Path) -> None:
        """The README's demo: a whole generation in the sandbox leaves an MP4 behind."""
        target = tmp_path / "drone.mp4"
        code, out, err = run(
            "--sandbox", "generate", "A drone over snowy peaks", "--download", str(target)
        )
        assert code == 0, err
        assert out.strip() == str(target)
        data = target.read_bytes()
        assert data[4:8] == b"ftyp"  # an MP4 container
        lines = err.splitlines()
        assert lines[0].startswith("Generation ")
        assert any(line.startswith("completed") for line in lines)
        assert any(line.startswith("processing") for line in lines)

    def test_json_output_is_json_only(self) -> None:
        """--json prints JSON lines only (the submission, then the outcome), nothing on stderr."""
        code, out, err = run("--sandbox", "generate", "a cat", "--json")
        assert code == 0
        assert err == ""
        submitted, outcome = (json.loads(line) for line in out.splitlines())
        assert submitted["generation_id"] == outcome["generation_id"]
        assert outcome["state"] == "completed"

    def test_failed_generation_exits_1(self) -> None:
        """A failed generation is exit code 1 with one line on stderr."""
        code, _, err = run("--sandbox", "generate", "a cat [fail]")
        assert code == 1
        assert "failed" in err.splitlines()[-1]
        assert "Traceback" not in err

    def test_models_table(self) -> None:
        """`kolbo models` prints a table with prices, durations and ratios."""
        code, out, _ = run("--sandbox", "models")
        assert code == 0
        header = out.splitlines()[0]
        for column in ("IDENTIFIER", "NAME", "CREDITS/S", "DURATIONS", "ASPECT RATIOS"):
            assert column in header

    def test_credits_and_no_wait_status_cancel(self) -> None:
        """credits, generate --no-wait and status work (each sandbox run is its own world)."""
        code, out, _ = run("--sandbox", "credits")
        assert code == 0
        assert "total:" in out
        code, out, _ = run("--sandbox", "generate", "a cat", "--no-wait")
        assert code == 0
        assert len(out.strip()) == 24

    def test_usage_error_exits_2(self) -> None:
        """A bad argument is exit code 2."""
        code, _, err = run("--sandbox", "generate", "a cat", "--aspect-ratio", "wide")
        assert code == 2
        assert "aspect_ratio" in err
        with pytest.raises(SystemExit) as info:
            run("generate")
        assert info.value.code == 2

    def test_missing_key_is_one_clear_line(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a key: a usage error (exit 2), one line naming KOLBO_API_KEY, no SDK words."""
        monkeypatch.setenv("KOLBO_API_KEY", "  ")
        code, _, err = run("credits")
        assert code == 2
        assert "KOLBO_API_KEY" in err
        assert "api_key=" not in err
        assert len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def sandbox_server() -> object:
    """`kolbo sandbox` running as a real server in a subprocess."""
    proc = forked.Popen(
        [sys.executable, "-m", "kolbo_async", "sandbox", "--port", "0", "--require-key", KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    url = line.split(" at ")[1].split(" ")[0]
    yield url
    proc.send_signal(2)
    proc.communicate(timeout=10)


class TestSubprocess:
    def _env(self, base_url: str, key: str = KEY) -> dict[str, str]:
        env = dict(os.environ)
        env.update(KOLBO_BASE_URL=base_url, KOLBO_API_KEY=key)
        return env

    @pytest.mark.slow
    def test_generate_against_the_sandbox_server(self, sandbox_server: str) -> None:
        """The installed command talks HTTP to `kolbo sandbox` without a TTY: plain lines."""
        proc = forked.run(
            [sys.executable, "-m", "kolbo_async", "generate", "a cat"],
            env=self._env(sandbox_server),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "\r" not in proc.stderr
        assert proc.stdout.strip().startswith("http")

    def test_docs_curl_example_against_the_sandbox(self) -> None:
        """Kolbo's own curl example, placeholder key included, works with only the URL changed."""
        proc = forked.Popen(
            [sys.executable, "-m", "kolbo_async", "sandbox", "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert proc.stdout is not None
            base_url = proc.stdout.readline().split(" at ")[1].split(" ")[0]
            command = DOCS_CURL.replace("https://api.kolbo.ai", base_url)
            done = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=30, check=True
            )
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=10)
        answer = json.loads(done.stdout)
        assert answer["success"] is True
        assert answer["poll_url"] == f"/api/v1/generate/{answer['generation_id']}/status"

    def test_bad_key_exit_3_without_the_key(self, sandbox_server: str) -> None:
        """A wrong key is exit 3, one line, and the key is not printed."""
        wrong = "kolbo_live_" + "f" * 40
        proc = forked.run(
            [sys.executable, "-m", "kolbo_async", "credits"],
            env=self._env(sandbox_server, wrong),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 3
        assert wrong not in proc.stderr + proc.stdout
        assert "Traceback" not in proc.stderr

    def test_ctrl_c_leaves_the_generation_running(self, sandbox_server: str) -> None:
        """Ctrl-C exits 130, names the id to follow, and cancels nothing at Kolbo."""
        import httpx

        env = self._env(sandbox_server)
        proc = forked.Popen(
            [sys.executable, "-m", "kolbo_async", "generate", "a cat", "--duration", "10"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("Generation ")
        gen_id = first.split()[1]
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=20)
        assert proc.returncode == 130
        assert f"kolbo status {gen_id} --wait" in rest
        assert "created and charged" in rest
        assert "Traceback" not in rest
        status = httpx.get(
            f"{sandbox_server}/api/v1/generate/{gen_id}/status", headers={"X-API-Key": KEY}
        ).json()
        assert status["state"] in ("pending", "processing", "completed")

    @pytest.mark.slow
    def test_pseudo_tty_draws_a_live_bar(self, tmp_path: Path) -> None:
        """On a terminal the progress is redrawn in place rather than printed line by line."""
        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - the child
            os.execv(
                sys.executable,
                [sys.executable, "-m", "kolbo_async", "--sandbox", "generate", "a cat",
                 "--download", str(tmp_path / "cat.mp4")],
            )
        output = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, output
        assert b"\r" in output or b"\x1b[" in output
        assert (tmp_path / "cat.mp4").exists()
