"""benchmarks/shared_budget.py: four worker processes watching generations through private
rate budgets, then through one budget shared in SQLite and Redis, counted at the simulator.

The arithmetic (sliding-minute counts, what the server saw, the verdict) is tested on plain
numbers. The quick mode itself crosses real processes, a real loopback server and a real
``redis-server`` on a real-speed clock (a shared store times its windows by real time) and
takes over a minute: it is run as the benchmark itself (``python benchmarks/shared_budget.py
--quick``), not in the suite, whose promise tests with real processes and servers are
``tests/test_rate_store_servers.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from shared_budget import RunResult, count, most_in_window, verdict

from kolbo_async.testing import RecordedRequest

POLL = "/api/v1/generate/abc/status"


def _request(time: float, status: int, path: str = POLL) -> RecordedRequest:
    return RecordedRequest(time=time, method="GET", path=path, query={}, headers={}, json=None,
                           host="api", status=status, fault=None)  # fmt: skip


def _result(name: str, throttled: int) -> RunResult:
    return RunResult(name=name, received=10, answered=10 - throttled, throttled=throttled,
                     most_received_60s=10, most_answered_60s=10, longest_silence=1.0,
                     other_requests=0, worker_429s=[throttled], seconds=1.0)  # fmt: skip


def test_most_in_window_counts_a_sliding_minute_end_excluded() -> None:
    assert most_in_window([]) == 0
    assert most_in_window([5.0]) == 1
    # 0 and 60 are a minute apart: never in one window [t, t + 60).
    assert most_in_window([0.0, 60.0]) == 1
    assert most_in_window([0.0, 59.9, 60.0]) == 2
    # Two fixed windows' bursts back to back: 3 + 3 inside one sliding minute.
    assert most_in_window([55.0, 56.0, 57.0, 61.0, 62.0, 63.0, 130.0]) == 6
    assert most_in_window([0.0, 1.0, 2.0], window=1.5) == 2


def test_count_judges_status_polls_at_the_server() -> None:
    requests = [
        _request(1.0, 200), _request(2.0, 200), _request(2.5, 429), _request(30.0, 200),
        _request(61.5, 200), _request(70.0, 429),
        _request(3.0, 200, path="/api/v1/models"),  # not a poll: counted apart
    ]  # fmt: skip
    result = count("private", requests, [1, 1], seconds=75.0)
    assert (result.received, result.answered, result.throttled) == (6, 4, 2)
    assert result.most_received_60s == 4  # [1.0, 61.0) or [2.0, 62.0)
    assert result.most_answered_60s == 3
    assert result.longest_silence == pytest.approx(31.5)  # 30.0 -> 61.5
    assert result.other_requests == 1
    assert result.worker_429s == [1, 1]
    assert "private" in result.row()


def test_verdict_fails_a_throttled_shared_run_and_a_private_run_never_throttled() -> None:
    assert verdict([_result("private (store=None)", 8), _result("shared: sqlite", 0)]) == []
    assert verdict([_result("private (store=None)", 8), _result("shared: redis", 1)]) == [
        "shared: redis: 1 x 429"
    ]
    assert verdict([_result("private (store=None)", 0), _result("shared: sqlite", 0)]) == [
        "private (store=None): no 429 (nothing to compare)"
    ]
