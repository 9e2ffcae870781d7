"""Mutation testing of the modules that keep the SDK's promises (not part of CI).

    python benchmarks/mutation.py --ref HEAD                   # every promise module
    python benchmarks/mutation.py --ref HEAD --module _pacing  # one module (repeatable)
    python benchmarks/mutation.py --ref HEAD --module _poll_plan --tests tests/test_poll_plan.py
    nice -n 19 python benchmarks/mutation.py --ref HEAD --module _journal --max-minutes 25

mutmut 3 (``pip install -e '.[mutation]'``) plants one small bug at a time in the modules
listed under ``[tool.mutmut] only_mutate`` in pyproject.toml, and for each bug runs only the
tests that called the function it sits in, fastest first, stopping at the first failure (it
learns who calls what from one traced run of the suite, shared by the modules of a run). A
mutant that no test notices "survives": either a promise with no test that can fail, or an
equivalent change (it cannot alter behaviour), to be explained. Modules run one after the
other, each timed; ``--max-children 1`` (the default) keeps it to one core.

Tests that start a process (Ctrl-C on a pty, fork, journal children, the browser) are
skipped under mutmut: a child's calls are not traced, so they could never be credited with a
kill, and under the slower mutated code they tripped their own real-time limits.

``--tests`` limits the run to some test files (a module's own tests): minutes instead of up
to an hour for a module that every request goes through, and a lower bound of its score.
``--max-minutes`` stops a module's run after that long (mutmut and its workers, as one
process group) and reports the mutants it finished, with how many were not run.

The run happens in a snapshot of the working tree, or of a commit with ``--ref HEAD`` (a
scratch directory, removed afterwards unless ``--workdir`` is given, where a rerun keeps the
traced run), so edits made meanwhile do not mix into it and the repository gets no
``mutants/`` directory. mutmut needs the selected tests green on that snapshot first. Ends
with the score per module, its time, and the diff of every survivor.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a test run needs; mutmut copies the package into mutants/ and puts it first on the path.
COPIED = ("kolbo_async", "tests", "benchmarks", "examples", "pyproject.toml", "README.md")
KILLED = "killed"
NOT_RUN = "not checked"  # mutmut's status of a mutant it never ran (a run stopped early)
PLUGIN = "_mutation_plugin"
# Loaded into every pytest run mutmut makes (`-p _mutation_plugin`), never into the real suite.
PLUGIN_SOURCE = r'''
"""Two adjustments that only a run under mutmut needs."""

import os
import subprocess

import hypothesis.core
import pytest
from hypothesis import HealthCheck

# 1. mutmut runs a test several times in one process (the traced run, the clean run, each
# mutant), each time on a new instance of its class; Hypothesis takes that for a test called
# from "differing executors", which is only true of mutmut's own replays.
_fail = hypothesis.core.fail_health_check


def _fail_unless_replayed(settings, message, health_check):
    if health_check is not HealthCheck.differing_executors:
        _fail(settings, message, health_check)


hypothesis.core.fail_health_check = _fail_unless_replayed

# 2. A test that starts a process (Ctrl-C on a pty, fork, a child holding a journal, the
# browser) is skipped: mutmut learns which tests reach a function by tracing this process
# only, so a child's work is never credited to a mutant; under the slower mutated code such
# tests also trip their own real-time limits and leave pipes behind (ResourceWarning, an
# error under filterwarnings=error). The start is refused before any process or pipe exists,
# and whatever failure follows from it in that test is reported as this skip.
REASON = "starts a process: mutmut cannot credit a child's work to a mutant"
_crossed = set()


class ProcessRefused(RuntimeError):
    pass


def _refuse(*args, **kwargs):
    _crossed.add(_current[0])
    raise ProcessRefused(REASON)


_current = [None]
_GUARDED = [(subprocess.Popen, "__init__"), (os, "fork"), (os, "forkpty"), (os, "posix_spawn")]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    # Only around a test: mutmut itself forks its workers between tests.
    saved = [(o, name, getattr(o, name)) for o, name in _GUARDED if hasattr(o, name)]
    _current[0] = item.nodeid
    for owner, name, _ in saved:
        setattr(owner, name, _refuse)
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
        _current[0] = None


def _refused(error, seen=()):
    # The refusal itself, or an error caused by it (chained, in a group, a shared fixture's).
    if error is None or id(error) in seen:
        return False
    if isinstance(error, ProcessRefused):
        return True
    seen = (*seen, id(error))
    inner = [error.__cause__, error.__context__, *getattr(error, "exceptions", ())]
    return any(_refused(e, seen) for e in inner)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    refused = call.excinfo is not None and _refused(call.excinfo.value)
    if (refused or item.nodeid in _crossed) and report.failed:
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, "Skipped: " + REASON)
'''


def _configured_modules() -> list[str]:
    # A regular expression rather than tomllib, which Python 3.10 lacks.
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    listed = re.search(r"(?ms)^\[tool\.mutmut\].*?^only_mutate\s*=\s*\[(.*?)\]", text)
    if listed is None:
        raise SystemExit("pyproject.toml: [tool.mutmut] only_mutate not found")
    return re.findall(r'"([^"]+)"', listed.group(1))


def _snapshot(workdir: Path, only: list[str], ref: str | None, tests: list[str]) -> None:
    if ref is not None:
        _export(workdir, ref)
    else:
        _copy(workdir)
    pyproject = workdir / "pyproject.toml"
    text = pyproject.read_text("utf-8")
    listed = "only_mutate = [" + ", ".join(f'"{path}"' for path in only) + "]"
    # The plugin below, loaded into every pytest run mutmut makes.
    listed += '\npytest_add_cli_args = ["-p", "' + PLUGIN + '"]'
    text, count = re.subn(r"(?ms)^only_mutate\s*=\s*\[.*?\]", listed, text, count=1)
    if count != 1:
        raise SystemExit("pyproject.toml: [tool.mutmut] only_mutate not found")
    if tests:
        selection = (
            "pytest_add_cli_args_test_selection = ["
            + ", ".join(f'"{path}"' for path in tests)
            + "]"
        )
        text, count = re.subn(
            r"(?m)^pytest_add_cli_args_test_selection\s*=.*$", selection, text, count=1
        )
        if count != 1:
            raise SystemExit("pyproject.toml: [tool.mutmut] pytest_add_cli_args_test_selection?")
    pyproject.write_text(text, "utf-8")
    (workdir / "mutants").mkdir(exist_ok=True)
    # mutmut traces only the functions it mutates and does not notice a new module in the
    # list: its functions would have no tests. Another list of modules traces afresh.
    listed_before = workdir / "mutants" / "kolbo-modules.txt"
    listing = "\n".join([*only, "--tests", *tests])
    if not listed_before.exists() or listed_before.read_text("utf-8") != listing:
        (workdir / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
        listed_before.write_text(listing, "utf-8")
    (workdir / "mutants" / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE, "utf-8")


def _export(workdir: Path, ref: str) -> None:
    # A commit rather than the working tree: a consistent state while others edit.
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, *COPIED],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(workdir, filter="data")


def _copy(workdir: Path) -> None:
    for name in COPIED:
        source = ROOT / name
        target = workdir / name
        if source.is_dir():
            shutil.copytree(
                source,
                target,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                dirs_exist_ok=True,
            )
        else:
            shutil.copy2(source, target)


def _mutmut(workdir: Path, *args: str, minutes: float | None = None) -> str | None:
    """mutmut's output; None when `minutes` ran out first (mutmut and its workers stopped:
    what they finished is kept, the rest reported as not run)."""
    # `-S` and an explicit path: the editable install's .pth would put the live tree on the
    # path, and tests must import the mutated snapshot only (children too: a killed batch).
    # (mutmut calls the `exit` builtin that only `site` defines.)
    start = "import builtins, runpy, sys; builtins.exit = sys.exit; sys.argv[0] = 'mutmut'; "
    start += "runpy.run_module('mutmut', run_name='__main__', alter_sys=True)"
    command = [sys.executable, "-S", "-c", start, *args]
    path = [str(workdir / "mutants"), *site.getsitepackages()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    # A session of its own: on a timeout the forked workers go with it, none left running.
    proc = subprocess.Popen(
        command,
        cwd=workdir,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=None if minutes is None else minutes * 60)
    except subprocess.TimeoutExpired:
        _stop(proc)
        return None
    except BaseException:
        _stop(proc)
        raise
    if proc.returncode != 0:
        # mutmut's spinner redraws with carriage returns; the last frame of each line is enough.
        shown = "\n".join(line.rsplit("\r", 1)[-1] for line in stdout.splitlines()[-60:])
        print(shown, stderr, sep="\n")
        raise SystemExit(f"mutmut {' '.join(args)} failed with exit code {proc.returncode}")
    return stdout


def _stop(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def _output(workdir: Path, *args: str) -> str:
    out = _mutmut(workdir, *args)
    assert out is not None  # no time limit
    return out


def _statuses(workdir: Path) -> dict[str, str]:
    # `results --all true` lists every mutant with its status, one per line: "    name: status".
    listing = _output(workdir, "results", "--all", "true")
    statuses: dict[str, str] = {}
    for line in listing.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name.startswith("kolbo_async."):
            statuses[name] = status
    return statuses


def _module_of(mutant: str) -> str:
    # "kolbo_async._pacing.xǁPacerǁacquire__mutmut_3" -> "kolbo_async._pacing"
    return mutant.split(".x", maxsplit=1)[0]


def _report(workdir: Path, modules: list[str], seconds: dict[str, float], cut: set[str]) -> int:
    statuses = {
        name: status for name, status in _statuses(workdir).items() if _module_of(name) in modules
    }
    if not statuses:
        print("no mutants found")
        return 1
    print("\nMutation score (killed / mutants run; a timeout counts as killed)")
    for module in modules:
        seen = [status for name, status in statuses.items() if _module_of(name) == module]
        ran = [status for status in seen if status != NOT_RUN]
        if not ran:
            continue
        killed = sum(status in (KILLED, "timeout") for status in ran)
        took = f"{seconds[module] / 60:5.1f} min" if module in seconds else ""
        partial = f"  stopped: {len(seen) - len(ran)} not run" if module in cut else ""
        print(
            f"  {module:28} {killed:4} / {len(ran):4}  {100 * killed / len(ran):5.1f} %  "
            f"{took}{partial}"
        )
    ran_all = {name: status for name, status in statuses.items() if status != NOT_RUN}
    total = len(ran_all)
    killed = sum(status in (KILLED, "timeout") for status in ran_all.values())
    if total:
        print(f"  {'total':28} {killed:4} / {total:4}  {100 * killed / total:5.1f} %")
    survivors = sorted(n for n, s in ran_all.items() if s not in (KILLED, "timeout"))
    if survivors:
        print(f"\n{len(survivors)} surviving mutants (status, then diff):")
        for name in survivors:
            print(f"\n--- {name}: {statuses[name]}")
            diff = _output(workdir, "show", name)
            print("\n".join(diff.splitlines()[1:]).strip())
    return 0


def main() -> int:
    """Run mutmut over the promise modules (or the given ones) and print score and survivors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--module",
        action="append",
        metavar="NAME",
        help="a module of kolbo_async to mutate, e.g. _pacing (repeatable; default: all listed)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the snapshot and mutmut's results here (reused: the tracing run is kept)",
    )
    parser.add_argument(
        "--ref",
        metavar="COMMIT",
        help="mutate this commit (e.g. HEAD) instead of the working tree",
    )
    parser.add_argument(
        "--tests",
        action="append",
        metavar="PATH",
        default=[],
        help="only these test files (repeatable; default: all of tests/). Minutes instead of "
        "an hour for a module with tests of its own; a lower bound of the full score",
    )
    parser.add_argument(
        "--max-children", type=int, default=1, help="parallel mutant runs (default 1)"
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        metavar="M",
        help="stop a module's run after M minutes and report what it finished (partial score)",
    )
    options = parser.parse_args()

    configured = _configured_modules()
    if options.module:
        wanted = {m.removesuffix(".py").removeprefix("kolbo_async.") for m in options.module}
        only = [path for path in configured if Path(path).stem in wanted]
        unknown = wanted - {Path(path).stem for path in only}
        if unknown:
            raise SystemExit(f"not a promise module: {', '.join(sorted(unknown))}")
    else:
        only = configured
    modules = [path.removesuffix(".py").replace("/", ".") for path in only]

    scratch = options.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="kolbo-mutation-")) if scratch else options.workdir
    seconds: dict[str, float] = {}
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        # Refreshed every run; mutmut keeps the tracing run's results while no test changed.
        _snapshot(workdir, only, options.ref, options.tests)
        print(f"mutating {', '.join(only)} in {workdir}", flush=True)
        # One module at a time (each of its mutants against the tests that reach its
        # function); the first run also traces the whole suite once, which the others reuse.
        cut: set[str] = set()
        for module in modules:
            began = time.monotonic()
            ran = _mutmut(
                workdir,
                "run",
                "--max-children",
                str(options.max_children),
                f"{module}.*",
                minutes=options.max_minutes,
            )
            seconds[module] = time.monotonic() - began
            if ran is None:
                cut.add(module)
                print(f"  {module}: stopped after {options.max_minutes:g} min", flush=True)
                continue
            speed = [line for line in ran.splitlines() if "mutations/second" in line]
            rate = speed[-1].rsplit("\r", 1)[-1] if speed else ""
            print(f"  {module}: {seconds[module] / 60:.1f} min ({rate})", flush=True)
        return _report(workdir, modules, seconds, cut)
    finally:
        if scratch:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
