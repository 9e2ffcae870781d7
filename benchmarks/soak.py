"""Fault-injection soak: many paid generations through a real gateway in front of the simulator.

    python benchmarks/soak.py                      # 1,000 generate() + 1,000 in a batch (~1 min)
    python benchmarks/soak.py --generations 100    # quicker

The SDK talks to a reverse proxy (benchmarks/_gateway.py) on loopback, which forwards to the
simulator's loopback server. The simulator injects, on status polls, 10 % 5xx (JSON or a
proxy's HTML), 5 % dropped connections and 2 % answers slower than the client's read timeout;
on generation POSTs, 5 % 429s with Retry-After, 3 % connections dropped before the request is
processed and 1 % dropped after the generation was created and charged (the gateway answers
both drops with its own 502 page, as nginx does). The gateway then replaces the answer of a
generation the simulator created and charged: 3 % with a 502 page, 3 % a 504 page, 2 % a
Cloudflare 524 page, 2 % a 200 nobody can read.

Three runs: N single `generate()` calls; N items through `generate_many` with a journal; the
same batch again with the same journal. The figures come from the simulator's records (what
was created and charged) and the gateway's (what it did to each POST), compared with what the
callers were told. The invariants: no item created twice, even across the rerun; the callers'
`SubmissionOutcomeUnknownError`s are exactly the POSTs the gateway replaced or lost; every
generation created was either reported with its id or is behind one of those unknowns; the
credits charged are the credits reported plus the credits behind the unknowns.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gateway import REPLACEMENTS, UPSTREAM_LOST, GatewayRates, Passage, serve_gateway

import kolbo_async as k
from kolbo_async.testing import Simulator

KEY = "kolbo_live_" + "5" * 40
SINGLE = "generate()"
BATCH = "generate_many"
RERUN = "rerun, same journal"


@attrs.define
class Told:
    """What one caller was told about one item."""

    outcome: str  # a terminal state, "outcome unknown", or the error's class name
    generation_id: str | None = None
    credits: float | None = None


def _client(base_url: str) -> k.AsyncKolbo:
    return k.AsyncKolbo(KEY, base_url=base_url, rate_limits=None,
                        timeout=httpx.Timeout(1.0, connect=1.0), max_retries=5,
                        max_concurrent_requests=64)


def _prompt(label: str, index: int) -> str:
    # One in twenty fails at the server's decision (and is refunded).
    return f"soak {label} #{index}" + (" [fail]" if index % 20 == 0 else "")


def item_prompts(generations: int) -> list[str]:
    """Every prompt a soak of `generations` sends: the generate() calls', then the batch's."""
    return [_prompt(label, i) for label in ("single", "batch") for i in range(generations)]


def _told_from(generation: k.AsyncGeneration, outcome: str) -> Told:
    submission = generation.submission
    charged = submission.credits_charged if submission is not None else None
    return Told(outcome, generation.id, charged)


async def _singles(base_url: str, prompts: list[str], told: dict[str, Told],
                   concurrency: int) -> None:
    async def one(client: k.AsyncKolbo, prompt: str, limit: anyio.Semaphore) -> None:
        async with limit:
            try:
                gen = await client.videos.generate(prompt, duration=5)
            except k.SubmissionOutcomeUnknownError:
                told[prompt] = Told("outcome unknown")
                return
            except k.KolboError as error:
                told[prompt] = Told(type(error).__name__)
                return
            try:
                final = await gen.wait(timeout=600)
                told[prompt] = _told_from(gen, final.state)
            except k.GenerationFailedError as error:
                told[prompt] = _told_from(gen, error.status.state)
            except k.KolboError as error:
                told[prompt] = _told_from(gen, type(error).__name__)

    async with _client(base_url) as client:
        limit = anyio.Semaphore(concurrency)
        async with anyio.create_task_group() as tg:
            for prompt in prompts:
                tg.start_soon(one, client, prompt, limit)


async def _batch(base_url: str, prompts: list[str], told: dict[str, Told],
                 concurrency: int, journal: Path) -> None:
    requests = [k.TextToVideo(prompt, duration=5) for prompt in prompts]
    async with _client(base_url) as client:
        batch = client.videos.generate_many(requests, concurrency=concurrency, journal=journal)
        async with batch:
            async for outcome in batch:
                prompt = prompts[outcome.index]
                if prompt in told:
                    raise AssertionError(f"generate_many yielded item {outcome.index} twice")
                error = outcome.error
                if outcome.generation is not None:
                    state = outcome.status.state if outcome.status is not None else None
                    told[prompt] = _told_from(outcome.generation,
                                              state or type(error).__name__)
                elif isinstance(error, k.SubmissionOutcomeUnknownError):
                    told[prompt] = Told("outcome unknown")
                else:
                    told[prompt] = Told(type(error).__name__)


def _run(deadline: float, step: Callable[..., Any], *args: Any) -> float:
    """Run one phase on its own event loop; a phase that hangs is a finding, not a wait."""
    started = time.monotonic()

    async def bounded() -> None:
        with anyio.fail_after(deadline):
            await step(*args)

    anyio.run(bounded)
    return time.monotonic() - started


def run_soak(generations: int, *, concurrency: int = 48, speed: float = 600.0, seed: int = 1,
             rates: GatewayRates | None = None, journal_dir: Path | None = None,
             deadline: float = 600.0) -> dict[str, dict[str, Any]]:
    """Run the three phases; return their figures by column (see the module docstring)."""
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
    prompts = item_prompts(generations)
    singles, items = prompts[:generations], prompts[generations:]
    told: dict[str, dict[str, Told]] = {SINGLE: {}, BATCH: {}, RERUN: {}}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        journal = (journal_dir or Path(scratch)) / "soak-journal.db"
        journal.unlink(missing_ok=True)
        with sim.serve() as sim_url, serve_gateway(sim_url, rates, seed=seed) as (url, gateway):
            seconds[SINGLE] = _run(deadline, _singles, url, singles, told[SINGLE], concurrency)
            seconds[BATCH] = _run(deadline, _batch, url, items, told[BATCH], concurrency,
                                  journal)
            cut, before = len(gateway.passages), set(sim.generations)
            seconds[RERUN] = _run(deadline, _batch, url, items, told[RERUN], concurrency,
                                  journal)
    records = sim.generations
    passages = gateway.passages
    report = {
        SINGLE: _figures(singles, told[SINGLE], records, passages),
        BATCH: _figures(items, told[BATCH], {i: r for i, r in records.items() if i in before},
                        passages[:cut]),
        RERUN: _rerun_figures(items, told[BATCH], told[RERUN], records, before,
                              passages[cut:]),
    }
    for column, spent in seconds.items():
        report[column]["seconds"] = round(spent, 1)
    return report


def _figures(prompts: list[str], told: dict[str, Told], records: Any,
             passages: list[Passage]) -> dict[str, Any]:
    """One run's accounting: the simulator's and the gateway's records against the callers'."""
    mine = set(prompts)
    created = [r for r in records.values() if r.request.get("prompt") in mine]
    per_item = collections.Counter(str(r.request["prompt"]) for r in created)
    passed = [p for p in passages if p.prompt in mine]
    actions = collections.Counter(p.action for p in passed)
    replaced = {p.prompt for p in passed if p.action in REPLACEMENTS}
    lost = {p.prompt for p in passed if p.action == UPSTREAM_LOST}
    unknown = {prompt for prompt, t in told.items() if t.outcome == "outcome unknown"}
    reported = {t.generation_id: prompt for prompt, t in told.items() if t.generation_id}
    heard = [r for r in created if r.id in reported]
    unheard = [r for r in created if r.id not in reported]
    charged = sum(r.credits for r in created)
    told_credits = sum(told[reported[r.id]].credits or 0.0 for r in heard)
    behind_unknowns = sum(r.credits for r in unheard)
    states = collections.Counter(t.outcome for t in told.values())
    return {
        "items": len(prompts),
        "items the caller heard about": len(told),
        "generation POSTs through the gateway": len(passed),
        "created (simulator)": len(created),
        "items created twice (paid twice)": sum(n - 1 for n in per_item.values() if n > 1),
        "created, answer replaced by the gateway": len(replaced),
        **{f"  {name.replace('_', ' ')}": actions[name] for name in REPLACEMENTS},
        "upstream connection lost (gateway 502)": len(lost),
        "  of which created": len(lost & set(per_item)),
        "raised SubmissionOutcomeUnknownError": len(unknown),
        "unknowns the gateway did not cause": len(unknown - replaced - lost),
        "gateway-caused, not surfaced as unknown": len((replaced | lost) - unknown),
        "created, id reported to the caller": len(heard),
        "created, id never reported": len(unheard),
        "  not behind an unknown": sum(
            1 for r in unheard if r.request["prompt"] not in unknown
        ),
        "ids reported for another item": sum(
            1 for r in heard if reported[r.id] != r.request["prompt"]
        ),
        "ids reported, never created": len(set(reported) - {r.id for r in created}),
        "credits charged (simulator)": _round(charged),
        "credits reported to callers": _round(told_credits),
        "credits behind unknowns": _round(behind_unknowns),
        "credits unaccounted for": _round(charged - told_credits - behind_unknowns),
        "credits refunded (failed)": _round(sum(r.credits for r in created if r.refunded)),
        "completed / failed (callers)": f"{states['completed']} / {states['failed']}",
        "caller outcomes": dict(states),
    }


def _rerun_figures(prompts: list[str], first: dict[str, Told], again: dict[str, Told],
                   records: Any, before: set[str], passages: list[Passage]) -> dict[str, Any]:
    """The second run on the same journal: what it sent, created and re-reported."""
    mine = set(prompts)
    created = [r for r in records.values() if r.request.get("prompt") in mine]
    per_item = collections.Counter(str(r.request["prompt"]) for r in created)
    fresh = [r for r in created if r.id not in before]
    first_unknown = {p for p, t in first.items() if t.outcome == "outcome unknown"}
    unknown = {p for p, t in again.items() if t.outcome == "outcome unknown"}
    first_ids = {p: t.generation_id for p, t in first.items() if t.generation_id}
    return {
        "items": len(prompts),
        "items the caller heard about": len(again),
        "generation POSTs through the gateway": len(passages),
        "created (simulator)": len(fresh),
        "items created twice (paid twice)": sum(n - 1 for n in per_item.values() if n > 1),
        "new creations for items created before": sum(
            1 for r in fresh if first_ids.get(r.request["prompt"]) or (
                r.request["prompt"] in first_unknown)
        ),
        "raised SubmissionOutcomeUnknownError": len(unknown),
        "unknowns: the first run's items": "yes" if unknown == first_unknown else "NO",
        "ids reported again, same as first run": sum(
            1 for p, gid in first_ids.items() if again.get(p, Told("")).generation_id == gid
        ),
        "ids of the first run not reported again": sum(
            1 for p, gid in first_ids.items() if again.get(p, Told("")).generation_id != gid
        ),
        "caller outcomes": dict(collections.Counter(t.outcome for t in again.values())),
    }


def _round(value: float) -> float:
    return round(value, 2)


def broken(report: dict[str, dict[str, Any]]) -> list[str]:
    """The invariants that do not hold, as readable sentences (empty: all hold)."""
    problems = []
    for column in (SINGLE, BATCH):
        figures = report[column]
        zero = ("items created twice (paid twice)", "unknowns the gateway did not cause",
                "gateway-caused, not surfaced as unknown", "  not behind an unknown",
                "ids reported for another item", "ids reported, never created",
                "credits unaccounted for")
        problems += [f"{column}: {name.strip()} = {figures[name]}" for name in zero
                     if figures[name] != 0]
        if figures["items the caller heard about"] != figures["items"]:
            problems.append(f"{column}: not every item had an outcome")
    rerun = report[RERUN]
    for name in ("items created twice (paid twice)", "new creations for items created before",
                 "ids of the first run not reported again"):
        if rerun[name] != 0:
            problems.append(f"{RERUN}: {name.strip()} = {rerun[name]}")
    if rerun["unknowns: the first run's items"] != "yes":
        problems.append(f"{RERUN}: the unknowns are not the first run's")
    if rerun["items the caller heard about"] != rerun["items"]:
        problems.append(f"{RERUN}: not every item had an outcome")
    return problems


def table(report: dict[str, dict[str, Any]]) -> str:
    """The figures as a plain-text table, one column per run."""
    columns = list(report)
    rows: list[str] = []
    for figures in report.values():
        rows += [name for name in figures if name not in rows and name != "caller outcomes"]
    width = max(map(len, rows)) + 2
    lines = ["".ljust(width) + "".join(c.rjust(22) for c in columns)]
    for name in rows:
        cells = (str(report[c].get(name, "")) for c in columns)
        lines.append(name.ljust(width) + "".join(cell.rjust(22) for cell in cells))
    return "\n".join(lines)


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
    parser = argparse.ArgumentParser(description="fault-injection soak behind a real gateway")
    parser.add_argument("--generations", type=int, default=1000,
                        help="items per run (generate() calls, then batch items)")
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    report = run_soak(args.generations, concurrency=args.concurrency, seed=args.seed)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table(report))
        for column, figures in report.items():
            print(f"{column}: {figures['caller outcomes']}")
    print(json.dumps({"429 storm": run_storm()}, indent=2))
    problems = broken(report)
    for problem in problems:
        print("BROKEN:", problem)
    print("INVARIANTS BROKEN" if problems else "INVARIANTS HOLD")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
