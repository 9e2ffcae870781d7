"""A blocking shared batch still alive at interpreter exit (left with ``break`` at module
level, or held by a Ctrl-C's traceback) still records the outcomes it gave as handed out:
another worker never gives them again (before the fix it did, once the lease ran out)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from typing import Any

import pytest

from . import forked
from .test_adversary_batch2_shared import spawn as spawn  # noqa: PLC0414
from .test_adversary_shared_journal import KEY, ROOT, Worker, post_counts, simulator
from .test_journal_pg import batch_name
from .test_journal_pg import postgres_url as postgres_url  # noqa: PLC0414

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from kolbo_async import Kolbo, RateLimits, TextToVideo
    a = json.loads(sys.argv[1])
    with Kolbo(a["key"], base_url=a["url"], rate_limits=RateLimits(a["gpm"], 100_000)) as c:
        batch = c.videos.generate_many([TextToVideo(p) for p in a["prompts"]],
                                       journal=a["journal"], batch_id=a["batch"], lease=1.0)
        for o in batch:
            print(json.dumps([o.index, None, o.generation.id, a["prompts"][o.index]]), flush=True)
            break
    # `batch` is a module global: collected at interpreter exit
    """
)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("gpm", [3, 1000])
def test_outcome_given_by_a_batch_alive_at_exit_is_not_given_again(
    postgres_url: str, spawn: Any, gpm: int
) -> None:
    batch = batch_name()
    prompts = [f"exit {i}" for i in range(6)]
    sim = simulator()
    with sim.serve() as url:
        args = {"url": url, "journal": postgres_url, "batch": batch, "prompts": prompts,
                "key": KEY, "gpm": gpm}  # fmt: skip
        proc = forked.Popen([sys.executable, "-c", SCRIPT, json.dumps(args)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT)  # fmt: skip
        first = Worker(proc).finish(timeout=30)
        assert proc.returncode == 0, first.err
        assert len(first.outcomes) == 1
        again = spawn(url, batch, prompts, mode="trio").finish(timeout=30)
    yielded = Counter(o[3] for w in (first, again) for o in w.outcomes)
    assert yielded == Counter(prompts), (first.outcomes, again.outcomes)  # each given once
    assert post_counts(sim) == Counter(prompts)
