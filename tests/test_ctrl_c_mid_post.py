"""Ctrl-C (SIGINT) while a paid POST waits for its answer, or while its answer is recorded: the
generation Kolbo charged for is never lost, on asyncio and on trio.

asyncio's runner turns Ctrl-C into a cancellation, which the SDK's shields hold off. trio
raises KeyboardInterrupt at once inside the code that runs when the signal lands (unless it is
protected) and at the main task's next wait however shielded: before the fix, a batch on trio
lost the id of the POST the signal landed in (the journal kept the intent, a rerun reported it
outcome-unknown; found as a flaky process test, test_adversary_batch2_shared.py's
test_sigint_while_claims_wait_for_admission_gives_them_back), and a single `generate()` lost it
without a word. The signal is raised from inside the simulator or the journal, so it lands
where the test means it to, on the virtual clock.
"""

from __future__ import annotations

import gc
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from kolbo_async import AsyncKolbo, TextToVideo
from kolbo_async._batch_journal import BatchJournal
from kolbo_async.testing import SimRequest, SimResponse, Simulator, VirtualClock

from .conftest import CTRL_C

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

PROMPTS = [f"int {i}" for i in range(3)]
KEY = "kolbo_live_" + "c7" * 20


def ctrl_c_during_post(sim: Simulator, prompt: str) -> None:
    """SIGINT once Kolbo has created (and charged) `prompt`'s generation, before the client
    has read the answer."""
    answer = sim.handle

    def handle(request: SimRequest) -> SimResponse:
        response = answer(request)
        if request.method == "POST" and f'"{prompt}"'.encode() in request.body:
            sim.handle = answer  # type: ignore[method-assign]
            signal.raise_signal(signal.SIGINT)
        return response

    sim.handle = handle  # type: ignore[method-assign]


def run(sim: Simulator, journal: Path, backend: str) -> list[tuple[str, str | None, str | None]]:
    """One run of the batch: (prompt, error type, generation id) of each outcome yielded."""
    seen: list[tuple[str, str | None, str | None]] = []

    async def main() -> None:
        client: AsyncKolbo = sim.client()
        async with client:
            requests = [TextToVideo(p) for p in PROMPTS]
            async for o in client.videos.generate_many(requests, journal=journal, concurrency=1):
                error = type(o.error).__name__ if o.error else None
                seen.append((PROMPTS[o.index], error, o.generation.id if o.generation else None))

    anyio.run(main, backend=backend)
    return seen


def created(sim: Simulator) -> dict[str, str]:
    return {str(g.request["prompt"]): g.id for g in sim.generations.values()}


def interrupted(exc: BaseException) -> bool:
    inner = getattr(exc, "exceptions", None)  # a BaseExceptionGroup (its backport on 3.10)
    if inner is not None:
        return all(interrupted(e) for e in inner)
    return isinstance(exc, CTRL_C)


def check_a_rerun_re_attaches_item_1(sim: Simulator, journal: Path, backend: str) -> None:
    """The interrupted run raises KeyboardInterrupt; a rerun with its journal re-attaches
    item 1's generation (the one Kolbo charged for) instead of reporting it outcome-unknown,
    and each prompt was POSTed once."""
    with pytest.raises(BaseException) as info:  # noqa: PT011 - KeyboardInterrupt, maybe grouped
        run(sim, journal, backend)
    assert interrupted(info.value), info.value
    del info  # its traceback holds the interrupted batch: collected, it lets go of the journal
    gc.collect()
    again = run(sim, journal, backend)
    posts = [r.json["prompt"] for r in sim.requests if r.method == "POST" and r.json]
    assert sorted(posts) == PROMPTS  # nothing paid twice
    ids = created(sim)
    assert {p: (e, g) for p, e, g in again if p == "int 1"} == {"int 1": (None, ids["int 1"])}
    assert [(p, e) for p, e, _ in again if e is not None] == []


# Python 3.10's asyncio, intermittently (about 1 run in 3): the interrupted batch outlives
# gc.collect(), and the same-process rerun is refused ("journal in use by another batch of this
# process"); an open SDK bug, named in test_adversary_ctrl_c_exit.py too. Never on 3.11+.
RERUN_BACKENDS = [
    pytest.param(
        "asyncio",
        marks=pytest.mark.xfail(
            sys.version_info < (3, 11),
            strict=False,
            reason="SDK bug on Python 3.10 asyncio (intermittent): the interrupted batch "
            "outlives gc.collect(), the same-process rerun is refused",
        ),
    ),
    "trio",
]


@pytest.mark.parametrize("backend", RERUN_BACKENDS)
def test_ctrl_c_while_a_batch_post_is_answered_keeps_the_id(tmp_path: Path, backend: str) -> None:
    """Ctrl-C lands inside item 1's POST, once Kolbo has created its generation."""
    sim = Simulator(clock=VirtualClock())
    ctrl_c_during_post(sim, "int 1")
    check_a_rerun_re_attaches_item_1(sim, tmp_path / "batch.db", backend)


@pytest.mark.parametrize("backend", RERUN_BACKENDS)
def test_ctrl_c_while_a_batch_records_an_answer_keeps_the_id(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C lands in the batch's own task as it records item 1's answer in the journal."""
    real = BatchJournal.submitted

    async def submitted(journal: BatchJournal, index: int, *args: Any) -> Any:
        if index == 1:
            monkeypatch.setattr(BatchJournal, "submitted", real)
            signal.raise_signal(signal.SIGINT)
        return await real(journal, index, *args)

    monkeypatch.setattr(BatchJournal, "submitted", submitted)
    check_a_rerun_re_attaches_item_1(Simulator(clock=VirtualClock()), tmp_path / "b.db", backend)


def generate_interrupted(sim: Simulator, backend: str, **client: Any) -> None:
    async def main() -> None:
        kolbo = AsyncKolbo(**client) if client else sim.client()
        async with kolbo:
            await kolbo.videos.generate("int 1")

    with pytest.raises(CTRL_C):
        anyio.run(main, backend=backend)


def the_id_is_logged(sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    (generation,) = sim.generations.values()
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert f"generation {generation.id} was created and charged" in warning.getMessage()
    assert len([r for r in sim.requests if r.method == "POST"]) == 1


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_inside_a_generate_post_logs_the_id(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C lands inside `generate()`'s POST once Kolbo has created the generation: the
    call raises KeyboardInterrupt, and the id of what was charged is logged at WARNING."""
    sim = Simulator(clock=VirtualClock())
    ctrl_c_during_post(sim, "int 1")
    generate_interrupted(sim, backend)
    the_id_is_logged(sim, caplog)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_while_a_generate_waits_for_its_answer_logs_the_id(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Over a real socket, Ctrl-C while `generate()` waits for Kolbo's answer: the POST lands
    anyway (the run ends after it), and the id is logged at WARNING."""
    sim = Simulator(speed=100.0)
    answer = sim.handle

    def handle(request: SimRequest) -> SimResponse:
        if request.method == "POST":
            sim.handle = answer  # type: ignore[method-assign]
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.3)  # the client is waiting on the socket when the signal lands
        return answer(request)

    sim.handle = handle  # type: ignore[method-assign]
    with sim.serve() as url:
        generate_interrupted(sim, backend, api_key=KEY, base_url=url)
    the_id_is_logged(sim, caplog)


def test_blocking_ctrl_c_as_generate_returns_logs_the_id(caplog: pytest.LogCaptureFixture) -> None:
    """The blocking client: Ctrl-C lands as `generate()` is about to return its handle (in
    a hook told of the submission): the call raises KeyboardInterrupt, the id is logged."""
    from kolbo_async import Kolbo

    sim = Simulator(clock=VirtualClock())

    def hook(event: Any) -> None:
        if type(event).__name__ == "GenerationSubmitted":
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):  # noqa: SIM117
        with Kolbo(KEY, _transport=sim.transport(), _clock=sim.clock, hooks=[hook]) as client:
            client.videos.generate("int 1")
    the_id_is_logged(sim, caplog)
