"""Four worker processes watching 1,000 generations on one API key: private rate budgets
against one budget shared through a store (SQLite, Redis), counted at the server.

    python benchmarks/shared_budget.py                 # 1,000 generations, 300/min, 75 s a run
    python benchmarks/shared_budget.py --quick         # 200 generations, 60/min, 20 s a run
    python benchmarks/shared_budget.py --redis redis://127.0.0.1:6379/15
    python benchmarks/shared_budget.py --no-redis      # private and SQLite only

The server is what ``kolbo sandbox --speed 1`` serves: the simulator over real HTTP on
loopback, on a real-speed clock, enforcing Kolbo's limits (here 300 requests a minute per
client address, counted in fixed one-minute windows). A shared store times its windows by
real time, so the clock must not be sped up. Before each run the generations are created in
the simulator directly (no POST, no generation budget spent), long enough to be still running
when the run ends: every request of the run is a status poll.

Each run starts a fresh server and four worker processes (two on asyncio, two on trio); each
worker attaches 250 of the generations (`client.generations.attach(id)`) and waits on them with
`as_completed` for a fixed real-time window, its client paced by ``RateLimits(store=...)``:
``None`` (each process paces only itself: four budgets of 300/min on one key), then
``sqlite:///...`` and ``redis://...`` (one budget for all four). Counted at the server per run:
status requests received, answered, answered 429, the most received and answered in any
sliding 60 s, and the longest time with no poll answered; each worker's client counts the 429s
it was answered (through a hook). Exits 1 when a shared run saw a 429 (or the private run saw
none: then the comparison shows nothing).

What to expect (measured on a loaded 2-CPU machine): each client's poller plans for 90 % of
its budget, so four of them ask for about 1,080 polls a minute whichever budget they use. With
private budgets the server's minute is full after about 17 s; each process is answered one 429
(429s per worker 2/2/2/2 over two minutes), waits its Retry-After out (the rest of the
minute), and all four start again together with the next minute, so a sliding minute at the
server holds 350-380 polls. With one shared budget the store admits 300 in the same 17 s and
holds all four until those leave the window: 0 x 429, never more than 300 in a sliding minute.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import anyio
import attrs
from _servers import redis_url

from kolbo_async import AsyncKolbo, Event, RateLimits, RequestDone, as_completed
from kolbo_async.testing import RecordedRequest, Simulator

ROOT = Path(__file__).resolve().parent.parent
#: A key of the benchmark's own; the simulator accepts any ``kolbo_live_`` key. A fresh suffix
#: per run keeps runs apart in a Redis that outlives them (a budget is named by the key).
KEY = "kolbo_live_" + "5b" * 20
WORKERS = 4
MINUTE = 60.0


@attrs.frozen
class Mode:
    """How big a run is: generations watched, the server's and the clients' requests per
    minute, and the measured window in real seconds."""

    generations: int
    requests_per_minute: int
    seconds: float


FULL = Mode(generations=1000, requests_per_minute=300, seconds=75.0)
QUICK = Mode(generations=200, requests_per_minute=60, seconds=20.0)


@attrs.frozen
class RunResult:
    """What the server counted in one run (status polls only), and what the workers saw."""

    name: str
    received: int
    answered: int
    throttled: int
    most_received_60s: int
    most_answered_60s: int
    #: The longest real time with no poll answered 200 (a private run stalls in cooldowns).
    longest_silence: float
    other_requests: int
    worker_429s: list[int]
    seconds: float

    def row(self) -> str:
        return (f"{self.name:<22} {self.received:>9,} {self.answered:>9,} {self.throttled:>6,} "
                f"{self.most_received_60s:>13,} {self.most_answered_60s:>13,} "
                f"{self.longest_silence:>9.1f} s   "
                f"{'/'.join(map(str, self.worker_429s))}")  # fmt: skip


HEADER = (f"{'budget':<22} {'requests':>9} {'answered':>9} {'429s':>6} {'max recv/60s':>13} "
          f"{'max 200/60s':>13} {'no 200 for':>11}   429s per worker")  # fmt: skip


# -- a worker process ------------------------------------------------------------------------


async def _watch(args: dict[str, object]) -> None:
    """One worker: attach its generations, wait for the common start, watch them with
    `as_completed` for `seconds`, then print what its client saw (status codes, outcomes)."""
    logging.basicConfig(level=logging.ERROR)  # the batch names its unfinished handles at WARNING
    codes: Counter[str] = Counter()

    def count(event: Event) -> None:
        if isinstance(event, RequestDone):
            codes[str(event.status_code or event.error)] += 1

    store = args["store"]
    limits = RateLimits(
        requests_per_minute=int(str(args["rpm"])), store=str(store) if store else None
    )
    ids = [str(i) for i in args["ids"]]  # type: ignore[attr-defined]
    finished = 0
    async with AsyncKolbo(
        str(args["key"]), base_url=str(args["url"]), rate_limits=limits, hooks=[count]
    ) as client:
        handles = [client.generations.attach(gen_id) for gen_id in ids]
        print("ready", flush=True)
        start = float(await anyio.to_thread.run_sync(sys.stdin.readline))
        await anyio.sleep(max(0.0, start - time.time()))
        with anyio.move_on_after(float(str(args["seconds"]))):
            async for _ in as_completed(handles):
                finished += 1
    print(json.dumps({"codes": dict(codes), "finished": finished}), flush=True)


def worker_main(raw: str) -> int:
    args = json.loads(raw)
    anyio.run(_watch, args, backend=args["backend"])
    return 0


# -- the run ----------------------------------------------------------------------------------


def most_in_window(times: Sequence[float], window: float = MINUTE) -> int:
    """The most of `times` (sorted) inside any interval ``[t, t + window)``.

    Example:
        >>> most_in_window([0, 1, 59.9, 60, 61, 200])
        3
    """
    best = 0
    first = 0
    for last, moment in enumerate(times):
        while times[first] <= moment - window:
            first += 1
        best = max(best, last - first + 1)
    return best


def count(name: str, requests: Sequence[RecordedRequest], worker_429s: list[int],
          seconds: float) -> RunResult:  # fmt: skip
    """The server's view of one run: its status polls, per sliding minute."""
    polls = [r for r in requests if r.host == "api" and r.path.endswith("/status")]
    received = sorted(r.time for r in polls)
    answered = sorted(r.time for r in polls if r.status == 200)
    return RunResult(
        name=name,
        received=len(polls),
        answered=len(answered),
        throttled=sum(r.status == 429 for r in polls),
        most_received_60s=most_in_window(received),
        most_answered_60s=most_in_window(answered),
        longest_silence=max((b - a for a, b in itertools.pairwise(answered)), default=0.0),
        other_requests=len(requests) - len(polls),
        worker_429s=worker_429s,
        seconds=seconds,
    )


def run(name: str, store: str | None, mode: Mode, label: str, seed: int = 0) -> RunResult:
    """One run on a fresh server: four workers, each watching a quarter of the generations."""
    key = f"{KEY}{os.getpid()}x{label}"
    # Rate limits on, at real speed: what `kolbo sandbox --speed 1` serves. The generations
    # outlive the run (and its start-up), so none finishes and every request is a poll.
    sim = Simulator(
        speed=1.0, rate_limits=True, requests_per_minute=mode.requests_per_minute, seed=seed,
        pending_seconds=3.0, processing_seconds=mode.seconds + 600,
    )  # fmt: skip
    ids = [sim.create_generation(f"watched {i}", key=key) for i in range(mode.generations)]
    share = -(-len(ids) // WORKERS)
    with sim.serve() as url, tempfile.TemporaryDirectory() as logs:
        procs = []
        for i in range(WORKERS):
            args = {"key": key, "url": url, "store": store, "rpm": mode.requests_per_minute,
                    "ids": ids[i * share:(i + 1) * share], "seconds": mode.seconds,
                    "backend": "trio" if i % 2 else "asyncio"}  # fmt: skip
            with open(Path(logs) / f"{i}.err", "wb") as err:  # a file: a pipe could fill up
                procs.append(subprocess.Popen(
                    [sys.executable, __file__, "--worker", json.dumps(args)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=ROOT,
                ))  # fmt: skip
        try:
            for i, proc in enumerate(procs):  # every worker imported, built its client, attached
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if line != b"ready\n":
                    proc.kill()
                    proc.wait()
                    raise RuntimeError(f"a worker did not start:\n{_tail(logs, i)}")
            start = time.time() + 0.5
            began = time.monotonic()
            for proc in procs:  # every worker told before any is waited for
                assert proc.stdin is not None
                proc.stdin.write(f"{start}\n".encode())
                proc.stdin.close()
            outs = []
            for proc in procs:
                assert proc.stdout is not None
                outs.append(proc.stdout.read())  # until it exits (its report is one line)
                proc.wait(timeout=30)
            seconds = time.monotonic() - began
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        pipe.close()
        reports = []
        for i, (proc, out) in enumerate(zip(procs, outs, strict=True)):
            if proc.returncode != 0:
                raise RuntimeError(f"a worker failed ({proc.returncode}):\n{_tail(logs, i)}")
            reports.append(json.loads(out.decode().strip().splitlines()[-1]))
        requests = sim.requests
    if any(report["finished"] for report in reports):
        raise RuntimeError("a watched generation finished during the run: make them longer")
    return count(name, requests, [int(r["codes"].get("429", 0)) for r in reports], seconds)


def _tail(logs: str, worker: int) -> str:
    return (Path(logs) / f"{worker}.err").read_bytes().decode(errors="replace")[-3000:]


def bench(mode: Mode, redis: str | None, use_redis: bool = True) -> list[RunResult]:
    """The private run, then one run per shared store; prints the table as it goes."""
    print(f"{WORKERS} processes watching {mode.generations:,} generations for "
          f"{mode.seconds:g} s a run; server and clients at {mode.requests_per_minute}/min "
          f"(the server counts fixed one-minute windows, the clients sliding ones)")  # fmt: skip
    print(HEADER, flush=True)
    results = []
    servers = redis_url(redis) if use_redis else nullcontext(None)
    with tempfile.TemporaryDirectory() as tmp, servers as url:
        stores: list[tuple[str, str | None]] = [
            ("private (store=None)", None),
            ("shared: sqlite", f"sqlite:///{Path(tmp) / 'rates.db'}"),
        ]
        if url is not None:
            stores.append(("shared: redis", url))
        elif use_redis:
            print("(redis-server not installed: no Redis run)", flush=True)
        for label, (name, store) in enumerate(stores):
            result = run(name, store, mode, f"{time.time_ns()}r{label}", seed=label)
            results.append(result)
            print(result.row(), flush=True)
    return results


def verdict(results: Sequence[RunResult]) -> list[str]:
    """What is wrong with a set of runs: a shared run throttled, a private one never."""
    problems = [f"{r.name}: {r.throttled} x 429" for r in results
                if r.name.startswith("shared") and r.throttled]  # fmt: skip
    problems += [f"{r.name}: no 429 (nothing to compare)" for r in results
                 if r.name.startswith("private") and not r.throttled]  # fmt: skip
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK.generations} generations, {QUICK.requests_per_minute}/min, "
                             f"{QUICK.seconds:g} s a run")  # fmt: skip
    parser.add_argument("--seconds", type=float, help="the measured window of each run")
    parser.add_argument("--redis", help="a Redis to use (default: start one)")
    parser.add_argument("--no-redis", action="store_true", help="no Redis run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    mode = QUICK if args.quick else FULL
    if args.seconds:
        mode = attrs.evolve(mode, seconds=args.seconds)
    results = bench(mode, args.redis, use_redis=not args.no_redis)
    problems = verdict(results)
    for problem in problems:
        print(f"FAIL {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
