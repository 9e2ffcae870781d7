"""`tests.forked` gives a child what a fresh interpreter would: each program below runs both
ways and must end the same (return code, stdout, the last line of stderr)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from . import forked

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX fork"), pytest.mark.slow]

PROGRAMS = {
    "argv, cwd, path, name": "import os, sys; print(sys.argv, repr(sys.path[0]), __name__, "
    "os.getcwd())",
    "exit code": "raise SystemExit(7)",
    "exception": "print('before'); raise ValueError('boom')",
    "uncaught Ctrl-C": "raise KeyboardInterrupt",
    "stdin": "import sys; print(sys.stdin.read().upper())",
    "environment": "import os; print(os.environ.get('FORKED_TEST'), 'PYTHONHASHSEED' in os.environ)",
    "threads then atexit": "import atexit, threading, time; atexit.register(print, 'atexit'); "
    "threading.Thread(target=lambda: (time.sleep(0.2), print('thread'))).start()",
    "finalizer at exit": "class A:\n    def __del__(self): print('del')\na = A()",
    "stderr line-buffered, stdout not": "import os, sys; sys.stderr.write('e\\n'); "
    "sys.stdout.write('o\\n'); os._exit(0)",
    "SIGPIPE ignored, SIGINT Python's": "import signal; print(signal.getsignal(signal.SIGPIPE), "
    "signal.getsignal(signal.SIGINT))",
    "module": None,
}


def outcome(runner: Any, code: str | None, tmp_path: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["FORKED_TEST"] = "yes"
    argv = ["-m", "json.tool", "--compact"] if code is None else ["-c", code, "a", "b"]
    done = runner(
        [sys.executable, *argv], input='{"a": [1, 2]}', capture_output=True, text=True,
        cwd=tmp_path, env=env, timeout=30,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr.strip().splitlines()[-1:]


@pytest.mark.parametrize("program", PROGRAMS)
def test_a_forked_child_ends_as_a_fresh_one(program: str, tmp_path: Path) -> None:
    code = PROGRAMS[program]
    fresh = outcome(subprocess.run, code, tmp_path)
    assert outcome(forked.run, code, tmp_path) == fresh


def test_an_ended_child_keeps_its_pid_until_waited_for() -> None:
    """As with subprocess: a test may still signal a child that died (kill -9, SIGCONT)."""
    proc = forked.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    os.kill(proc.pid, signal.SIGKILL)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGCONT)  # a zombie still takes signals
    assert proc.wait(10) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while True:  # reaped once its end was read
        try:
            os.kill(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_wait_with_a_timeout_and_poll() -> None:
    proc = forked.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                        stdin=subprocess.PIPE)  # fmt: skip
    assert proc.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.2)
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(10) == 0
    assert proc.poll() == 0


def test_what_a_forked_child_cannot_do_is_refused() -> None:
    for kwargs in ({"start_new_session": True}, {"shell": True}, {"pass_fds": (0,)}):
        with pytest.raises(ValueError, match="cannot start"):
            forked.Popen([sys.executable, "-c", "pass"], **kwargs)
    with pytest.raises(ValueError, match="cannot start"):
        forked.Popen(["sh", "-c", "true"])
