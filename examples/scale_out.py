"""Scale out: several worker processes share one rate budget and one batch journal.

Each worker is a plain `multiprocessing` process with a client of its own. They pass the same
prompts and the same ``batch_id``: PostgreSQL hands each item to one worker (claimed before its
POST), and a worker that dies has its items finished by the others once its lease runs out.
The rate budget lives in one SQLite file (``RateLimits(store="sqlite:///...")``), so the
workers together keep Kolbo's per-minute limits; on many machines use ``redis://`` instead.

    # a PostgreSQL you can write to, and Kolbo's simulator (or leave --base-url out: the
    # example then serves one itself, at real speed with Kolbo's real limits)
    kolbo sandbox --port 8765 &
    python examples/scale_out.py --journal postgresql://localhost/kolbo \\
        --base-url http://127.0.0.1:8765 --workers 4 --prompts 40

Needs ``pip install 'kolbo-async[postgres,sim]'``. Against Kolbo itself: ``--kolbo``, with
your key in ``KOLBO_API_KEY``. With the simulator served here, the report also gives the
first-to-last POST time against the least the rate limit allows.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from kolbo_async import Kolbo, RateLimits, TextToVideo

SANDBOX_KEY = "kolbo_live_" + "0" * 40


def worker(number: int, options: dict[str, Any], results: Any) -> None:
    """One worker: run the shared batch, report each outcome it yields."""
    limits = RateLimits(int(options["per_minute"]), 300, store=str(options["rates"]))
    prompts = [TextToVideo(f"scale-out prompt {i}", duration=5)
               for i in range(int(options["prompts"]))]  # fmt: skip
    key = os.environ.get("KOLBO_API_KEY") or SANDBOX_KEY
    with Kolbo(key, base_url=options["base_url"], rate_limits=limits) as client:
        for outcome in client.videos.generate_many(
            prompts, journal=str(options["journal"]), batch_id=str(options["batch_id"]),
            lease=float(options["lease"]),
        ):  # fmt: skip
            error = None if outcome.error is None else type(outcome.error).__name__
            results.put((number, outcome.index, error))
    results.put((number, None, None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journal", default=os.environ.get("KOLBO_JOURNAL_URL"),
                        help="postgresql://... (default $KOLBO_JOURNAL_URL)")  # fmt: skip
    parser.add_argument("--base-url", help="a running `kolbo sandbox` (default: serve one here)")
    parser.add_argument("--kolbo", action="store_true", help="Kolbo itself (KOLBO_API_KEY)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--per-minute", type=int, default=10, help="generations per minute")
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--batch-id", default=f"scale-out-{uuid.uuid4().hex[:8]}")
    args = parser.parse_args(argv)
    if not args.journal:
        parser.error("--journal postgresql://... is required (or $KOLBO_JOURNAL_URL)")
    with ExitStack() as stack:
        sim = None
        base_url = args.base_url
        if base_url is None and not args.kolbo:
            from kolbo_async.testing import Simulator

            # Real time and Kolbo's real limits; short generations so the run is about pacing,
            # and credits for every prompt (the simulator's default account pays for ~290).
            sim = Simulator(speed=1.0, processing_seconds=4, pending_seconds=1, rate_limits=True,
                            generations_per_minute=args.per_minute,
                            credits=max(10_000, 100 * args.prompts))  # fmt: skip
            base_url = stack.enter_context(sim.serve())
        rates = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "rates.db"
        options = {"journal": args.journal, "batch_id": args.batch_id, "lease": args.lease,
                   "prompts": args.prompts, "per_minute": args.per_minute,
                   "rates": f"sqlite:///{rates}", "base_url": base_url}  # fmt: skip
        context = multiprocessing.get_context("spawn")  # no fork under threads
        results = context.Queue()
        procs = [context.Process(target=worker, args=(n, options, results))
                 for n in range(args.workers)]  # fmt: skip
        started = time.monotonic()
        for proc in procs:
            proc.start()
        per_worker: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        ended = 0
        while ended < len(procs):
            number, index, error = results.get()
            if index is None:
                ended += 1
                continue
            per_worker[number] += 1
            if error:
                errors[error] += 1
        for proc in procs:
            proc.join()
        report = {"batch_id": args.batch_id, "outcomes": sum(per_worker.values()),
                  "per_worker": dict(sorted(per_worker.items())), "errors": dict(errors),
                  "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
        if sim is not None:
            times = sorted(r.time for r in sim.requests
                           if r.method == "POST" and "/generate/video" in r.path)  # fmt: skip
            # The least a sliding window of `per_minute` a minute allows for the first to
            # the last of these POSTs: one full window per `per_minute` after the first burst.
            least = 60.0 * max(0, math.ceil(len(times) / args.per_minute) - 1)
            span = times[-1] - times[0] if times else 0.0
            report.update(posts=len(times), rate_limited=sum(r.status == 429 for r in sim.requests),
                          first_to_last_post=round(span, 2),
                          least_allowed=least,
                          ratio=round(span / least, 3) if least else None)  # fmt: skip
        print(json.dumps(report))
        return 0 if report["outcomes"] == args.prompts and not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
