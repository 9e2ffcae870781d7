"""Client settings: where the key and base URL come from, and what a timeout means."""

from __future__ import annotations

import ipaddress
import os

import attrs
import httpx

from ._exceptions import InvalidRequestError, KolboError
from ._rate_store import check_store, redact_store

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "GENERATION_MIN_READ_TIMEOUT",
    "RateLimits",
    "Settings",
    "make_timeout",
    "resolve_api_key",
    "resolve_base_url",
]

DEFAULT_BASE_URL = "https://api.kolbo.ai"
DEFAULT_TIMEOUT = 60.0
#: Kolbo's own client gives a generation POST 120 s to answer; a POST cut short before that
#: may still have been charged, so the SDK never allows it less.
GENERATION_MIN_READ_TIMEOUT = 120.0
_CONNECT_TIMEOUT = 10.0


@attrs.frozen
class RateLimits:
    """How fast the client lets itself call Kolbo, per trailing 60 seconds.

    Generation POSTs count against both limits, every other API request against
    `requests_per_minute`, CDN downloads against neither. Pass ``rate_limits=None`` to the
    client to turn pacing off.

    `store` says where the windows live: None keeps them in the process;
    ``"sqlite:///PATH"`` shares them between the processes of one machine (a file they can
    all write), ``"redis://HOST:PORT/DB"`` (or ``rediss://``) between machines (needs
    ``kolbo-async[redis]``). Every client of one API key on one store shares one budget.

    Example:
        >>> RateLimits(generations_per_minute=10, requests_per_minute=300)
        RateLimits(generations_per_minute=10, requests_per_minute=300, store=None)
    """

    generations_per_minute: int = attrs.field(default=10)
    requests_per_minute: int = attrs.field(default=300)
    # The repr hides a password the URL may carry.
    store: str | None = attrs.field(default=None, repr=lambda url: repr(redact_store(url)))

    @generations_per_minute.validator
    @requests_per_minute.validator
    def _positive(self, attribute: attrs.Attribute[int], value: int) -> None:
        positive_int(attribute.name, value)

    @store.validator
    def _store(self, attribute: attrs.Attribute[str | None], value: str | None) -> None:
        check_store(value)


def positive_int(field: str, value: object) -> int:
    """`value` if it is an int of at least 1 (not a bool); else `InvalidRequestError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(field, f"must be a positive integer, not {value!r}")
    return value


@attrs.frozen
class Settings:
    """What a client was built with, shared (immutably) by the pipeline and its handles."""

    api_key: str = attrs.field(repr=False)
    base_url: httpx.URL
    timeout: httpx.Timeout
    max_retries: int
    #: ``base_url`` as a string without a trailing slash; API paths are appended to it.
    root: str = attrs.field(init=False, repr=False)
    #: `timeout` stretched for generation POSTs (computed once, used on every submit).
    generation_timeout: httpx.Timeout = attrs.field(init=False, repr=False)

    @root.default
    def _root(self) -> str:
        return str(self.base_url).rstrip("/")

    @generation_timeout.default
    def _generation_timeout(self) -> httpx.Timeout:
        return generation_timeout(self.timeout)


def resolve_api_key(api_key: str | None) -> str:
    """The explicit key, else ``KOLBO_API_KEY``; a `KolboError` naming the variable if neither."""
    key = api_key if api_key is not None else os.environ.get("KOLBO_API_KEY")
    if key is not None and not isinstance(key, str):
        raise InvalidRequestError("api_key", f"must be a string, not {type(key).__name__}")
    if key is None or not key.strip():
        raise KolboError(
            "No API key: pass api_key=... or set the KOLBO_API_KEY environment variable "
            "(keys look like kolbo_live_..., from your Kolbo dashboard)."
        )
    key = key.strip()
    # Checked here, not at the first request: httpx would put the whole key into the
    # exception it raises for a header it cannot encode. The message never echoes the key.
    bad = [i for i, ch in enumerate(key) if not "!" <= ch <= "~"]
    if bad:
        raise InvalidRequestError(
            "api_key",
            f"must be printable ASCII without spaces; the character at position {bad[0]} is "
            f"not (often an invisible character pasted with the key)",
        )
    return key


def resolve_base_url(base_url: str | httpx.URL | None) -> httpx.URL:
    """The API root, normalised to ``scheme://host[:port]`` plus any path prefix before /api.

    Falls back to ``KOLBO_BASE_URL``, then ``KOLBO_API_URL`` and ``KOLBO_API_BASE`` (what
    Kolbo's own tools read, in their order), then ``https://api.kolbo.ai``. A trailing ``/api``
    or ``/api/v1`` (the form Kolbo's tools use) is dropped, since every path the SDK sends
    starts with ``/api/v1``. Plain ``http`` is refused unless the host is loopback: the key
    would cross the network in clear.
    """
    raw = base_url
    if raw is None:
        raw = (
            os.environ.get("KOLBO_BASE_URL")
            or os.environ.get("KOLBO_API_URL")
            or os.environ.get("KOLBO_API_BASE")
            or DEFAULT_BASE_URL
        )
    try:
        url = httpx.URL(str(raw).strip())
    except (httpx.InvalidURL, TypeError) as exc:
        raise InvalidRequestError("base_url", f"is not a URL: {raw!r}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidRequestError("base_url", f"must be an http(s) URL with a host, not {raw!r}")
    if url.scheme == "http" and not _is_loopback(url.host):
        raise InvalidRequestError(
            "base_url",
            f"plain http would send the API key in clear to {url.host}; use https "
            "(http is only allowed for loopback hosts such as 127.0.0.1 or localhost)",
        )
    path = url.path.rstrip("/")
    for suffix in ("/api/v1", "/api"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return url.copy_with(path=path or "", query=None, fragment=None)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    """An `httpx.Timeout` from a number (read/write/pool; connect capped at 10 s) or as given."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if timeout is None:
        return httpx.Timeout(None)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise InvalidRequestError("timeout", f"must be a positive number, not {timeout!r}")
    return httpx.Timeout(float(timeout), connect=min(_CONNECT_TIMEOUT, float(timeout)))


def generation_timeout(timeout: httpx.Timeout) -> httpx.Timeout:
    """`timeout` with at least 120 s to read and write a generation POST's answer."""
    read = timeout.read
    write = timeout.write
    if read is not None and read < GENERATION_MIN_READ_TIMEOUT:
        read = GENERATION_MIN_READ_TIMEOUT
    if write is not None and write < GENERATION_MIN_READ_TIMEOUT:
        write = GENERATION_MIN_READ_TIMEOUT
    return httpx.Timeout(connect=timeout.connect, read=read, write=write, pool=timeout.pool)
