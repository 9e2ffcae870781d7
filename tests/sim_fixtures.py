"""Fixtures shared by the simulator's tests: a virtual clock at 0 and a simulator on it.

Imported by name into each `test_sim_*.py` module (pytest finds imported fixtures), where they
stand in for conftest's `clock`, a `StepClock`.
"""

from __future__ import annotations

import pytest

from kolbo_async.testing import Simulator, VirtualClock


@pytest.fixture
def clock() -> VirtualClock:
    """A virtual clock at 0."""
    return VirtualClock()


@pytest.fixture
def sim(clock: VirtualClock) -> Simulator:
    """A simulator on `clock`, with its defaults."""
    return Simulator(clock=clock)
