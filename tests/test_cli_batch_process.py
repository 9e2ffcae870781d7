"""`kolbo batch` as a real process: Ctrl-C (a real SIGINT) then the same command again, and
the live table on a pseudo-terminal.

The process talks HTTP to a simulator served by this test (`sim.serve()`), which outlives
both runs as Kolbo does, so what it saw is what was paid for and fetched.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kolbo_async.testing import Simulator

from . import forked

KEY = "kolbo_live_" + "d4" * 20


def posts(sim: Simulator) -> list[Any]:
    return [r for r in sim.requests if r.method == "POST" and "/generate/" in r.path]


def cdn_gets(sim: Simulator) -> list[Any]:
    return [r for r in sim.requests if r.method == "GET" and r.host == "cdn"]


@pytest.mark.slow
def test_sigint_then_rerun_pays_once_and_downloads_once(tmp_path: Path) -> None:
    """Ctrl-C after two videos: exit 130 and the command that resumes; that command (run
    as printed) finishes the batch: one POST per line overall, one CDN GET per video."""
    n = 8  # within the client's own 10 generations a minute: no pacing wait
    sim = Simulator(speed=100.0, api_key=KEY)
    sim.plan(processing_seconds=20, times=2)  # 0.2 s
    sim.plan(processing_seconds=300, times=n - 2)  # 3 s
    requests = tmp_path / "shots.jsonl"
    requests.write_text("".join(json.dumps({"prompt": f"shot {i}"}) + "\n" for i in range(n)))
    argv = ["batch", str(requests), "--journal", str(tmp_path / "shots.db"),
            "--download-dir", str(tmp_path / "videos")]  # fmt: skip
    with sim.serve() as base_url:
        env = {**os.environ, "KOLBO_BASE_URL": base_url, "KOLBO_API_KEY": KEY}
        proc = forked.Popen(
            [sys.executable, "-m", "kolbo_async", *argv],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        first = [proc.stdout.readline(), proc.stdout.readline()]
        assert all(" completed " in line for line in first), first
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        assert KEY not in err + rest
        paid = len(posts(sim))
        assert paid == n  # all were in flight (concurrency 8): none is sent again below
        command = next(line.strip() for line in err.splitlines() if line.startswith("  kolbo "))
        assert shlex.split(command)[1:] == argv

        again = forked.run(
            [sys.executable, "-m", "kolbo_async", *shlex.split(command)[1:]],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert len(posts(sim)) == n  # nothing paid twice
        assert len(cdn_gets(sim)) == n  # every video fetched once
    videos = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert len(videos) == n
    assert sorted(int(name.split("-")[0]) for name in videos) == list(range(n))
    assert again.stdout.count("(already there)") == 2
    assert f"{n} completed, 0 failed" in again.stderr


@pytest.mark.slow
def test_live_table_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal: a table of items by state, redrawn in place, with credits and an ETA."""
    requests = tmp_path / "shots.jsonl"
    requests.write_text("".join(json.dumps({"prompt": f"shot {i}"}) + "\n" for i in range(6)))
    env = {**os.environ, "KOLBO_SANDBOX_SPEED": "100", "COLUMNS": "100", "LINES": "40"}
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execve(
            sys.executable,
            [sys.executable, "-m", "kolbo_async", "--sandbox", "batch", str(requests),
             "--download-dir", str(tmp_path / "videos")],
            env,
        )  # fmt: skip
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
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-3000:]
    for words in ("state", "items", "queued", "running", "downloading", "completed", "failed",
                  "credits charged", "ETA", "6/6 done"):  # fmt: skip
        assert words in text, words
    assert "\x1b[" in text  # redrawn in place
    assert len(list((tmp_path / "videos").iterdir())) == 6


STUCK_AFTER_TWO_PRESSES = """
import asyncio, signal, sys
from kolbo_async import _cli
from kolbo_async._cli_batch_view import View

real_run = _cli._run


async def run_with_a_stuck_task(*args):
    async def stuck():  # a wait whose waker the second press ended: it never returns
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass

    asyncio.ensure_future(stuck())
    return await real_run(*args)


shown = View.outcome


def outcome(self, done, tally):
    shown(self, done, tally)
    signal.raise_signal(signal.SIGINT)
    signal.raise_signal(signal.SIGINT)


_cli._run = run_with_a_stuck_task
View.outcome = outcome
sys.argv = ["kolbo", "--sandbox", "batch", sys.argv[1], "--journal", sys.argv[2]]
_cli.run()
"""


@pytest.mark.slow
def test_a_second_ctrl_c_ends_a_run_whose_shutdown_hangs(tmp_path: Path) -> None:
    """Two presses while a task nothing can end is alive (as a second press can leave one:
    asyncio's shutdown then waits for it forever, deaf to more presses and to SIGTERM):
    `kolbo` ends itself `QUIT_NOW_WITHIN` seconds later, exit 130, saying so."""
    from kolbo_async._cli import QUIT_NOW_WITHIN

    shots = tmp_path / "shots.jsonl"
    shots.write_text("".join(json.dumps({"prompt": f"shot {i}"}) + "\n" for i in range(3)))
    script = tmp_path / "stuck.py"
    script.write_text(STUCK_AFTER_TWO_PRESSES)
    proc = forked.Popen(
        [sys.executable, str(script), str(shots), str(tmp_path / "j.db")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _, err = proc.communicate(timeout=QUIT_NOW_WITHIN + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 130, err
    assert "kolbo: quit at once (second Ctrl-C)" in err
    assert "Traceback" not in err
