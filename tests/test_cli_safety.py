"""The `kolbo` command never charges for a mistake in its own command line, and never loses a
paid generation's id: not on a later failure, not on Ctrl-C, not when stdout closes early.

In-process runs talk to a simulator the test holds (the CLI's client factory is pointed at
it); the simulator's own record of requests is what is counted. Ctrl-C and closed pipes cross a real
process boundary, so those tests run `python -m kolbo_async` against `sim.serve()`.
"""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kolbo_async
from kolbo_async import KolboError
from kolbo_async._cli import main
from kolbo_async._cli_outcome import EXIT_BROKEN_PIPE
from kolbo_async.testing import Simulator

from . import forked

KEY = "kolbo_live_" + "c3" * 20


def run(*argv: str, stdout: io.TextIOBase | None = None) -> tuple[int, str, str]:
    """Run `kolbo` in-process; return (exit code, stdout, stderr); argparse errors included."""
    out = stdout if stdout is not None else io.StringIO()
    err = io.StringIO()
    old = sys.stderr
    sys.stderr = err
    try:
        code = main(list(argv), stdout=out)  # type: ignore[arg-type]
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    finally:
        sys.stderr = old
    text = out.getvalue() if isinstance(out, io.StringIO) else ""
    return code, text, err.getvalue()


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Simulator:
    """The simulator every in-process `kolbo` run talks to (as `--sandbox` does, but kept)."""
    simulator = Simulator(speed=300.0)
    monkeypatch.setattr("kolbo_async._cli._client", lambda args: simulator.client(KEY))
    return simulator


def generation_posts(sim: Simulator) -> list[object]:
    return [r for r in sim.requests if r.method == "POST" and "/generate/" in r.path]


def json_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


class TestNothingPaidForABadCommandLine:
    @pytest.mark.parametrize("value", ["-5", "0", "nan", "inf", "-inf", "soon"])
    def test_bad_timeout(self, sim: Simulator, value: str) -> None:
        """--timeout must be a positive, finite number of seconds: exit 2, no request at all."""
        code, _, err = run("generate", "a cat", f"--timeout={value}")
        assert code == 2
        assert "--timeout" in err
        assert sim.requests == []

    def test_download_over_an_existing_file(self, sim: Simulator, tmp_path: Path) -> None:
        """An existing file is refused up front (naming --overwrite), and left as it was."""
        target = tmp_path / "drone.mp4"
        target.write_bytes(b"mine")
        code, _, err = run("generate", "a cat", "--download", str(target))
        assert code == 2
        assert "--overwrite" in err
        assert target.read_bytes() == b"mine"
        assert sim.requests == []

    @pytest.mark.parametrize("name", ["missing/drone.mp4", "missing/", "file.txt/drone.mp4"])
    def test_download_into_a_missing_directory(
        self, sim: Simulator, tmp_path: Path, name: str
    ) -> None:
        """A directory that does not exist (or is a file) is exit 2 before the POST."""
        (tmp_path / "file.txt").write_text("x")
        code, _, err = run("generate", "a cat", "--download", f"{tmp_path}/{name}")
        assert code == 2
        assert "does not exist" in err
        assert "Traceback" not in err
        assert sim.requests == []

    @pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
    def test_download_into_a_read_only_directory(self, sim: Simulator, tmp_path: Path) -> None:
        """A directory that takes no new file is exit 2 before the POST."""
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, _, err = run("generate", "a cat", "--download", str(locked / "a.mp4"))
        assert code == 2
        assert "cannot write" in err
        assert sim.requests == []

    def test_download_with_no_wait(self, sim: Simulator, tmp_path: Path) -> None:
        """--no-wait would never download: refused, not silently ignored after paying."""
        code, _, err = run("generate", "a cat", "--no-wait", "--download", str(tmp_path / "a"))
        assert code == 2
        assert "--no-wait" in err
        assert sim.requests == []

    @pytest.mark.parametrize(
        ("args", "field"),
        [
            (["--duration", "nan"], "duration"),
            (["--duration", "0"], "duration"),
            (["--duration", "-1"], "duration"),
            (["--duration", "inf"], "duration"),
            (["--aspect-ratio", "wide"], "aspect_ratio"),
            (["--model", " "], "model"),
            (["--image", "ftp://example.com/a.png"], "image_url"),
            (["--image", "/no/such/photo.png"], "image_url"),
        ],
    )
    def test_request_fields(self, sim: Simulator, args: list[str], field: str) -> None:
        """Fields the SDK validates are refused by it before any byte goes out: exit 2."""
        code, _, err = run("generate", "a cat", *args)
        assert code == 2, err
        assert field in err
        assert sim.requests == []

    def test_blank_prompt(self, sim: Simulator) -> None:
        code, _, err = run("generate", "   ")
        assert (code, sim.requests) == (2, [])
        assert "prompt" in err


class TestDownloadTarget:
    def test_directory_names_the_file_after_the_id(self, sim: Simulator, tmp_path: Path) -> None:
        """An existing directory is accepted: the video lands in it as ID.mp4."""
        code, out, err = run("generate", "a cat", "--download", str(tmp_path))
        assert code == 0, err
        (gen_id,) = sim.generations
        target = tmp_path / f"{gen_id}.mp4"
        assert out.strip() == str(target)
        assert target.read_bytes()[4:8] == b"ftyp"
        assert len(generation_posts(sim)) == 1

    @pytest.mark.slow
    def test_overwrite_replaces_an_existing_file(self, sim: Simulator, tmp_path: Path) -> None:
        target = tmp_path / "drone.mp4"
        target.write_bytes(b"old")
        code, _, err = run("generate", "a cat", "--download", str(target), "--overwrite")
        assert code == 0, err
        assert target.read_bytes()[4:8] == b"ftyp"
        assert len(generation_posts(sim)) == 1

    def test_download_command_into_a_directory(self, sim: Simulator, tmp_path: Path) -> None:
        """`kolbo download ID DIR` names the file after the id too (.jpg for a thumbnail)."""
        gen_id = sim.create_generation("a cat", key=KEY)
        sim.complete(gen_id)
        assert run("download", gen_id, str(tmp_path))[0] == 0
        assert run("download", gen_id, str(tmp_path), "--thumbnail")[0] == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == [f"{gen_id}.jpg", f"{gen_id}.mp4"]

    def test_download_command_checks_before_any_request(
        self, sim: Simulator, tmp_path: Path
    ) -> None:
        code, _, err = run("download", "abc", str(tmp_path / "missing" / "a.mp4"))
        assert (code, sim.requests) == (2, [])
        assert "does not exist" in err


class TestJsonAlwaysNamesThePaidGeneration:
    def _ids(self, out: str) -> set[object]:
        lines = json_lines(out)
        assert lines, "no JSON line on stdout"
        return {line["generation_id"] for line in lines}

    def test_first_line_is_the_id_as_soon_as_kolbo_answers(self, sim: Simulator) -> None:
        code, out, err = run("generate", "a cat", "--json")
        assert (code, err) == (0, "")
        first, last = json_lines(out)
        assert first["generation_id"] == last["generation_id"] == next(iter(sim.generations))
        assert first["credits_charged"] == 35
        assert last["state"] == "completed"

    def test_timeout(self, sim: Simulator) -> None:
        """A wait that gives up still names the generation, and the last line says why."""
        code, out, err = run("generate", "a cat", "--json", "--timeout", "0.05")
        assert code == 3
        assert self._ids(out) == set(sim.generations)
        assert "did not finish" in str(json_lines(out)[-1]["error"])
        assert "kolbo status" in err
        assert len(generation_posts(sim)) == 1

    def test_failure(self, sim: Simulator) -> None:
        code, out, _ = run("generate", "a cat [fail]", "--json")
        assert code == 1
        assert self._ids(out) == set(sim.generations)
        assert json_lines(out)[-1]["state"] == "failed"

    @pytest.mark.slow
    @pytest.mark.parametrize(
        "error", [KolboError("CDN refused"), OSError(28, "No space left on device")]
    )
    def test_download_error(
        self, sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
    ) -> None:
        """A download that fails after the generation completed: the id and its URLs remain."""

        async def broken(*args: object, **kwargs: object) -> None:
            raise error

        monkeypatch.setattr(kolbo_async.AsyncGeneration, "download", broken)
        code, out, err = run("generate", "a cat", "--json", "--download", str(tmp_path))
        assert code == 3
        assert self._ids(out) == set(sim.generations)
        last = json_lines(out)[-1]
        assert last["state"] == "completed"
        assert last["result"]["urls"]  # type: ignore[index]
        assert f"kolbo download {next(iter(sim.generations))}" in err

    def test_no_wait(self, sim: Simulator) -> None:
        code, out, _ = run("generate", "a cat", "--json", "--no-wait")
        assert code == 0
        assert self._ids(out) == set(sim.generations)


class TestSandboxSpeed:
    @pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "fast"])
    def test_speed_option(self, value: str) -> None:
        code, _, err = run("sandbox", f"--speed={value}", "--port", "0")
        assert code == 2
        assert "--speed" in err
        assert "Traceback" not in err

    @pytest.mark.parametrize("command", [["sandbox", "--port", "0"], ["--sandbox", "models"]])
    def test_speed_variable(self, monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
        monkeypatch.setenv("KOLBO_SANDBOX_SPEED", "0")
        code, _, err = run(*command)
        assert code == 2
        assert "KOLBO_SANDBOX_SPEED" in err
        assert "Traceback" not in err

    def test_port_out_of_range(self) -> None:
        assert run("sandbox", "--port", "70000")[0] == 2


class _ClosedPipe(io.StringIO):
    """A stdout whose reader has gone."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


class TestBrokenPipe:
    def test_in_process(self, sim: Simulator) -> None:
        """A closed stdout is a quiet exit 141, not an API error."""
        code, _, err = run("models", stdout=_ClosedPipe())
        assert (code, err) == (EXIT_BROKEN_PIPE, "")

    def _closed_pipe_run(self, *argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        read, write = os.pipe()
        os.close(read)  # the reader is gone before kolbo writes a byte
        try:
            return forked.run(
                [sys.executable, "-m", "kolbo_async", *argv],
                stdout=write, stderr=subprocess.PIPE, text=True, env=env, timeout=60,
                check=False,
            )
        finally:
            os.close(write)

    @pytest.mark.parametrize("unbuffered", ["1", ""])
    def test_real_pipe_closed_early(self, unbuffered: str) -> None:
        env = dict(os.environ, KOLBO_SANDBOX_SPEED="300", PYTHONUNBUFFERED=unbuffered)
        proc = self._closed_pipe_run("--sandbox", "models", env=env)
        assert proc.returncode == EXIT_BROKEN_PIPE
        assert proc.stderr == ""

    @pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"]])
    def test_help_into_a_closed_pipe(self, argv: list[str]) -> None:
        """argparse's output is buffered on a pipe and only fails at the final flush."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        proc = self._closed_pipe_run(*argv, env=env)
        assert (proc.returncode, proc.stderr) == (EXIT_BROKEN_PIPE, "")

    def test_real_pipe_closed_with_a_paid_generation(self) -> None:
        """Quiet, except for the one thing that must not be lost: the paid generation's id."""
        sim = Simulator(speed=300.0)
        with sim.serve() as base_url:
            env = dict(os.environ, KOLBO_BASE_URL=base_url, KOLBO_API_KEY=KEY)
            proc = self._closed_pipe_run("generate", "a cat", "--json", env=env)
        assert proc.returncode == EXIT_BROKEN_PIPE
        (gen_id,) = sim.generations
        assert f"kolbo status {gen_id} --wait" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(generation_posts(sim)) == 1


class TestCtrlCWhileThePostIsOnTheWire:
    """SIGINT while Kolbo has the POST and has not answered yet (a slow answer)."""

    def _start(self, sim: Simulator, base_url: str, *extra: str) -> subprocess.Popen[str]:
        env = dict(os.environ, KOLBO_BASE_URL=base_url, KOLBO_API_KEY=KEY)
        proc = forked.Popen(
            [sys.executable, "-m", "kolbo_async", "generate", "a cat", *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 30
        while not generation_posts(sim):  # Kolbo has the request: it is creating the video
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        return proc

    @pytest.mark.slow
    def test_waits_for_the_answer_and_names_the_id(self) -> None:
        sim = Simulator(speed=300.0)
        sim.faults.slow_seconds = 1.0
        sim.inject("generate", "slow")
        with sim.serve() as base_url:
            proc = self._start(sim, base_url, "--json")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130
        (gen_id,) = sim.generations
        assert "created and charged" in err
        assert f"kolbo status {gen_id} --wait" in err
        assert f"kolbo download {gen_id}" in err
        assert "Traceback" not in err
        assert json_lines(out)[-1]["generation_id"] == gen_id
        assert len(generation_posts(sim)) == 1

    @pytest.mark.slow
    def test_second_ctrl_c_quits_and_says_it_may_be_charged(self) -> None:
        sim = Simulator(speed=300.0)
        # Far longer than a loaded machine needs to quit, so that the answer never wins.
        sim.faults.slow_seconds = 15.0
        sim.inject("generate", "slow")
        with sim.serve() as base_url:
            proc = self._start(sim, base_url)
            proc.send_signal(signal.SIGINT)
            assert proc.stderr is not None
            assert "waiting for Kolbo's answer" in proc.stderr.readline()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "may have been created and charged" in err
        assert "Traceback" not in err


def _shell_run(
    redirect: str, *argv: str, env: dict[str, str], stdout: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    """Run `python -m kolbo_async ARGV` with a shell redirection such as `2>&-` applied."""
    return subprocess.run(
        ["sh", "-c", f'exec "$@" {redirect}', "sh", sys.executable, "-m", "kolbo_async", *argv],
        stdout=stdout, stderr=subprocess.PIPE, text=True, env=env, timeout=60, check=False,
    )


class TestClosedOrFullStreams:
    """A closed or full stdout or stderr never costs the id of a paid generation."""

    @pytest.mark.slow
    def test_stderr_closed_still_delivers_the_video(self) -> None:
        sim = Simulator(speed=300.0)
        with sim.serve() as base_url:
            env = dict(os.environ, KOLBO_BASE_URL=base_url, KOLBO_API_KEY=KEY)
            proc = _shell_run("2>&-", "generate", "a cat", env=env)
        assert proc.returncode == 0
        assert proc.stdout.startswith("http")
        assert len(generation_posts(sim)) == 1

    @pytest.mark.slow
    def test_stderr_closed_and_a_timeout_names_the_id_on_stdout(self) -> None:
        sim = Simulator(speed=1.0)  # a generation takes far longer than --timeout
        with sim.serve() as base_url:
            env = dict(os.environ, KOLBO_BASE_URL=base_url, KOLBO_API_KEY=KEY)
            proc = _shell_run("2>&-", "generate", "a cat", "--timeout", "0.5", env=env)
        (gen_id,) = sim.generations
        assert proc.returncode == 3
        assert f"kolbo status {gen_id} --wait" in proc.stdout
        assert len(generation_posts(sim)) == 1

    @pytest.mark.slow
    @pytest.mark.parametrize(
        ("redirect", "extra"),
        [(">/dev/full", "--json"), (">&-", "--json"), (">&-", "--no-wait"),
         (">/dev/full", "--no-wait")],
    )
    def test_unusable_stdout_names_the_id_on_stderr(self, redirect: str, extra: str) -> None:
        if redirect == ">/dev/full" and not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full")
        env = dict(os.environ, PYTHONUNBUFFERED="")
        sim = Simulator(speed=300.0)
        with sim.serve() as base_url:
            env.update(KOLBO_BASE_URL=base_url, KOLBO_API_KEY=KEY)
            proc = _shell_run(redirect, "generate", "a cat", extra, env=env, stdout=None)
        (gen_id,) = sim.generations
        assert proc.returncode == EXIT_BROKEN_PIPE, proc.stderr
        assert f"kolbo status {gen_id} --wait" in proc.stderr
        assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
        assert len(generation_posts(sim)) == 1

    @pytest.mark.parametrize("argv", [["--sandbox", "models"], ["--help"], ["models", "--help"]])
    @pytest.mark.parametrize("redirect", [">&-", ">/dev/full"])
    def test_no_traceback_without_a_generation(self, argv: list[str], redirect: str) -> None:
        env = dict(os.environ, KOLBO_SANDBOX_SPEED="300", PYTHONUNBUFFERED="")
        proc = _shell_run(redirect, *argv, env=env, stdout=None)
        assert proc.returncode in (0, EXIT_BROKEN_PIPE)
        # With no stdout at all (`>&-`) argparse shows --help on stderr: fine, but nothing else.
        assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
        if "--help" not in argv:
            assert proc.stderr == ""

    @pytest.mark.slow
    def test_both_closed_is_quiet(self) -> None:
        sim = Simulator(speed=300.0)
        with sim.serve() as base_url:
            env = dict(os.environ, KOLBO_BASE_URL=base_url, KOLBO_API_KEY=KEY)
            proc = _shell_run(">&- 2>&-", "generate", "a cat", "--json", env=env, stdout=None)
        assert proc.returncode == EXIT_BROKEN_PIPE


class TestSigtermWhileThePostIsOnTheWire(TestCtrlCWhileThePostIsOnTheWire):
    """SIGTERM (`timeout`, `kill`, a CI runner) is handled as Ctrl-C is, with exit 143."""

    @pytest.mark.slow
    def test_waits_for_the_answer_and_names_the_id(self) -> None:
        sim = Simulator(speed=300.0)
        sim.faults.slow_seconds = 1.0
        sim.inject("generate", "slow")
        with sim.serve() as base_url:
            proc = self._start(sim, base_url, "--json")
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err
        (gen_id,) = sim.generations
        assert "terminated" in err
        assert f"kolbo status {gen_id} --wait" in err
        assert "Traceback" not in err
        assert json_lines(out)[-1]["generation_id"] == gen_id
        assert len(generation_posts(sim)) == 1

    @pytest.mark.slow
    @pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
    def test_second_signal_quits_and_says_it_may_be_charged(self, second: int) -> None:
        sim = Simulator(speed=300.0)
        sim.faults.slow_seconds = 15.0
        sim.inject("generate", "slow")
        with sim.serve() as base_url:
            proc = self._start(sim, base_url)
            proc.send_signal(signal.SIGTERM)
            assert proc.stderr is not None
            assert "waiting for Kolbo's answer" in proc.stderr.readline()
            proc.send_signal(second)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err
        assert "may have been created and charged" in err
        assert "Traceback" not in err

    def test_second_ctrl_c_quits_and_says_it_may_be_charged(self) -> None:
        pass  # the SIGINT-only case belongs to the parent class


class TestEmptyValuesAreMistakes:
    @pytest.mark.parametrize(
        "argv",
        [
            ["generate", "a cat", "--image", ""],
            ["generate", "a cat", "--image", "  "],
            ["generate", "a cat", "--model", ""],
            ["generate", "a cat", "--aspect-ratio", ""],
            ["--base-url", "", "generate", "a cat"],
        ],
    )
    def test_refused_before_anything_is_sent(self, sim: Simulator, argv: list[str]) -> None:
        code, _, err = run(*argv)
        assert code == 2, err
        assert "must not be empty" in err
        assert sim.requests == []


class TestDownloadTargetsThatAreNotFiles:
    """--overwrite replaces a file, never a FIFO, a device, a socket or a symbolic link."""

    def _argvs(self, path: Path) -> list[list[str]]:
        return [
            ["generate", "a cat", "--download", str(path), "--overwrite"],
            ["generate", "a cat", "--download", str(path)],
            ["download", "gen_x", str(path), "--overwrite"],
        ]

    def _refused(self, sim: Simulator, path: Path, words: str) -> None:
        for argv in self._argvs(path):
            code, _, err = run(*argv)
            assert code == 2, (argv, err)
            assert words in err
        assert sim.requests == []

    def test_fifo(self, sim: Simulator, tmp_path: Path) -> None:
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        self._refused(sim, fifo, "not a regular file")
        assert fifo.is_fifo()

    def test_symlink_to_a_file(self, sim: Simulator, tmp_path: Path) -> None:
        (tmp_path / "real.mp4").write_bytes(b"mine")
        link = tmp_path / "link.mp4"
        link.symlink_to(tmp_path / "real.mp4")
        self._refused(sim, link, "symbolic link")
        assert link.is_symlink() and (tmp_path / "real.mp4").read_bytes() == b"mine"

    def test_dangling_symlink(self, sim: Simulator, tmp_path: Path) -> None:
        link = tmp_path / "link.mp4"
        link.symlink_to(tmp_path / "nowhere.mp4")
        self._refused(sim, link, "symbolic link")

    def test_device_node(self, sim: Simulator, tmp_path: Path) -> None:
        node = tmp_path / "null"
        try:
            os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except (PermissionError, OSError):
            pytest.skip("cannot make a device node here")
        self._refused(sim, node, "not a regular file")
        assert stat.S_ISCHR(node.lstat().st_mode)


class TestCommandLineWords:
    """Messages name commands and options, never the SDK's Python calls."""

    @pytest.mark.parametrize("value", ["0.0001", "1e-320", "0.5"])
    def test_duration_below_one_second(self, sim: Simulator, value: str) -> None:
        code, _, err = run("generate", "a cat", "--duration", value)
        assert code == 2
        assert "--duration" in err
        assert sim.requests == []

    def test_timeout_names_the_command_to_follow_it(self, sim: Simulator) -> None:
        code, _, err = run("generate", "a cat", "--timeout", "0.001")
        (gen_id,) = sim.generations
        assert code == 3
        assert "generations.attach" not in err
        assert f"kolbo status {gen_id} --wait" in err

    def test_existing_file_in_a_directory_target_names_the_option(
        self, sim: Simulator, tmp_path: Path
    ) -> None:
        code, out, err = run("generate", "a cat", "--json")
        gen_id = json_lines(out)[0]["generation_id"]
        (tmp_path / f"{gen_id}.mp4").write_bytes(b"mine")
        code, _, err = run("download", str(gen_id), str(tmp_path))
        assert code == 2, err
        assert "overwrite=True" not in err and "--overwrite" in err

    def test_ctrl_c_while_starting_is_one_line(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Ctrl-C before the run began (while parsing): exit 130, no traceback."""
        from kolbo_async import _cli

        def interrupted_parser() -> object:
            raise KeyboardInterrupt

        monkeypatch.setattr(_cli, "build_parser", interrupted_parser)
        monkeypatch.setattr(sys, "argv", ["kolbo", "credits"])
        # `run()` owns the process: on its way out it leaves Ctrl-C to the system (SIG_DFL),
        # which would kill this test process at the next test's Ctrl-C.
        handler = signal.getsignal(signal.SIGINT)
        try:
            with pytest.raises(SystemExit) as stop:
                _cli.run()
            assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
        finally:
            signal.signal(signal.SIGINT, handler)
        assert stop.value.code == 130
        assert capsys.readouterr().err == "kolbo: interrupted\n"
