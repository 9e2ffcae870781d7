"""What a shared rate budget costs, and what it holds: admission latency per store, and six
processes hammering one budget.

    python benchmarks/rate_store.py                  # starts a redis-server of its own
    python benchmarks/rate_store.py --redis redis://127.0.0.1:6379/15
    python benchmarks/rate_store.py --smoke          # fewer rounds, no process run

Latency is one `Pacer.admit` (what a request waits before it is sent when nothing holds it),
median and p95 over many admissions into a budget too large to fill, on this machine's
loopback: in-process (the default), SQLite (a file in a temporary directory), Redis. The
process run starts six workers (half asyncio, half trio) on one budget of 10 per window for
3.5 windows of 1.5 s and counts what each window admitted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
from _servers import redis_url  # noqa: E402

from kolbo_async import RateLimits  # noqa: E402
from kolbo_async._clock import SYSTEM_CLOCK  # noqa: E402
from kolbo_async._pacing import GENERATE, REQUEST, Pacer  # noqa: E402

KEY = "kolbo_live_" + "be" * 20

WORKER = r"""
import json, sys, time
import anyio
from kolbo_async import RateLimits
from kolbo_async._clock import SYSTEM_CLOCK
from kolbo_async._pacing import Pacer
args = json.loads(sys.argv[1])

async def main():
    pacer = Pacer(RateLimits(10, 1000, store=args["store"]), SYSTEM_CLOCK,
                  api_key=args["key"], window=args["window"])
    print("ready", flush=True)
    start, stop = json.loads(await anyio.to_thread.run_sync(sys.stdin.readline))
    admitted = []
    async def hammer():
        while True:
            await pacer.admit("generate")
            admitted.append(time.time())
    await anyio.sleep(max(0.0, start - time.time()))
    with anyio.move_on_after(stop - time.time()):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hammer)
            tg.start_soon(hammer)
    print(json.dumps(admitted))

anyio.run(main, backend=args["backend"])
"""


async def latencies(store: str | None, rounds: int, backend_key: str) -> list[float]:
    limits = RateLimits(10**8, 10**9, store=store)
    pacer = Pacer(limits, SYSTEM_CLOCK, api_key=KEY + backend_key)
    for _ in range(20):  # warm-up: connection, schema, script load, worker thread
        await pacer.admit(REQUEST)
    times = []
    for i in range(rounds):
        bucket = GENERATE if i % 10 == 0 else REQUEST
        began = time.perf_counter()
        await pacer.admit(bucket)
        times.append(time.perf_counter() - began)
    return times


def processes(store: str, window: float = 1.5, workers: int = 6) -> list[int]:
    """Admissions per window of six processes on one budget of 10 per window."""
    key = f"{KEY}{time.time_ns()}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(
                {"store": store, "key": key, "window": window,
                 "backend": "trio" if i % 2 else "asyncio"})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
        )
        for i in range(workers)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
    start = time.time() + 0.2
    go = json.dumps([start, start + 3.5 * window]).encode() + b"\n"
    outs = [proc.communicate(go, timeout=60)[0] for proc in procs]
    times = sorted(t for out in outs for t in json.loads(out))
    worst = max(
        (sum(1 for u in times if t <= u < t + window - 0.05) for t in times), default=0
    )
    per = [0] * 4
    for t in times:
        per[min(3, int((t - times[0]) / window))] += 1
    print(f"  {store.partition(':')[0]:<7} {len(times)} admitted in 3.5 windows; per window {per}; "
          f"most in any sliding window: {worst}")  # fmt: skip
    return per


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="a Redis to use (default: start one)")
    parser.add_argument("--smoke", action="store_true", help="fewer rounds, no process run")
    args = parser.parse_args(argv)
    rounds = 200 if args.smoke else 3000
    with tempfile.TemporaryDirectory() as tmp, redis_url(args.redis) as redis:
        if redis is None:
            raise SystemExit("redis-server not found: apt-get install -y redis-server, or --redis")
        stores: list[tuple[str, str | None]] = [
            ("in-process (default)", None),
            ("sqlite", f"sqlite:///{Path(tmp) / 'rates.db'}"),
            ("redis (loopback)", redis),
        ]
        print(f"admission latency, one Pacer.admit ({rounds} rounds, 1 in 10 a generation)")
        print(f"  {'store':<22} {'median':>9} {'p95':>9}")
        for backend in ("asyncio", "trio"):
            for name, url in stores:
                times = anyio.run(latencies, url, rounds, backend + name, backend=backend)
                times.sort()
                print(f"  {name + ' ' + backend:<30} {statistics.median(times) * 1e3:7.3f} ms "
                      f"{times[int(len(times) * 0.95)] * 1e3:7.3f} ms")  # fmt: skip
        if not args.smoke:
            print("six processes, one budget of 10 per 1.5 s window, 3.5 windows")
            processes(stores[1][1] or "")
            processes(redis)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
