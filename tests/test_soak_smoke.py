"""A short run of benchmarks/soak.py: paid generations under faults, behind a real gateway that
replaces created POSTs' answers, never paid twice, every unknown surfaced."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from _gateway import REPLACEMENTS, Gateway, GatewayRates
from soak import BATCH, RERUN, SINGLE, broken, item_prompts, run_soak

import kolbo_async as k
import kolbo_async._answers as answers
import kolbo_async._batch_send as batch_send

# Higher than the soak's rates, so that a short run meets every kind of replaced answer.
RATES = GatewayRates(gateway_502=0.08, gateway_504=0.08, gateway_524=0.08, unreadable_200=0.08)
ITEMS = 20
SEED = 6


@pytest.mark.slow
def test_soak_smoke(tmp_path: Path) -> None:
    """20 generate() calls and a 20-item journaled batch, then the batch again, through the
    gateway: counted at the simulator and the gateway, no item is created twice (the rerun
    creates nothing for an item created before), the callers' SubmissionOutcomeUnknownErrors
    are exactly the POSTs the gateway replaced or lost, every generation created was reported
    with its id or is behind one of them, and the credits add up."""
    # The gateway picks its victims per prompt: this seed puts at least three items of each
    # kind of replaced answer in the way, so the run meets every kind.
    gateway = Gateway("http://unused", RATES, SEED)
    for name in REPLACEMENTS:
        assert sum(gateway.verdict(p) == name for p in item_prompts(ITEMS)) >= 3, name
    report = run_soak(ITEMS, concurrency=ITEMS, seed=SEED, rates=RATES, journal_dir=tmp_path,
                      deadline=60)
    assert broken(report) == []
    for column in (SINGLE, BATCH):
        figures = report[column]
        assert figures["items created twice (paid twice)"] == 0
        assert figures["raised SubmissionOutcomeUnknownError"] == (
            figures["created, answer replaced by the gateway"]
            + figures["upstream connection lost (gateway 502)"]
        )
        assert figures["created, id never reported"] == (
            figures["created, answer replaced by the gateway"] + figures["  of which created"]
        )
        assert figures["created, id reported to the caller"] + figures[
            "created, id never reported"
        ] == figures["created (simulator)"]
    for name in REPLACEMENTS:
        label = "  " + name.replace("_", " ")
        assert report[SINGLE][label] + report[BATCH][label] >= 1, name
    rerun = report[RERUN]
    assert rerun["raised SubmissionOutcomeUnknownError"] == report[BATCH][
        "raised SubmissionOutcomeUnknownError"
    ]
    assert rerun["ids of the first run not reported again"] == 0


@pytest.mark.slow
def test_soak_catches_a_gateway_page_taken_for_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soak has teeth. With the send path taking every 5xx for Kolbo's own refusal and a
    batch recording any API error as refused (the bugs of issue 12), a gateway's 502/504/524
    page reaches a generate() caller as a plain API error, and the rerun on the same journal
    pays again for items already created: the invariants say both."""
    monkeypatch.setattr(answers, "_is_envelope", lambda body: True)
    monkeypatch.setattr(batch_send, "refused", lambda error: isinstance(error, k.APIStatusError))
    report = run_soak(12, concurrency=12, seed=3, rates=GatewayRates(0.3, 0.3, 0.3, 0.0),
                      journal_dir=tmp_path, deadline=60)
    problems = broken(report)
    assert any(p.startswith(f"{SINGLE}: gateway-caused, not surfaced") for p in problems)
    assert any(p.startswith(f"{RERUN}: items created twice") for p in problems)
