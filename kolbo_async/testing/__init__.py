"""Test tools for code that uses kolbo-async: a faithful simulator of Kolbo's API.

Example:
    >>> from kolbo_async.testing import Simulator, VirtualClock
    >>> clock = VirtualClock()
    >>> sim = Simulator(clock=clock)
    >>> async with sim.client() as client:                            # doctest: +SKIP
    ...     gen = await client.videos.generate("A drone over snowy peaks")
    ...     assert (await gen.wait()).state == "completed"            # instant: virtual time

Importing `kolbo_async` never imports this package; this package imports uvicorn (for
`Simulator.serve`) and respx (for `Simulator.mock`) only when those are called.
"""

from __future__ import annotations

from ._clock import ScaledClock as ScaledClock
from ._clock import VirtualClock as VirtualClock
from ._faults import FAULTS as FAULTS
from ._lifecycle import GenerationRecord as GenerationRecord
from ._lifecycle import SimGeneration as SimGeneration
from ._records import Faults as Faults
from ._records import RecordedRequest as RecordedRequest
from ._records import SimRequest as SimRequest
from ._records import SimResponse as SimResponse
from ._simulator import Simulator as Simulator

__all__ = [
    "FAULTS",
    "Faults",
    "GenerationRecord",
    "RecordedRequest",
    "ScaledClock",
    "SimGeneration",
    "SimRequest",
    "SimResponse",
    "Simulator",
    "VirtualClock",
]
