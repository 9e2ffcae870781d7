"""The TLS settings every client of the process shares.

httpx builds a fresh `ssl.SSLContext` for each client it makes, and loading the CA bundle
into it costs 15-30 ms of CPU (OpenSSL 3 parses the whole bundle each time:
python/cpython#95031, encode/httpx#3627). An `SSLContext` is made to be shared by many
connections and threads as long as nobody reconfigures it, so the clients and download
clients this package builds itself share one, made on first use with httpx's own defaults
(certifi's bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set). A client given an
``http_client`` keeps that client's settings.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

__all__ = ["shared_ssl_context"]

_lock = threading.Lock()
_contexts: dict[tuple[str | None, ...], ssl.SSLContext] = {}


def _unlock_in_child() -> None:
    # A fork while another thread builds a context copies the lock held, by a thread the
    # child does not have: its first client with other trust settings would wait for good.
    # What the cache holds was stored whole, so it stays.
    global _lock  # noqa: PLW0603 - rebinding is the point: the old lock may never be let go
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_unlock_in_child)


def shared_ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context, made once per process and trust settings.

    The environment variables httpx reads are part of the key, so a process that changes
    them gets a context that follows them; a bundle file edited in place is read again only
    by a new process (as with `requests`' shared context).

    Raises:
        KolboError: the bundle could not be loaded (``SSL_CERT_FILE`` names a missing file).
    """
    env = os.environ
    key = (env.get("SSL_CERT_FILE"), env.get("SSL_CERT_DIR"), env.get("SSLKEYLOGFILE"))
    context = _contexts.get(key)
    if context is None:
        with _lock:
            context = _contexts.get(key)
            if context is None:
                context = _contexts[key] = _build(key)
    return context


def _build(key: tuple[str | None, ...]) -> ssl.SSLContext:
    import httpx

    try:
        return httpx.create_ssl_context()
    except OSError as exc:  # ssl.SSLError too: a missing or unreadable bundle
        from ._exceptions import KolboError

        names = ("SSL_CERT_FILE", "SSL_CERT_DIR")
        named = " and ".join(f"{n}={v!r}" for n, v in zip(names, key[:2], strict=True) if v)
        raise KolboError(
            f"The CA certificates to verify TLS with could not be loaded"
            f"{f' ({named})' if named else ''}: {exc}"
        ) from exc
