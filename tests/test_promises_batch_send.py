"""Promises of a batch item's POST (`kolbo_async._batch_send`) that its mutation run found
untested: a POST that failed without Kolbo refusing it (a 5xx in Kolbo's own envelope) ends
outcome-unknown, its message says which item, why, and whether a rerun with the journal would
report it rather than pay again, and it keeps the error as its cause. Counted at the simulator.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import kolbo_async as k
from kolbo_async import TextToVideo
from kolbo_async.testing import Simulator, VirtualClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "e1" * 20


def posts(sim: Simulator) -> int:
    return sum(r.method == "POST" and r.path == "/api/v1/generate/video" for r in sim.requests)


@pytest.mark.parametrize("journaled", [True, False], ids=["journal", "no-journal"])
async def test_a_5xx_refusal_ends_outcome_unknown_and_says_what_a_rerun_does(
    tmp_path: Path, journaled: bool
) -> None:
    sim = Simulator(clock=VirtualClock())
    sim.inject("generate", "500")  # Kolbo's own 500: nothing says it created nothing
    journal = tmp_path / "batch.db" if journaled else None
    async with sim.client(KEY, max_retries=0) as client:
        batch = client.videos.generate_many([TextToVideo("a cat")], journal=journal)
        [outcome] = [o async for o in batch]
    error = outcome.error
    assert isinstance(error, k.SubmissionOutcomeUnknownError)
    cause = error.__cause__
    assert isinstance(cause, k.APIStatusError) and cause.status_code == 500
    rerun = (
        " A rerun with this journal reports it instead of sending it (resubmit_unknown=True "
        "sends it)."
        if journaled
        else ""
    )
    assert str(error) == (
        f"requests[0]: the POST failed without Kolbo refusing it ({type(cause).__name__}: "
        f"{cause}); Kolbo may have created (and charged for) the generation. Check your Kolbo "
        f"dashboard before sending it again.{rerun}"
    )
    assert posts(sim) == 1
