"""The key never leaves through an error: transport failures whose text carries the key.

httpx puts whatever the transport said into its exception's message; a proxy, a TLS layer
or a debugging transport may echo the request's headers there. What the SDK raises from it
must not carry the key: not in `str`, `repr` or `args`, not in the request it keeps, not in
the DEBUG log of the retries, and not down the exception chain a traceback prints.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

import anyio
import httpx
import pytest

import kolbo_async as k
from kolbo_async import AsyncKolbo, Kolbo
from kolbo_async.testing import VirtualClock

KEY = "kolbo_live_" + "c3" * 20

Raiser = Callable[[httpx.Request], httpx.HTTPError]

# (what the transport raises, which call, what the SDK must raise)
CASES: list[tuple[str, Raiser, str, type[k.KolboError]]] = [
    (
        "connect",
        lambda r: httpx.ConnectError(f"refused; headers were X-API-Key: {KEY}", request=r),
        "credits",
        k.APIConnectionError,
    ),
    (
        "read",
        lambda r: httpx.ReadError(f"reset after sending {r.headers['x-api-key']}", request=r),
        "credits",
        k.APIConnectionError,
    ),
    (
        "paid-post",
        lambda r: httpx.ReadTimeout(f"no answer to key={KEY}", request=r),
        "generate",
        k.SubmissionOutcomeUnknownError,
    ),
]


def _transport(raise_: Raiser) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise raise_(request)

    return httpx.MockTransport(handler)


def _surfaced(error: BaseException) -> list[str]:
    """Every text a user or a log can see of `error`."""
    texts = [str(error), repr(error), repr(error.args)]
    request = getattr(error, "_request", None) or getattr(error, "request", None)
    if isinstance(request, httpx.Request):
        texts.append(str(dict(request.headers)))
    return texts


def _chain(error: BaseException) -> str:
    """The traceback Python prints for `error`, causes and contexts included."""
    return "".join(traceback.format_exception(error))


async def _call(client: AsyncKolbo, which: str) -> None:
    if which == "credits":
        await client.account.credits()
    else:
        await client.videos.generate("a cat")


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "raise_", "which", "cls"), CASES, ids=[c[0] for c in CASES])
async def test_scrubbed_from_the_error(
    name: str,
    raise_: Raiser,
    which: str,
    cls: type[k.KolboError],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """str, repr, args, the kept request and the retry log: no key, with or without retries."""
    caplog.set_level(logging.DEBUG, logger="kolbo_async")
    clock = VirtualClock()  # the retry's backoff takes no real time
    async with AsyncKolbo(
        KEY, _transport=_transport(raise_), rate_limits=None, _clock=clock
    ) as client:
        with pytest.raises(cls) as info:
            await _call(client.with_options(max_retries=1), which)
    error = info.value
    # A GET was retried once (a backoff waited, a retry logged); a paid POST never is.
    assert (clock.now() > 0) == (which == "credits")
    assert "kolbo_live_***" in str(error)  # the transport's words are kept, masked
    for text in _surfaced(error):
        assert KEY not in text
    for record in caplog.records:
        assert KEY not in record.getMessage()


def test_scrubbed_from_the_blocking_clients_error() -> None:
    """The blocking client raises the same scrubbed error."""
    _, raise_, _, cls = CASES[0]
    client = Kolbo(KEY, _transport=_transport(raise_), rate_limits=None, max_retries=0)
    with client, pytest.raises(cls) as info:
        client.account.credits()
    for text in _surfaced(info.value):
        assert KEY not in text


@pytest.mark.parametrize(("name", "raise_", "which", "cls"), CASES, ids=[c[0] for c in CASES])
def test_scrubbed_from_the_printed_traceback(
    name: str, raise_: Raiser, which: str, cls: type[k.KolboError]
) -> None:
    """The traceback of an uncaught error (the whole __cause__/__context__ chain) has no key."""

    async def flow() -> None:
        async with AsyncKolbo(KEY, _transport=_transport(raise_), rate_limits=None) as client:
            await _call(client.with_options(max_retries=0), which)

    with pytest.raises(cls) as info:
        anyio.run(flow)
    assert KEY not in _chain(info.value)
