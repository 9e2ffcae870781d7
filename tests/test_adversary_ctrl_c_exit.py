"""Adversarial checks of two fixes: Ctrl-C on trio never loses a paid generation (the POST runs
in a trio system task, `kolbo_async/_ctrl_c.py`), and a shared PostgreSQL batch alive at
interpreter exit closes its journal from an atexit hook (`_journal_pg._close_at_exit`).

What the simulator received (`sim.requests`, `sim.generations`) is what is counted. The SIGINT
is raised from inside the simulator's handler, so it lands where the test means it to: inside
the paid POST, once Kolbo has created (and charged) the generation.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from kolbo_async.testing import SimRequest, SimResponse, Simulator, VirtualClock

from .conftest import CTRL_C

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ROOT = Path(__file__).resolve().parent.parent
KEY = "kolbo_live_" + "c7" * 20


def ctrl_c_in_post(sim: Simulator, where: str = "/api/v1/generate", times: int = 1) -> None:
    """SIGINT (`times` of them) once Kolbo has answered the first POST to a path starting
    with `where`, before the client has read the answer."""
    answer = sim.handle

    def handle(request: SimRequest) -> SimResponse:
        response = answer(request)
        if request.method == "POST" and request.path.startswith(where):
            sim.handle = answer  # type: ignore[method-assign]
            for _ in range(times):
                signal.raise_signal(signal.SIGINT)
        return response

    sim.handle = handle  # type: ignore[method-assign]


def interrupted(exc: BaseException) -> bool:
    inner = getattr(exc, "exceptions", None)
    if inner is not None:
        return all(interrupted(e) for e in inner)
    return isinstance(exc, CTRL_C)


def posts(sim: Simulator) -> list[str]:
    return [r.path for r in sim.requests if r.method == "POST"]


def logged_once(sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    """One generation created, POSTed once, and its id logged at WARNING."""
    (generation,) = sim.generations.values()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [w for w in warnings if f"generation {generation.id} was created" in w], warnings
    assert len([p for p in posts(sim) if p.startswith("/api/v1/generate")]) == 1


def run_trio(main: Any) -> BaseException:
    import trio

    with pytest.raises(BaseException) as info:  # noqa: PT011 - KeyboardInterrupt, maybe grouped
        trio.run(main)
    assert interrupted(info.value), repr(info.value)
    return info.value


# -- 1. Ctrl-C on trio ----------------------------------------------------------------------


def test_trio_generate_in_a_child_task_logs_the_id(caplog: pytest.LogCaptureFixture) -> None:
    """The POST's caller is a nursery's child, not the main task: the KeyboardInterrupt comes
    out of the main task's wait, the child stays shielded until the answer, the id is logged."""
    import trio

    sim = Simulator(clock=VirtualClock())
    ctrl_c_in_post(sim)

    async def main() -> None:
        async with sim.client() as client, trio.open_nursery() as nursery:
            nursery.start_soon(client.videos.generate, "child")

    run_trio(main)
    logged_once(sim, caplog)


def test_trio_two_ctrl_cs_inside_the_post(caplog: pytest.LogCaptureFixture) -> None:
    sim = Simulator(clock=VirtualClock())
    ctrl_c_in_post(sim, times=2)

    async def main() -> None:
        async with sim.client() as client:
            await client.videos.generate("twice")

    run_trio(main)
    logged_once(sim, caplog)


def test_trio_ctrl_c_and_a_cancel_scope_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """The caller's cancel scope is cancelled in the same instant as the Ctrl-C."""
    import trio

    sim = Simulator(clock=VirtualClock())
    scope = trio.CancelScope()
    answer = sim.handle

    def handle(request: SimRequest) -> SimResponse:
        response = answer(request)
        if request.method == "POST":
            sim.handle = answer  # type: ignore[method-assign]
            scope.cancel()
            signal.raise_signal(signal.SIGINT)
        return response

    sim.handle = handle  # type: ignore[method-assign]

    async def main() -> None:
        async with sim.client() as client:
            with scope:
                await client.videos.generate("both")

    run_trio(main)
    logged_once(sim, caplog)


def test_trio_cancel_scope_alone_keeps_the_id(caplog: pytest.LogCaptureFixture) -> None:
    """No Ctrl-C: a cancel scope cancelled while the POST is answered is swallowed by the
    scope, the id logged."""
    import trio

    sim = Simulator(clock=VirtualClock())
    scope = trio.CancelScope()
    answer = sim.handle

    def handle(request: SimRequest) -> SimResponse:
        response = answer(request)
        if request.method == "POST":
            sim.handle = answer  # type: ignore[method-assign]
            scope.cancel()
        return response

    sim.handle = handle  # type: ignore[method-assign]

    async def main() -> None:
        async with sim.client() as client:
            with scope:
                await client.videos.generate("scope")

    trio.run(main)
    logged_once(sim, caplog)


def test_trio_with_raw_response(caplog: pytest.LogCaptureFixture) -> None:
    sim = Simulator(clock=VirtualClock())
    ctrl_c_in_post(sim)

    async def main() -> None:
        async with sim.client() as client:
            await client.with_raw_response.videos.generate("raw")

    run_trio(main)
    logged_once(sim, caplog)


VAR: contextvars.ContextVar[str] = contextvars.ContextVar("adversary_var", default="unset")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_hooks_see_the_callers_context_and_the_same_events(backend: str) -> None:
    """The POST runs in a trio system task with a copy of the caller's context: a hook there
    reads the caller's context variables, and gets the same events as on asyncio."""
    seen: list[tuple[str, str]] = []

    def hook(event: object) -> None:
        seen.append((type(event).__name__, VAR.get()))

    async def main() -> None:
        VAR.set("caller")
        sim = Simulator(clock=VirtualClock())
        async with sim.client(hooks=[hook]) as client:
            await client.videos.generate("hooks")

    anyio.run(main, backend=backend)
    assert seen == [("RequestDone", "caller"), ("GenerationSubmitted", "caller")]


def test_trio_hooks_during_a_ctrl_c(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, str]] = []

    def hook(event: object) -> None:
        seen.append((type(event).__name__, VAR.get()))

    sim = Simulator(clock=VirtualClock())
    ctrl_c_in_post(sim)

    async def main() -> None:
        VAR.set("caller")
        async with sim.client(hooks=[hook]) as client:
            await client.videos.generate("hooked")

    run_trio(main)
    logged_once(sim, caplog)
    assert ("RequestDone", "caller") in seen


@pytest.fixture
def image(tmp_path: Path) -> Path:
    from kolbo_async.testing._cdn import _png

    path = tmp_path / "in.png"
    path.write_bytes(_png())
    return path


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_in_the_generation_post_after_a_local_upload(
    backend: str, image: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = Simulator(clock=VirtualClock())
    ctrl_c_in_post(sim, where="/api/v1/generate")

    async def main() -> None:
        async with sim.client() as client:
            await client.videos.from_image(str(image), prompt="up")

    with pytest.raises(CTRL_C):
        anyio.run(main, backend=backend)
    assert posts(sim) == ["/api/v1/media/upload", "/api/v1/generate/video/from-image"]
    logged_once(sim, caplog)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_in_the_upload_post_logs_the_stored_file(
    backend: str, image: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = Simulator(clock=VirtualClock())
    ctrl_c_in_post(sim, where="/api/v1/media/upload")

    async def main() -> None:
        async with sim.client() as client:
            await client.videos.from_image(str(image), prompt="up")

    with pytest.raises(CTRL_C):
        anyio.run(main, backend=backend)
    assert posts(sim) == ["/api/v1/media/upload"]
    assert not sim.generations
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("stored in the media library as https://" in w for w in warnings), warnings


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_while_a_slow_post_is_in_flight_as_the_run_ends(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The answer takes (virtual) seconds: the main task leaves with KeyboardInterrupt, the
    client's close and the run's end wait for the POST, whose id is logged."""
    sim = Simulator(clock=VirtualClock())
    sim.inject("generate", "slow")
    ctrl_c_in_post(sim)

    async def main() -> None:
        async with sim.client() as client:
            await client.videos.generate("slow")

    with pytest.raises(CTRL_C):
        anyio.run(main, backend=backend)
    logged_once(sim, caplog)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_aclose_while_a_post_is_in_flight_waits_for_it(backend: str) -> None:
    sim = Simulator(clock=VirtualClock())
    sim.inject("generate", "slow")
    got: list[str] = []

    async def main() -> None:
        from anyio.lowlevel import checkpoint

        client = sim.client()
        async with client, anyio.create_task_group() as tg:

            async def generate() -> None:
                got.append((await client.videos.generate("closing")).id)

            tg.start_soon(generate)
            while not sim.requests:
                await checkpoint()
            await client.aclose()
            assert len(sim.generations) == 1

    anyio.run(main, backend=backend)
    assert got == list(sim.generations)
    assert len(posts(sim)) == 1


def test_blocking_client_with_trio_imported_is_unaffected() -> None:
    import trio  # noqa: F401 - loaded, as in a process that also runs trio code

    from kolbo_async import Kolbo

    sim = Simulator(clock=VirtualClock())
    with Kolbo(KEY, _transport=sim.transport(), _clock=sim.clock) as client:
        first = client.videos.generate("blocking")
    assert list(sim.generations) == [first.id]
    ctrl_c_in_post(sim)
    with pytest.raises(KeyboardInterrupt):  # noqa: SIM117
        with Kolbo(KEY, _transport=sim.transport(), _clock=sim.clock) as client:
            client.videos.generate("blocking ctrl-c")
    assert len(sim.generations) == 2
    assert len(posts(sim)) == 2  # nothing POSTed twice


def test_blocking_ctrl_c_as_the_answer_arrives_logs_the_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from kolbo_async import Kolbo

    sim = Simulator(clock=VirtualClock())
    ctrl_c_in_post(sim)
    with pytest.raises(KeyboardInterrupt):  # noqa: SIM117
        with Kolbo(KEY, _transport=sim.transport(), _clock=sim.clock) as client:
            client.videos.generate("blocking ctrl-c")
    logged_once(sim, caplog)


ASYNCIO_BATCH = textwrap.dedent(
    """
    import sys, anyio, kolbo_async
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("trio", "outcome"))
    from kolbo_async.testing import Simulator, VirtualClock
    async def main():
        sim = Simulator(clock=VirtualClock())
        async with sim.client() as client:
            await client.videos.generate("a")
            requests = [kolbo_async.TextToVideo("b")]
            async for _ in client.videos.generate_many(requests, journal=sys.argv[1]):
                pass
    anyio.run(main)
    print(loaded, sorted(m for m in sys.modules if m.split(".")[0] in ("trio", "outcome")))
    """
)


@pytest.mark.slow
def test_neither_import_nor_an_asyncio_batch_loads_trio(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", ASYNCIO_BATCH, str(tmp_path / "b.db")],
        capture_output=True, text=True, cwd=ROOT, check=True,
    ).stdout  # fmt: skip
    assert out.strip() == "[] []"


@pytest.mark.parametrize("fault", ["gateway_502", "drop_after"])
def test_trio_ctrl_c_in_a_post_whose_answer_is_lost_logs_outcome_unknown(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Kolbo created (and charged) the generation, the answer is lost: the Ctrl-C's
    KeyboardInterrupt comes with a WARNING that a charged generation may exist, and the POST
    is not sent again."""
    sim = Simulator(clock=VirtualClock())
    sim.inject("generate", fault)
    ctrl_c_in_post(sim)

    async def main() -> None:
        async with sim.client() as client:
            await client.videos.generate("lost")

    run_trio(main)
    assert len(sim.generations) == 1
    assert len(posts(sim)) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("may have created a charged generation" in w for w in warnings), warnings


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_second_ctrl_c_while_the_client_closes_on_a_post_in_flight(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """First Ctrl-C as Kolbo receives the POST, the second 0.15 s later while the client's
    close waits for the (0.4 s) answer: POSTed once; on trio the id is logged, on asyncio
    (whose runner gives up on a second Ctrl-C) at least that a charged generation may exist."""
    import threading

    sim = Simulator()
    sim.faults.slow_seconds = 0.4
    sim.inject("generate", "slow")
    answer = sim.handle
    timer = threading.Timer(0.15, signal.raise_signal, (signal.SIGINT,))

    def handle(request: SimRequest) -> SimResponse:
        response = answer(request)
        if request.method == "POST":
            sim.handle = answer  # type: ignore[method-assign]
            signal.raise_signal(signal.SIGINT)
            timer.start()
        return response

    sim.handle = handle  # type: ignore[method-assign]

    async def main() -> None:
        async with sim.client() as client:
            await client.videos.generate("twice, slowly")

    with pytest.raises(CTRL_C):
        anyio.run(main, backend=backend)
    # Had the timer not fired yet (a loaded machine), its SIGINT must not stop pytest.
    previous = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(sim.generations) == 1
    assert len(posts(sim)) == 1
    (generation,) = sim.generations
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if backend == "trio":
        assert any(generation in w for w in warnings), warnings
    else:
        assert any(generation in w or "may have created" in w for w in warnings), warnings


# -- 2. a shared batch alive at interpreter exit --------------------------------------------

FORK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from kolbo_async import Kolbo, TextToVideo
    from kolbo_async.testing import Simulator
    from tests.test_journal_pg import rows
    a = json.loads(sys.argv[1])
    sim = Simulator(speed=100.0, processing_seconds=60, pending_seconds=3)
    yielded = []
    with sim.serve() as base, Kolbo(a["key"], base_url=base) as c:
        batch = c.videos.generate_many([TextToVideo(p) for p in a["prompts"]],
                                       journal=a["journal"], batch_id=a["batch"], lease=30.0,
                                       concurrency=2)
        it = iter(batch)
        yielded.append(next(it).index)
        before = [[r[0], r[4]] for r in rows(a["journal"], a["batch"])]
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # a forked child (a pre-fork server's worker) ends normally
        os.waitpid(pid, 0)
        after = [[r[0], r[4]] for r in rows(a["journal"], a["batch"])]
        yielded += [o.index for o in it]
        sent = [r.json["prompt"] for r in sim.requests if r.method == "POST" and r.json]
    print(json.dumps({"before": before, "after": after, "yielded": yielded, "posts": sent}))
    """
)


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get("KOLBO_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("KOLBO_TEST_POSTGRES_URL not set (source /tmp/svcenv.sh)")
    return url


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_forked_child_exiting_leaves_the_parents_batch_alone(postgres_url: str) -> None:
    from .test_journal_pg import batch_name

    prompts = [f"fork {i}" for i in range(6)]
    args = {"key": KEY, "journal": postgres_url, "batch": batch_name(), "prompts": prompts}
    proc = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, json.dumps(args)],
        check=False, capture_output=True, text=True, cwd=ROOT, timeout=100,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Counter(found["posts"]) == Counter(prompts)  # nothing paid twice
    problems = []
    if Counter(found["yielded"]) != Counter(range(len(prompts))):
        problems.append(f"yielded {found['yielded']}")
    if found["before"] != found["after"]:
        problems.append(
            f"the child changed the parent's rows: {found['before']} -> {found['after']}"
        )
    if "unreachable" in proc.stderr or "A batch stopped" in proc.stderr:
        problems.append(proc.stderr)
    assert not problems, problems


logging.getLogger("kolbo_async")  # the SDK's logger, read through caplog


UNCLOSED_SCRIPT = textwrap.dedent(
    """
    import sys
    from kolbo_async import Kolbo, TextToVideo
    from kolbo_async.testing import Simulator, VirtualClock
    sim = Simulator(clock=VirtualClock())
    client = Kolbo(sys.argv[2], _transport=sim.transport(), _clock=sim.clock)  # never closed
    for outcome in client.videos.generate_many([TextToVideo("a")], journal=sys.argv[1]):
        print(outcome.index, flush=True)
    print("end of script", flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.xfail(
    strict=True,
    reason="SDK bug: a blocking Kolbo never closed, after a journaled batch, hangs the "
    "interpreter at exit forever: the journal's anyio worker thread was started while the "
    "main thread drove the loop, so it is non-daemon and threading._shutdown joins it (before "
    "any atexit hook, _close_at_exit included, can run)",
)
def test_an_unclosed_blocking_client_after_a_journaled_batch_lets_the_process_exit(
    tmp_path: Path,
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", UNCLOSED_SCRIPT, str(tmp_path / "batch.db"), KEY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"still running 15 s after the script's end (stdout: {out!r})")
    assert proc.returncode == 0
    assert "end of script" in out


def ctrl_c_in_hook(event: str) -> Any:
    """A hook (an exporter, a logger) during which Ctrl-C lands, once, on `event`."""
    fired: list[bool] = []

    def hook(e: object) -> None:
        if type(e).__name__ == event and getattr(e, "method", "POST") == "POST" and not fired:
            fired.append(True)
            signal.raise_signal(signal.SIGINT)

    return hook


def test_asyncio_ctrl_c_in_the_generation_submitted_hook_keeps_the_handle() -> None:
    """On asyncio the Ctrl-C becomes a cancellation at the next wait: `generate()` returns
    the handle, the KeyboardInterrupt comes after."""
    sim = Simulator(clock=VirtualClock())
    got: list[str] = []

    async def main() -> None:
        async with sim.client(hooks=[ctrl_c_in_hook("GenerationSubmitted")]) as client:
            got.append((await client.videos.generate("hooked")).id)

    with pytest.raises(CTRL_C):
        anyio.run(main, backend="asyncio")
    assert got == list(sim.generations)


def test_trio_ctrl_c_in_the_generation_submitted_hook_keeps_the_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = Simulator(clock=VirtualClock())
    got: list[str] = []

    async def main() -> None:
        async with sim.client(hooks=[ctrl_c_in_hook("GenerationSubmitted")]) as client:
            got.append((await client.videos.generate("hooked")).id)

    with pytest.raises(CTRL_C):
        anyio.run(main, backend="trio")
    (generation,) = sim.generations
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert got == [generation] or any(generation in w for w in warnings), warnings


@pytest.mark.xfail(
    sys.version_info < (3, 11),
    strict=False,  # one run in three on 3.10's asyncio, never on 3.11+
    reason="SDK bug, Python 3.10 asyncio only, intermittent: after a Ctrl-C (which anyio's "
    "3.10 runner lets out as CancelledError) the interrupted batch can outlive gc.collect(): "
    "the rerun in the same process is refused ('journal in use by another batch of this "
    "process'), or runs and finds items 1-2 left as intents it never sent (ci39, ci40)",
)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("event", ["RequestDone", "GenerationSubmitted"])
def test_ctrl_c_in_a_hook_during_a_batch_post_is_re_attached_by_a_rerun(
    backend: str, event: str, tmp_path: Path
) -> None:
    """The batch's post-and-record is protected: a Ctrl-C in a hook of item 1's POST goes to
    the main task, the journal records the id, a rerun re-attaches it, nothing is paid twice."""
    from kolbo_async import TextToVideo

    prompts = [f"hook {i}" for i in range(3)]
    journal = tmp_path / "batch.db"
    sim = Simulator(clock=VirtualClock())

    def run(hooks: list[Any]) -> list[tuple[int, str | None]]:
        seen: list[tuple[int, str | None]] = []

        async def main() -> None:
            async with sim.client(hooks=hooks) as client:
                requests = [TextToVideo(p) for p in prompts]
                async for o in client.videos.generate_many(
                    requests, journal=journal, concurrency=1
                ):
                    seen.append((o.index, type(o.error).__name__ if o.error else None))

        anyio.run(main, backend=backend)
        return seen

    with pytest.raises(BaseException) as info:  # noqa: PT011 - KeyboardInterrupt, maybe grouped
        run([ctrl_c_in_hook(event)])
    assert interrupted(info.value), repr(info.value)
    del info
    import gc

    gc.collect()
    first = len(sim.generations)
    again = run([])
    sent = [r.json["prompt"] for r in sim.requests if r.method == "POST" and r.json]
    assert sorted(sent) == prompts  # each paid once
    assert [e for _, e in again if e is not None] == []
    assert first >= 1


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_otel_post_span_is_a_child_of_the_callers_span(backend: str) -> None:
    """The POST's span starts in the trio system task: it still has the caller's span as its
    parent (the system task runs in a copy of the caller's context)."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from kolbo_async.otel import TracingHook

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("adversary")

    async def main() -> None:
        sim = Simulator(clock=VirtualClock())
        async with sim.client(hooks=[TracingHook(provider)]) as client:
            with tracer.start_as_current_span("caller"):
                await client.videos.generate("traced")

    anyio.run(main, backend=backend)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    caller = spans["caller"].context
    post = spans["POST /api/v1/generate/video"]
    assert caller is not None and post.parent is not None
    assert (post.parent.trace_id, post.parent.span_id) == (caller.trace_id, caller.span_id)
    assert spans["kolbo.submit"].parent is not None
    assert spans["kolbo.submit"].parent.span_id == caller.span_id


EXIT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import anyio
    from kolbo_async import AsyncKolbo, Kolbo, TextToVideo
    a = json.loads(sys.argv[1])
    mode, take = a["mode"], a["take"]

    def emit(o, prompts):
        print(json.dumps([o.index, o.generation.id, prompts[o.index]]), flush=True)

    def kill_journal_backends():  # this process's journal connections only
        import psycopg
        from kolbo_async import _journal_pg
        pids = [j._conn.info.backend_pid for j in list(_journal_pg._open) if j._conn]
        with psycopg.connect(a["journal"], autocommit=True) as admin:
            for pid in pids:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    batches = []  # module globals: alive at exit
    if mode in ("many", "dead"):
        with Kolbo(a["key"], base_url=a["url"]) as c:
            for prompts, batch_id in zip(a["lists"], a["batches"]):
                b = c.videos.generate_many([TextToVideo(p) for p in prompts],
                                           journal=a["journal"], batch_id=batch_id, lease=1.0)
                for o in b:
                    emit(o, prompts)
                    if take:
                        break
                batches.append(b)
        if mode == "dead":
            kill_journal_backends()
    else:  # held by a KeyboardInterrupt's traceback
        prompts = a["lists"][0]
        async def main():
            async with AsyncKolbo(a["key"], base_url=a["url"]) as c:
                requests = [TextToVideo(p) for p in prompts]
                async for o in c.videos.generate_many(requests, journal=a["journal"],
                                                       batch_id=a["batches"][0], lease=1.0):
                    emit(o, prompts)
                    raise KeyboardInterrupt
        anyio.run(main, backend=mode)
    """
)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["many", "dead", "trio", "asyncio"])
def test_what_a_batch_alive_at_exit_handed_out_is_not_given_again(
    postgres_url: str, mode: str
) -> None:
    """Three module-global batches / one whose journal connection was terminated just
    before exit / one held by a Ctrl-C traceback on trio or asyncio: the exit is quick, says
    no 'Exception ignored', and a second worker (after the lease) gives every other item once."""
    import time

    from .test_adversary_shared_journal import post_counts, simulator
    from .test_journal_pg import batch_name

    n = 3 if mode == "many" else 1
    lists = [[f"{mode}{k} {i}" for i in range(4)] for k in range(n)]
    sim = simulator()
    with sim.serve() as url:
        args: dict[str, Any] = {"url": url, "journal": postgres_url, "key": KEY, "mode": mode,
                                "lists": lists, "batches": [batch_name() for _ in lists],
                                "take": True}  # fmt: skip

        def worker(**changes: Any) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-c", EXIT_SCRIPT, json.dumps({**args, **changes})],
                capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
            )  # fmt: skip

        started = time.monotonic()
        first = worker()
        took = time.monotonic() - started
        assert "Exception ignored" not in first.stderr, first.stderr
        assert first.returncode in (0, 1, -signal.SIGINT), first.stderr
        time.sleep(1.2)  # the lease of whatever was not recorded runs out
        again = [worker(mode="many", lists=[p], batches=[b], take=False)
                 for p, b in zip(lists, args["batches"], strict=True)]  # fmt: skip
    outcomes = [
        json.loads(line)[2]
        for run in [first, *again]
        for line in run.stdout.splitlines()
        if line.startswith("[")
    ]
    assert Counter(outcomes) == Counter(p for prompts in lists for p in prompts)
    assert post_counts(sim) == Counter(p for prompts in lists for p in prompts)
    assert took < 20 * n
