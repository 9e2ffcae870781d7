"""`as_completed` refuses a bad list by naming the argument at fault (issue 18's mutation
run of `_batch`: the field names were never checked)."""

from __future__ import annotations

import pytest

import kolbo_async as k
from kolbo_async.testing import Simulator

from .test_poller import KEY

pytestmark = pytest.mark.anyio


async def test_a_handle_given_twice_is_named_by_its_place() -> None:
    sim = Simulator()
    gid = sim.create_generation(key=KEY)
    async with sim.client(KEY) as client:
        handle = client.generations.attach(gid)
        other = client.generations.attach(sim.create_generation(key=KEY))
        with pytest.raises(k.InvalidRequestError) as refused:
            k.as_completed([handle, other, handle])
    assert refused.value.field == "handles[2]"
    assert str(refused.value) == "handles[2]: appears twice"
    assert not sim.requests


async def test_handles_of_two_clients_are_refused_by_the_arguments_name() -> None:
    sim = Simulator()
    gid = sim.create_generation(key=KEY)
    async with sim.client(KEY) as one, sim.client(KEY) as two:
        with pytest.raises(k.InvalidRequestError) as refused:
            k.as_completed([one.generations.attach(gid), two.generations.attach(gid)])
    assert refused.value.field == "handles"
    assert str(refused.value) == "handles: must all come from one client"
    assert not sim.requests
