"""Mutation testing of the modules that keep the SDK's promises (not part of CI).

    python benchmarks/mutation.py                    # every promise module
    python benchmarks/mutation.py --module _pacing   # one module (repeatable)

mutmut 3 (``pip install -e '.[mutation]'``) plants one small bug at a time in the modules
listed under ``[tool.mutmut] only_mutate`` in pyproject.toml, and for each bug runs only the
tests that called the function it sits in (it records that with one traced run of the whole
suite first). A mutant that no test notices "survives": either a promise with no test that
can fail, or an equivalent change (it cannot alter behaviour), to be explained.

The run happens in a snapshot of the working tree, or of a commit with ``--ref HEAD`` (a
scratch directory, removed afterwards unless ``--workdir`` is given, where a rerun retests
only what changed), so edits made meanwhile do not mix into it and the repository gets no
``mutants/`` directory. mutmut needs the whole suite green on that snapshot first. Ends with
the score and the diff of every survivor.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import site
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a test run needs; mutmut copies the package into mutants/ and puts it first on the path.
COPIED = ("kolbo_async", "tests", "benchmarks", "pyproject.toml", "README.md")
KILLED = "killed"
PLUGIN = "_mutation_plugin"
# mutmut runs a test several times in one process (the traced run, the clean run, each
# mutant), each time on a new instance of its class; Hypothesis takes that for a test
# called from "differing executors", which is only true of mutmut's own replays.
PLUGIN_SOURCE = """\
import hypothesis.core
from hypothesis import HealthCheck

_fail = hypothesis.core.fail_health_check


def _fail_unless_replayed(settings, message, health_check):
    if health_check is not HealthCheck.differing_executors:
        _fail(settings, message, health_check)


hypothesis.core.fail_health_check = _fail_unless_replayed
"""


def _configured_modules() -> list[str]:
    # A regular expression rather than tomllib, which Python 3.10 lacks.
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    listed = re.search(r"(?ms)^\[tool\.mutmut\].*?^only_mutate\s*=\s*\[(.*?)\]", text)
    if listed is None:
        raise SystemExit("pyproject.toml: [tool.mutmut] only_mutate not found")
    return re.findall(r'"([^"]+)"', listed.group(1))


def _snapshot(workdir: Path, only: list[str], ref: str | None) -> None:
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
    pyproject.write_text(text, "utf-8")
    (workdir / "mutants").mkdir(exist_ok=True)
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


def _mutmut(workdir: Path, *args: str) -> str:
    # `-S` and an explicit path: the editable install's .pth would put the live tree on the
    # path, and tests must import the mutated snapshot only (children too: a killed batch).
    # (mutmut calls the `exit` builtin that only `site` defines.)
    start = "import builtins, runpy, sys; builtins.exit = sys.exit; sys.argv[0] = 'mutmut'; "
    start += "runpy.run_module('mutmut', run_name='__main__', alter_sys=True)"
    command = [sys.executable, "-S", "-c", start, *args]
    path = [str(workdir / "mutants"), *site.getsitepackages()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    done = subprocess.run(
        command, cwd=workdir, env=env, text=True, capture_output=True, check=False
    )
    if done.returncode != 0:
        # mutmut's spinner redraws with carriage returns; the last frame of each line is enough.
        shown = "\n".join(line.rsplit("\r", 1)[-1] for line in done.stdout.splitlines()[-60:])
        print(shown, done.stderr, sep="\n")
        raise SystemExit(f"mutmut {' '.join(args)} failed with exit code {done.returncode}")
    return done.stdout


def _report(workdir: Path) -> int:
    # `results --all true` lists every mutant with its status, one per line: "    name: status".
    listing = _mutmut(workdir, "results", "--all", "true")
    statuses: dict[str, str] = {}
    for line in listing.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name.startswith("kolbo_async."):
            statuses[name] = status
    if not statuses:
        print(listing)
        print("no mutants found")
        return 1
    by_module: dict[str, list[str]] = {}
    for name, status in statuses.items():
        by_module.setdefault(name.split(".x")[0], []).append(status)
    print("\nMutation score (killed / mutants; a timeout counts as killed)")
    for module, seen in sorted(by_module.items()):
        killed = sum(status in (KILLED, "timeout") for status in seen)
        print(f"  {module:28} {killed:4} / {len(seen):4}  {100 * killed / len(seen):5.1f} %")
    total = len(statuses)
    killed = sum(status in (KILLED, "timeout") for status in statuses.values())
    print(f"  {'total':28} {killed:4} / {total:4}  {100 * killed / total:5.1f} %")
    survivors = sorted(n for n, s in statuses.items() if s not in (KILLED, "timeout"))
    if survivors:
        print(f"\n{len(survivors)} surviving mutants (status, then diff):")
        for name in survivors:
            print(f"\n--- {name}: {statuses[name]}")
            diff = _mutmut(workdir, "show", name)
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
        help="keep the snapshot and mutmut's results here (reused: only changed code reruns)",
    )
    parser.add_argument(
        "--ref",
        metavar="COMMIT",
        help="mutate this commit (e.g. HEAD) instead of the working tree",
    )
    parser.add_argument(
        "--max-children", type=int, default=1, help="parallel mutant runs (default 1)"
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

    scratch = options.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="kolbo-mutation-")) if scratch else options.workdir
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        # Refreshed every run; mutmut keeps the results of functions that did not change.
        _snapshot(workdir, only, options.ref)
        print(f"mutating {', '.join(only)} in {workdir} (takes minutes)", flush=True)
        ran = _mutmut(workdir, "run", "--max-children", str(options.max_children))
        speed = [line for line in ran.splitlines() if "mutations/second" in line]
        print(speed[-1].rsplit("\r", 1)[-1] if speed else "")
        return _report(workdir)
    finally:
        if scratch:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
