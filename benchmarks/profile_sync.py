"""Where a blocking `Kolbo` call spends its time beyond a raw ``httpx.Client`` call.

    python benchmarks/profile_sync.py            # in-process layers, loopback, 16 threads
    python benchmarks/profile_sync.py --quick    # fewer rounds

Each figure is per call, in rounds that take the contenders in turn: the wall median, and the
least CPU time of the calling thread (the CPU time is what the code costs; on a busy machine
the wall time mostly measures the neighbours). The layers, in-process (httpx.MockTransport):

- raw httpx.Client / raw httpx.AsyncClient inside one running loop (no loop entry per call);
- AsyncKolbo's status() inside one running loop: the async core's own cost;
- one task + ``run_forever()`` per call: the least an asyncio loop entry costs;
- the portal with an empty coroutine: the blocking client's fixed cost per call;
- Kolbo's status(): all of it.

Over loopback (the simulator served by a separate process, so that its server does not take
the GIL from the caller) the same for raw httpx sync/async and Kolbo: the async stack of
httpx (httpcore over anyio streams) is the floor for any client built on httpx.AsyncClient.
With 16 threads sharing one client, how many calls ran the loop in their own thread.
"""

from __future__ import annotations

import argparse
import collections
import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from scenarios import API, KEY, _mock_transport, _raw_sync_status, _threads_seconds

from kolbo_async import Kolbo
from kolbo_async import _portal as portal_module

_SERVER = """
import sys
from kolbo_async.testing import Simulator
sim = Simulator(rate_limits=False, credits=10**12)
gen_id = sim.create_generation(key=sys.argv[1])
with sim.serve() as base_url:
    print(base_url, gen_id, flush=True)
    sys.stdin.read()
"""


def _measure(cases: dict[str, Callable[[], object]], calls: int, rounds: int) -> None:
    """Print wall median and least thread CPU per call; each case runs `calls` calls."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for run in cases.values():
        run()  # warm-up
    for _ in range(rounds):
        for name, run in cases.items():
            gc.collect()
            wall, cpu = time.perf_counter(), time.thread_time()
            run()
            samples[name].append(
                ((time.perf_counter() - wall) / calls, (time.thread_time() - cpu) / calls)
            )
    base = statistics.median(w for w, _ in samples[next(iter(cases))])
    base_cpu = min(c for _, c in samples[next(iter(cases))])
    for name, values in samples.items():
        wall = statistics.median(w for w, _ in values)
        cpu = min(c for _, c in values)
        print(
            f"  {name:44s} wall {wall * 1e6:8.1f} µs ({wall / base:4.2f}x)"
            f"   cpu {cpu * 1e6:8.1f} µs ({cpu / base_cpu:4.2f}x)"
        )


def _repeat(fn: Callable[[], object], calls: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(calls):
            fn()

    return run


def _layers(
    client: Kolbo, raw: httpx.Client, base_url: str, gen_id: str, calls: int, rounds: int
) -> None:
    portal = client._runner.portal
    loop: Any = portal._loop
    gen = client.generations.attach(gen_id)
    transport = getattr(raw, "_transport", None)

    async def make() -> httpx.AsyncClient:
        if isinstance(transport, httpx.MockTransport):
            return httpx.AsyncClient(transport=transport)
        return httpx.AsyncClient()

    araw = portal.call(make)

    async def raw_async() -> object:
        response = await araw.get(
            f"{base_url}/api/v1/generate/{gen_id}/status", headers={"X-API-Key": KEY}
        )
        response.raise_for_status()
        data = response.json()
        return data["state"], data["progress"], data.get("result")

    async def in_loop(fn: Callable[[], Any]) -> None:
        for _ in range(calls):
            await fn()

    async def nothing() -> None:
        return None

    async def stopping(fn: Callable[[], Any]) -> object:
        try:
            return await fn()
        finally:
            loop.stop()

    def task_per_call() -> object:
        task = loop.create_task(stopping(gen._inner.status))
        loop.run_forever()
        return task.result()

    _measure(
        {
            "raw httpx.Client": _repeat(_raw_sync_status(raw, base_url, gen_id), calls),
            "raw httpx.AsyncClient, in one running loop": lambda: portal.call(in_loop, raw_async),
            "AsyncKolbo status(), in one running loop": lambda: portal.call(
                in_loop, gen._inner.status
            ),
            "one task + run_forever() per status()": _repeat(task_per_call, calls),
            "portal, empty coroutine": _repeat(lambda: portal.call(nothing), calls),
            "Kolbo status()": _repeat(gen.status, calls),
        },
        calls,
        rounds,
    )
    portal.call(araw.aclose)


def _threads(rounds: int) -> None:
    threads, per_thread = 16, 200
    transport = _mock_transport()
    raws = [httpx.Client(transport=transport) for _ in range(threads)]
    polls = [_raw_sync_status(raw, API, "gen1") for raw in raws]
    counts: collections.Counter[str] = collections.Counter()
    drive, wait = portal_module.Portal._drive, portal_module.Portal._wait

    def counted(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def run(self: Any, *args: Any) -> Any:
            counts[name] += 1
            return method(self, *args)

        return run

    with Kolbo(KEY, _transport=transport, rate_limits=None) as client:
        status = client.generations.attach("gen1").status
        ours: list[tuple[float, float]] = []
        base: list[tuple[float, float]] = []

        def shared(_: int) -> None:
            for _ in range(per_thread):
                status()

        def own(i: int) -> None:
            for _ in range(per_thread):
                polls[i]()

        setattr(portal_module.Portal, "_drive", counted("ran the loop", drive))  # noqa: B010
        setattr(portal_module.Portal, "_wait", counted("waited", wait))  # noqa: B010
        try:
            for _ in range(rounds):
                for fn, out in ((shared, ours), (own, base)):
                    cpu = time.process_time()
                    wall = _threads_seconds(fn, threads)
                    out.append((wall, time.process_time() - cpu))
        finally:
            setattr(portal_module.Portal, "_drive", drive)  # noqa: B010
            setattr(portal_module.Portal, "_wait", wait)  # noqa: B010
    for raw in raws:
        raw.close()
    n = threads * per_thread
    wall = statistics.median(b for b, _ in base) / statistics.median(o for o, _ in ours)
    cpu = statistics.median(b for _, b in base) / statistics.median(o for _, o in ours)
    print(
        f"  throughput, shared Kolbo / 16 raw clients: wall {wall:.2f}x, CPU {cpu:.2f}x;"
        f" {n * rounds} calls: {dict(counts)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args(argv)
    rounds = 5 if args.quick else 15
    print("in-process (httpx.MockTransport), per call:")
    transport = _mock_transport()
    with (
        Kolbo(KEY, _transport=transport, rate_limits=None) as client,
        httpx.Client(transport=transport) as raw,
    ):
        _layers(client, raw, API, "gen1", 1000, rounds)
    print("loopback (simulator in another process), per call:")
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, KEY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        base_url, gen_id = server.stdout.readline().split()
        with Kolbo(KEY, base_url=base_url, rate_limits=None) as client, httpx.Client() as raw:
            _layers(client, raw, base_url, gen_id, 100, rounds)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    print("16 threads, one shared Kolbo vs a raw httpx.Client each (in-process):")
    _threads(3 if args.quick else 7)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
