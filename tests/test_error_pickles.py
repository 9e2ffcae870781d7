"""Errors cross processes whole (multiprocessing, concurrent.futures pickle what a worker
raised), and what crosses holds no API key."""

from __future__ import annotations

import pickle

import httpx
import pytest

import kolbo_async as k
from kolbo_async.testing import Simulator, VirtualClock

KEY = "kolbo_live_" + "d4" * 20

pytestmark = pytest.mark.anyio


def test_every_error_class_round_trips_with_its_attributes() -> None:
    """Each class, whatever its own arguments, comes back equal in type, text and fields."""
    answer = httpx.Response(429, request=httpx.Request("GET", "https://api.kolbo.ai/x"), json={})
    errors: list[k.KolboError] = [
        k.KolboError("plain"),
        k.InvalidRequestError("prompt", "is empty"),
        k.RateLimitError("slow down", response=answer, body={"a": 1}, code="RATE", retry_after=3.0),
        k.APIConnectionError("no route", request=answer.request),
    ]
    for error in errors:
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error)
        assert str(back) == str(error) and back.args == error.args
        assert vars(back).keys() == vars(error).keys()
    invalid = pickle.loads(pickle.dumps(errors[1]))
    assert isinstance(invalid, k.InvalidRequestError) and invalid.field == "prompt"
    limited = pickle.loads(pickle.dumps(errors[2]))
    assert isinstance(limited, k.RateLimitError)
    assert (limited.status_code, limited.code, limited.retry_after) == (429, "RATE", 3.0)


async def test_an_api_error_pickles_without_the_key() -> None:
    """The pickled bytes of an error Kolbo answered, its response and request inside, hold
    neither the key nor its secret part."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    async with k.AsyncKolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        with pytest.raises(k.NotFoundError) as info:
            await client.generations.attach("missing").status()
    data = pickle.dumps(info.value)
    assert KEY[len("kolbo_live_"):].encode() not in data
    back = pickle.loads(data)
    assert back.status_code == 404 and back.response.request.headers["x-api-key"] != KEY
