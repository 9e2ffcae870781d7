"""Fault-injection soak: many paid generations through the simulator's real loopback server.

    python benchmarks/soak.py                      # 1,000 generations (about a minute)
    python benchmarks/soak.py --generations 100    # quicker

The simulator injects, on status polls, 10 % 5xx (JSON or a proxy's HTML), 5 % dropped
connections and 2 % answers slower than the client's read timeout; on generation POSTs, 5 %
429s with Retry-After, 3 % connections dropped before the request is processed and 1 %
dropped after the generation was created and charged. The report compares the simulator's own
record with what the callers saw. Over TCP a connection dropped before processing looks the
same to a client as one dropped after, so both raise SubmissionOutcomeUnknownError here; the
in-process transport tells them apart (tests/test_e2e.py).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kolbo_async as k
from kolbo_async.testing import Simulator

KEY = "kolbo_live_" + "5" * 40


def run_soak(generations: int, *, concurrency: int = 48, speed: float = 600.0,
             seed: int = 1) -> dict[str, Any]:
    """Run the campaign; return the accounting (see the module docstring)."""
    sim = Simulator(speed=speed, seed=seed, rate_limits=False, credits=10**9,
                    pending_seconds=2.0, processing_seconds=60.0)
    faults = sim.faults
    faults.status_error_rate = 0.10
    faults.status_drop_rate = 0.05
    faults.status_slow_rate = 0.02
    faults.slow_seconds = 1.5  # real seconds, past the client's 1 s read timeout
    faults.generate_429_rate = 0.05
    faults.generate_refuse_rate = 0.03
    faults.generate_drop_after_create_rate = 0.01
    outcomes: dict[int, tuple[str, str | None]] = {}
    started = time.monotonic()
    with sim.serve() as base_url:

        async def one(client: k.AsyncKolbo, index: int, limit: anyio.Semaphore) -> None:
            async with limit:
                try:
                    # One in twenty fails at the server's decision (and is refunded).
                    marker = " [fail]" if index % 20 == 0 else ""
                    gen = await client.videos.generate(f"soak #{index}{marker}", duration=5)
                except k.SubmissionOutcomeUnknownError:
                    outcomes[index] = ("outcome unknown", None)
                    return
                except k.KolboError as error:
                    outcomes[index] = (type(error).__name__, None)
                    return
                try:
                    final = await gen.wait(timeout=600)
                    outcomes[index] = (final.state, gen.id)
                except k.GenerationFailedError as error:
                    outcomes[index] = (error.status.state, gen.id)
                except k.KolboError as error:
                    outcomes[index] = (type(error).__name__, gen.id)

        async def main() -> None:
            timeout = httpx.Timeout(1.0, connect=1.0)
            async with k.AsyncKolbo(KEY, base_url=base_url, rate_limits=None, timeout=timeout,
                                    max_retries=5, max_concurrent_requests=64) as client:
                limit = anyio.Semaphore(concurrency)
                async with anyio.create_task_group() as tg:
                    for index in range(generations):
                        tg.start_soon(one, client, index, limit)

        anyio.run(main)
    elapsed = time.monotonic() - started
    records = sim.generations
    requests = sim.requests
    by_prompt = collections.Counter(str(r.request.get("prompt")) for r in records.values())
    refunded = sum(1 for r in records.values() if r.refunded)
    learned = {gid for _, gid in outcomes.values() if gid}
    posts = [
        r for r in requests if r.method == "POST" and r.path.startswith("/api/v1/generate/video")
    ]
    dropped_after_create = sum(1 for r in posts if r.fault == "drop_after" and r.status == 200)
    unknown_calls = sum(1 for state, _ in outcomes.values() if state == "outcome unknown")
    states = collections.Counter(state for state, _ in outcomes.values())
    return {
        "generations requested": generations,
        "seconds": round(elapsed, 1),
        "created (simulator)": len(records),
        "completed (simulator)": sum(1 for r in records.values() if r.state == "completed"),
        "failed as the server decided": sum(1 for r in records.values() if r.state == "failed"),
        "refunded": refunded,
        "duplicate creations for one caller request": sum(n - 1 for n in by_prompt.values()),
        "created, id never learned": len(set(records) - learned),
        "POSTs dropped after creation": dropped_after_create,
        "calls that raised SubmissionOutcomeUnknownError": unknown_calls,
        "caller outcomes": dict(states),
        "requests": len(requests),
        "requests per generation created": round(len(requests) / max(1, len(records)), 2),
        "status polls that failed (injected)": sum(
            1 for r in requests if r.path.endswith("/status") and (r.fault or r.status >= 500)
        ),
        "POST 429s": sum(1 for r in posts if r.status == 429),
    }


def run_storm(handles: int = 200, *, speed: float = 30.0) -> dict[str, Any]:
    """Many handles polling; one 429 with Retry-After lands; requests/s before, during, after.

    The simulator's 429 asks the client to wait until its one-minute window ends (up to 2 s
    real at this speed); every poller of the client waits it out together. "During" starts
    50 ms after the 429, once the requests already on the wire have landed.
    """
    sim = Simulator(speed=speed, rate_limits=False, credits=10**9,
                    pending_seconds=2.0, processing_seconds=240.0)
    with sim.serve() as base_url:

        async def main() -> None:
            async with k.AsyncKolbo(KEY, base_url=base_url, rate_limits=None) as client:
                # Submitted, not attached: the POST's poll_interval_hint carries the fast clock.
                gens = [await client.videos.generate(f"storm {i}") for i in range(handles)]
                async with anyio.create_task_group() as tg:
                    for gen in gens:
                        tg.start_soon(gen.wait)
                    await anyio.sleep(0.6)
                    sim.inject("status", "429")
                    await anyio.sleep(3.0)
                    tg.cancel_scope.cancel()

        anyio.run(main)
    polls = [r for r in sim.requests if r.path.endswith("/status")]
    storm = next(r for r in polls if r.status == 429)
    cooldown = (60 - storm.time % 60) / speed  # real seconds the server asked for
    at = storm.time / speed

    def rate(start: float, end: float) -> float:
        count = sum(1 for r in polls if start <= r.time / speed < end)
        return round(count / max(end - start, 1e-9), 1)

    return {
        "handles": handles,
        "Retry-After (real s)": round(cooldown, 3),
        "requests/s before": rate(at - 0.5, at),
        "requests/s during the cooldown": rate(at + 0.05, at + cooldown),
        "requests/s after": rate(at + cooldown, at + cooldown + 0.5),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fault-injection soak against the simulator")
    parser.add_argument("--generations", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=48)
    args = parser.parse_args(argv)
    report = run_soak(args.generations, concurrency=args.concurrency)
    print(json.dumps(report, indent=2))
    print(json.dumps({"429 storm": run_storm()}, indent=2))
    ok = (
        report["duplicate creations for one caller request"] == 0
        and report["created, id never learned"] == report["POSTs dropped after creation"]
        <= report["calls that raised SubmissionOutcomeUnknownError"]
    )
    print("INVARIANTS HOLD" if ok else "INVARIANTS BROKEN")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
