"""One verifying TLS context per process, shared by every client the package builds.

httpx made a fresh `ssl.SSLContext` per client, and loading the CA bundle costs 15-30 ms of
CPU each time: a web app making a client per request, or a batch making one per worker, paid
it over and over. These tests count the contexts built and make real TLS handshakes against
a local HTTPS server whose certificate only tests/tls/ca.pem trusts.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

import kolbo_async as k
from kolbo_async import _tls
from kolbo_async.testing import Simulator

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "c4" * 20
TLS = Path(__file__).parent / "tls"


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Each context httpx builds for us, as the SSL_CERT_FILE it was built under; a fresh
    cache, so that earlier tests' contexts do not count."""
    made: list[str | None] = []
    real = httpx.create_ssl_context

    def counting() -> ssl.SSLContext:
        import os

        made.append(os.environ.get("SSL_CERT_FILE"))
        return real()

    monkeypatch.setattr(_tls, "_contexts", {})
    monkeypatch.setattr(httpx, "create_ssl_context", counting)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return made


def context_of(client: httpx.AsyncClient) -> ssl.SSLContext:
    return client._transport._pool._ssl_context  # type: ignore[attr-defined,no-any-return]


async def test_many_clients_and_their_download_clients_build_one_context(
    built: list[str | None],
) -> None:
    clients = [k.AsyncKolbo(api_key=KEY) for _ in range(20)]
    try:
        contexts = {id(context_of(c._pipeline.http)) for c in clients}
        contexts |= {id(context_of(c._transfers.client())) for c in clients}
        assert len(contexts) == 1
        assert built == [None]
    finally:
        for client in clients:
            await client.aclose()


def test_blocking_clients_share_it_too(built: list[str | None]) -> None:
    with k.Kolbo(api_key=KEY) as one, k.Kolbo(api_key=KEY) as two:
        assert one is not two
    assert built == [None]


def test_threads_making_clients_at_once_build_one_context(built: list[str | None]) -> None:
    start = threading.Barrier(8)
    contexts: list[ssl.SSLContext] = []

    def make() -> None:
        start.wait()
        contexts.append(_tls.shared_ssl_context())

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(c) for c in contexts}) == 1
    assert built == [None]


async def test_the_simulator_and_a_users_http_client_build_none(built: list[str | None]) -> None:
    async with Simulator().client(KEY):
        pass
    mine = httpx.AsyncClient(verify=False)
    async with k.AsyncKolbo(api_key=KEY, http_client=mine) as client:
        assert client._pipeline.http is mine
        assert context_of(mine).verify_mode == ssl.CERT_NONE  # the user's settings stand
    await mine.aclose()
    assert built == []


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


@dataclass
class HTTPSServer:
    """A local HTTPS server, with a certificate for 127.0.0.1 signed by tests/tls/ca.pem
    (valid until 2126): the model list for the API's paths, a PNG for paths ending in .png
    (a CDN file). `paths` holds each request it answered."""

    url: str
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, suffix: str = "") -> int:
        with self.lock:
            return sum(p.endswith(suffix) for p in self.paths)


@contextmanager
def serving_https() -> Iterator[HTTPSServer]:
    """An `HTTPSServer` on a free port, for the block's duration."""
    state = HTTPSServer("")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with state.lock:
                state.paths.append(self.path)
            if self.path.endswith(".png"):
                body, kind = PNG, "image/png"
            else:
                body, kind = json.dumps({"models": []}).encode(), "application/json"
            self.send_response(200)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(TLS / "server.pem", TLS / "server.key")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"https://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def https_api() -> Iterator[str]:
    """The URL of a local HTTPS "API" (`serving_https`)."""
    with serving_https() as server:
        yield server.url


@pytest.mark.slow
async def test_the_shared_context_verifies_and_follows_ssl_cert_file(
    https_api: str, built: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """certifi's bundle refuses the local certificate; with SSL_CERT_FILE naming the test CA
    (set after the first client, as a user's process might) a new client gets a context
    built from it, and the handshake succeeds; clients made after that share it."""
    async with k.AsyncKolbo(api_key=KEY, base_url=https_api, max_retries=0) as client:
        with pytest.raises(k.KolboError) as refused:
            await client.models.list()
    # The reason is in the message on both backends (trio's own error says nothing).
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    monkeypatch.setenv("SSL_CERT_FILE", str(TLS / "ca.pem"))
    for _ in range(3):
        async with k.AsyncKolbo(api_key=KEY, base_url=https_api, max_retries=0) as client:
            assert await client.models.list() == []
    assert built == [None, str(TLS / "ca.pem")]


async def test_a_reason_found_down_the_chain_is_scrubbed_of_the_key() -> None:
    """The text taken from below an empty transport error goes through the same scrubbing
    as the error's own text: the key never shows."""

    def refuse(request: httpx.Request) -> httpx.Response:
        try:
            raise OSError(f"handshake with key {KEY} refused")
        except OSError as below:
            raise httpx.ConnectError("") from below

    http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    async with k.AsyncKolbo(api_key=KEY, max_retries=0, http_client=http) as client:
        with pytest.raises(k.APIConnectionError) as refused:
            await client.models.list()
    await http.aclose()
    # Whose text it is: the error's own type, then the reason found below it.
    assert "could not connect: ConnectError: handshake with key " in str(refused.value)
    assert KEY not in str(refused.value)


async def test_a_chain_of_empty_errors_that_loops_is_named_by_its_type() -> None:
    """Nothing but empty errors, one the cause of the other and back: the message names the
    error's type, and reading the chain ends."""

    def refuse(request: httpx.Request) -> httpx.Response:
        outer, inner = httpx.ConnectError(""), OSError()
        outer.__cause__, inner.__cause__ = inner, outer
        raise outer

    http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    async with k.AsyncKolbo(api_key=KEY, max_retries=0, http_client=http) as client:
        with pytest.raises(k.APIConnectionError) as refused:
            await client.models.list()
    await http.aclose()
    assert str(refused.value).endswith("could not connect: ConnectError")
