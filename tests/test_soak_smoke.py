"""A short run of benchmarks/soak.py: paid generations under faults, never paid twice."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from soak import run_soak


def test_soak_smoke() -> None:
    """40 generations through the loopback server under injected faults: no duplicate, every
    generation the caller never heard of is a POST dropped after creation, and each such call
    raised SubmissionOutcomeUnknownError."""
    report = run_soak(40, concurrency=20, seed=3)
    assert report["duplicate creations for one caller request"] == 0
    assert report["created, id never learned"] == report["POSTs dropped after creation"]
    assert (
        report["POSTs dropped after creation"]
        <= report["calls that raised SubmissionOutcomeUnknownError"]
    )
    learned = report["created (simulator)"] - report["created, id never learned"]
    finished = sum(
        count for state, count in report["caller outcomes"].items()
        if state in ("completed", "failed")
    )
    assert finished == learned
