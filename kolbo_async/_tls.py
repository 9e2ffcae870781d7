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


def shared_ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context, made once per process and trust settings.

    The environment variables httpx reads are part of the key, so a process that changes
    them gets a context that follows them; a bundle file edited in place is read again only
    by a new process (as with `requests`' shared context).
    """
    env = os.environ
    key = (env.get("SSL_CERT_FILE"), env.get("SSL_CERT_DIR"), env.get("SSLKEYLOGFILE"))
    context = _contexts.get(key)
    if context is None:
        with _lock:
            context = _contexts.get(key)
            if context is None:
                import httpx

                context = _contexts[key] = httpx.create_ssl_context()
    return context
