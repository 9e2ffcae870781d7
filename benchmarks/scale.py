"""Scale scenarios: a batch of 500 paced POSTs, and watching 1,000 / 10,000 generations.

The simulator runs in its own process (its CPU must not be billed to the client through the
GIL), serving loopback HTTP with Kolbo's rate limits on a compressed clock. The client runs
on the same compressed timeline (a `ScaledClock` sharing the server's origin; the server
sends hints in simulated seconds), so its rate windows and poll intervals are Kolbo's own,
only faster.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from typing import Any

import anyio
import httpx
from _harness import Row, Series, per_window, record, recording

import kolbo_async
from kolbo_async import AsyncKolbo, TextToVideo
from kolbo_async._retries import POLL_BUDGET_SHARE
from kolbo_async.testing import ScaledClock

KEY = "kolbo_live_" + "5" * 40
RPM = 300
HINT = 8.0

_SERVER = r"""
import json, random, sys
from kolbo_async.testing import Simulator

speed, count, low, high, key = (float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]),
                                float(sys.argv[4]), sys.argv[5])
sim = Simulator(speed=speed, rate_limits=True, scaled_hints=False, pending_seconds=3.0,
                processing_seconds=low, seed=1, credits=10**7)
rng = random.Random(1)
finish = {}
for _ in range(count):
    gen_id = sim.create_generation(key=key, processing_seconds=rng.uniform(low, high))
    record = sim._state.generations[gen_id]
    finish[gen_id] = record.created_at + record.pending_seconds + record.processing_seconds
with sim.serve() as url:
    print(json.dumps({"url": url, "origin": sim.clock._origin, "finish": finish}), flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            requests = sim.requests
            print(json.dumps({
                "429": sum(r.status == 429 for r in requests),
                "status": sum(r.path.endswith("/status") and r.status == 200 for r in requests),
                "posts": sorted(r.time for r in requests if r.method == "POST" and r.status == 200),
                "done": {g.id: g.created_at + g.pending_seconds + g.processing_seconds
                         for g in sim.generations.values()},
            }), flush=True)
        elif line.strip() == "series":  # asked only when charts are drawn
            windows = {"status": {}, "post": {}, "429": {}}
            for r in sim.requests:
                kind = ("429" if r.status == 429 else "post" if r.method == "POST"
                        else "status" if r.path.endswith("/status") else None)
                if kind is not None:
                    window = windows[kind]
                    window[int(r.time // 60)] = window.get(int(r.time // 60), 0) + 1
            print(json.dumps(windows), flush=True)
        elif line.strip() == "nolimits":
            sim._state.rate_limits = False
            print('"ok"', flush=True)
"""


class _Server:
    """The simulator in a subprocess; `ask` sends one command and reads one answer line."""

    def __init__(self, speed: float, count: int, low: float, high: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(speed), str(count), str(low), str(high), KEY],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None
        info = json.loads(self.process.stdout.readline())
        self.url: str = info["url"]
        self.finish: dict[str, float] = info["finish"]
        self.clock = ScaledClock(speed)
        self.clock._origin = info["origin"]  # CLOCK_MONOTONIC is shared across processes

    def ask(self, command: str) -> Any:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.process.stdout.close()


def pacing(smoke: bool) -> list[Row]:
    """500 generations through generate_many: the POST rate against the 10/min limit."""
    count = 60 if smoke else 500
    speed = 200.0
    gpm = 10
    server = _Server(speed, 0, 20.0, 20.0)
    try:
        async def run() -> tuple[float, float]:
            async with AsyncKolbo(KEY, base_url=server.url, _clock=server.clock) as client:
                start = server.clock.now()
                requests = [TextToVideo(f"prompt {i}") for i in range(count)]
                outcomes = [o async for o in client.videos.generate_many(requests, concurrency=50)]
                errors = [repr(o.error) for o in outcomes if o.error is not None]
                assert not errors, errors[:3]
                return start, server.clock.now() - start

        start, total = anyio.run(run)
        stats = server.ask("stats")
        windows = server.ask("series") if recording() else None
    finally:
        server.close()
    posts = stats["posts"]
    # Kolbo counts fixed one-minute windows.
    worst = max(Counter(int(t // 60.0) for t in posts).values())
    minimum = (math.ceil(count / gpm) - 1) * 60.0  # the last POST's earliest possible time
    span = posts[-1] - posts[0]
    generation = 3.0 + 20.0
    if windows is not None:
        record(Series(
            f"generate_many: {count} POSTs", "POSTs",
            per_window(windows["post"], start, start + total),
            per_window(windows["429"], start, start + total),
            offset=start % 60.0, limits=[(f"Kolbo's limit, {gpm}/min", float(gpm))],
            note=f"simulated clock x{speed:.0f}; {stats['429']} x 429",
        ))
    return [Row(
        f"pacing: {count} POSTs at {gpm}/min", span, minimum, "sim s",
        baseline_name="limit's minimum", goal=1.05,
        note=f"{stats['429']} x 429; busiest minute {worst}/{gpm}; whole batch "
        f"{total:.0f} s vs {minimum + generation:.0f} s minimum",
    )]


def watching(smoke: bool) -> list[Row]:
    """as_completed over pre-created generations, within 300 requests/min."""
    rows: list[Row] = []
    sizes = [200] if smoke else [1_000, 10_000]
    for count in sizes:
        rows.extend(_watch(count, smoke))
    rows.append(_memory(2_000 if smoke else 10_000))
    return rows


def _watch(count: int, smoke: bool) -> list[Row]:
    budget = RPM * POLL_BUDGET_SHARE / 60.0
    planned = max(HINT, count / budget)  # every handle's interval, all hints being 8 s
    allowed = max(HINT, count / (RPM / 60.0))  # the same at the whole budget
    # Generations outlive a few intervals, so completions are spread over time.
    low, high = 2.0 * planned, 4.0 * planned
    speed = 60.0
    server = _Server(speed, count, low, high)
    try:
        async def run() -> tuple[dict[str, float], float, int, float, float]:
            noticed: dict[str, float] = {}
            async with AsyncKolbo(KEY, base_url=server.url, _clock=server.clock) as client:
                pool = client._pipeline.http._transport._pool  # type: ignore[attr-defined]
                most = 0
                handles = [client.generations.attach(i) for i in server.finish]
                start = server.clock.now()
                cpu = time.process_time()
                wall = time.perf_counter()
                async with anyio.create_task_group() as tg:

                    async def sample() -> None:
                        nonlocal most
                        while True:
                            most = max(most, len(pool.connections))
                            await anyio.sleep(0.02)

                    tg.start_soon(sample)
                    async for outcome in kolbo_async.as_completed(handles):
                        assert outcome.error is None, outcome.error
                        assert outcome.generation is not None
                        noticed[outcome.generation.id] = server.clock.now()
                    tg.cancel_scope.cancel()
                cpu = time.process_time() - cpu
                wall = time.perf_counter() - wall
            return noticed, start, most, cpu, wall

        noticed, start, most, cpu, wall = anyio.run(run)
        stats = server.ask("stats")
        windows = server.ask("series") if recording() else None
        server.ask("nolimits")
        rate = stats["status"] / wall
        raw_cpu = _raw_cpu_per_get(
            server.url, next(iter(server.finish)), 300 if smoke else 3000, rate
        )
    finally:
        server.close()
    done = stats["done"]
    lags = [noticed[i] - done[i] for i in noticed]
    polls = stats["status"]
    minimum = sum(math.ceil(max(0.0, done[i] - start) / allowed) for i in done)
    name = f"watching {count:,}"
    if windows is not None:
        end = max(noticed.values())
        record(Series(
            f"as_completed: watching {count:,} generations", "status requests",
            per_window(windows["status"], start, end), per_window(windows["429"], start, end),
            offset=start % 60.0,
            limits=[(f"Kolbo's limit, {RPM}/min", float(RPM)),
                    (f"poll budget ({POLL_BUDGET_SHARE:.0%})", RPM * POLL_BUDGET_SHARE)],
            lags=sorted((done[i] - start, noticed[i] - done[i]) for i in noticed),
            lag_goal=planned,
            note=f"simulated clock x{speed:.0f}: {rate:.0f} polls a real second; "
            f"{stats['429']} x 429",
        ))
    return [
        Row(f"{name}: status requests", polls, minimum, "requests",
            baseline_name="hints+budget minimum", goal=1.1,
            note=f"{stats['429']} x 429; planned interval {planned:.0f} s, at the whole "
            f"budget {allowed:.0f} s"),
        Row(f"{name}: worst lag to notice a completion", max(lags), planned, "sim s",
            baseline_name="planned interval", goal=1.1,
            note=f"median {sorted(lags)[len(lags) // 2]:.0f} s; jitter adds up to 10 %"),
        Row(f"{name}: client CPU per status poll", cpu / max(polls, 1), raw_cpu, "s",
            goal=1.25, note=f"raw at the same pace ({rate:.0f}/s real); at most {most} "
            "sockets open (pool of 32)"),
    ]


def _raw_cpu_per_get(url: str, gen_id: str, count: int, rate: float) -> float:
    """Process CPU per GET (+ JSON decode) of raw httpx polling the same server at the same
    pace (`rate` requests per real second, from 8 tasks): the same work, timers included."""

    async def run() -> float:
        async with httpx.AsyncClient(base_url=url) as raw:
            path = f"/api/v1/generate/{gen_id}/status"
            headers = {"X-API-Key": KEY}
            todo = iter(range(count))
            pause = 8 / rate

            async def worker() -> None:
                for _ in todo:
                    response = await raw.get(path, headers=headers)
                    response.json()
                    await anyio.sleep(pause)

            cpu = time.process_time()
            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(worker)
            return (time.process_time() - cpu) / count

    return anyio.run(run)


def _memory(count: int) -> Row:
    """Python memory held per watched handle: handle, poller entry, last status."""
    status = json.dumps({"success": True, "generation_id": "x", "state": "processing",
                         "progress": 40, "poll_interval_hint": 8}).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=status, headers={"content-type": "application/json"})

    async def run() -> float:
        async with AsyncKolbo(KEY, rate_limits=None,
                              _transport=httpx.MockTransport(handler)) as client:
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            handles = [client.generations.attach(f"{i:024x}") for i in range(count)]
            batch = kolbo_async.as_completed(handles)
            polled = 0
            with anyio.move_on_after(60):
                poller = client._poller
                async with anyio.create_task_group() as tg:
                    tg.start_soon(batch.__anext__)
                    while polled < count:
                        await anyio.sleep(0.05)
                        polled = sum(1 for h in handles if poller.track(h.id).version)
                    tg.cancel_scope.cancel()
            held = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            assert poller.plan.counted == count
            # Stopping the batch warns about the handles left; expected here.
            logging.getLogger("kolbo_async").setLevel(logging.ERROR)
            await batch.aclose()
            logging.getLogger("kolbo_async").setLevel(logging.NOTSET)
            return held / count

    per_handle = anyio.run(run)
    return Row(f"memory per watched handle ({count:,})", per_handle / 1024, 20.0, "KB",
               baseline_name="budget (20 KB)", goal=1.0,
               note="tracemalloc: handle, poller entry, last status, listener slot")
