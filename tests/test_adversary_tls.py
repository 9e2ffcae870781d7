"""Adversarial tests of the shared TLS context (`_tls.shared_ssl_context`).

Real handshakes against a local HTTPS server whose certificate only tests/tls/ca.pem trusts:
clients closed while others keep using the shared context, many threads handshaking at once,
`with_options` copies, a forked child, SSL_CERT_FILE changed or missing, the key kept out of
every message, and CDN downloads verifying too. The server counts what it received.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import kolbo_async as k
from kolbo_async import _tls
from kolbo_async._download import download_to

from .test_tls import KEY, PNG, TLS, HTTPSServer, built, context_of, https_api, serving_https

__all__ = ["built", "https_api"]  # fixtures reused from test_tls

pytestmark = pytest.mark.anyio

CA = str(TLS / "ca.pem")


@pytest.fixture
def server() -> Iterator[HTTPSServer]:
    """test_tls's local HTTPS server, whose requests the tests count."""
    with serving_https() as state:
        yield state


def make(url: str) -> k.AsyncKolbo:
    return k.AsyncKolbo(api_key=KEY, base_url=url, max_retries=0)


@pytest.mark.slow
async def test_closing_clients_leaves_the_others_handshaking(
    server: HTTPSServer, built: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", CA)
    clients = [make(server.url) for _ in range(4)]
    for client in clients:
        assert await client.models.list() == []
    # Close them one by one: the survivors keep working, and a client born after each close
    # shares the same context and makes a new handshake with it.
    for i, closing in enumerate(clients):
        await closing.aclose()
        for survivor in clients[i + 1 :]:
            assert await survivor.models.list() == []
        late = make(server.url)
        assert await late.models.list() == []
        await late.aclose()
    assert built == [CA]
    assert server.count() == 4 + (3 + 2 + 1) + 4


@pytest.mark.slow
def test_blocking_clients_closed_while_others_request(
    server: HTTPSServer, built: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", CA)
    one = k.Kolbo(api_key=KEY, base_url=server.url, max_retries=0)
    two = k.Kolbo(api_key=KEY, base_url=server.url, max_retries=0)
    try:
        assert one.models.list() == []
        one.close()
        with pytest.raises(k.KolboError):
            one.models.list()
        assert two.models.list() == []
        with k.Kolbo(api_key=KEY, base_url=server.url, max_retries=0) as three:
            assert three.models.list() == []
        assert two.models.list() == []
    finally:
        one.close()
        two.close()
    assert built == [CA]
    assert server.count() == 4


@pytest.mark.slow
def test_many_threads_handshake_at_once(
    server: HTTPSServer, built: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", CA)
    n = 12
    start = threading.Barrier(n)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            start.wait()
            with k.Kolbo(api_key=KEY, base_url=server.url, max_retries=0) as client:
                for _ in range(3):
                    assert client.models.list() == []
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert built == [CA]
    assert server.count() == 3 * n


@pytest.mark.slow
async def test_with_options_copies_share_and_outlive_nothing(
    server: HTTPSServer, built: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", CA)
    async with make(server.url) as client:
        copy = client.with_options(timeout=5)
        assert copy._pipeline.http is client._pipeline.http
        assert context_of(client._pipeline.http) is _tls.shared_ssl_context()
        assert await copy.models.list() == []
        await copy.aclose()  # a copy's close leaves the original's pool alone
        assert await client.models.list() == []
    assert built == [CA]
    assert server.count() == 2


@pytest.mark.slow
async def test_a_client_keeps_the_trust_it_was_born_with(
    server: HTTPSServer, built: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SSL_CERT_FILE changed between clients: each client keeps the trust it was born with
    (the refusing one keeps refusing after the variable is set, the trusting one keeps
    working after it is unset), not whatever the environment says now."""
    refusing = make(server.url)  # certifi: refuses the local CA
    monkeypatch.setenv("SSL_CERT_FILE", CA)
    trusting = make(server.url)
    monkeypatch.delenv("SSL_CERT_FILE")
    try:
        for _ in range(2):
            with pytest.raises(k.APIConnectionError) as refused:
                await refusing.models.list()
            assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
            assert await trusting.models.list() == []
        assert context_of(refusing._pipeline.http) is not context_of(trusting._pipeline.http)
        assert context_of(refusing._pipeline.http) is _tls.shared_ssl_context()
    finally:
        await refusing.aclose()
        await trusting.aclose()
    assert built == [None, CA]
    assert server.count() == 2  # the refused handshakes never reached the handler


@pytest.mark.slow
async def test_the_key_shows_in_no_refusal_nor_repr(
    server: HTTPSServer, built: list[str | None]
) -> None:
    async with make(server.url) as client:
        assert KEY not in repr(client)
        with pytest.raises(k.APIConnectionError) as refused:
            await client.models.list()
    error: BaseException | None = refused.value
    seen = 0
    while error is not None and seen < 10:
        assert KEY not in str(error)
        assert KEY not in repr(error)
        error = error.__cause__ or error.__context__
        seen += 1
    assert server.count() == 0


@pytest.mark.slow
async def test_downloads_from_an_https_cdn_verify(
    server: HTTPSServer, built: list[str | None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = server.url + "/out/file.png"
    async with make(server.url) as client:  # certifi: the CDN certificate is refused
        with pytest.raises(k.APIConnectionError) as refused:
            await download_to(
                client._pipeline,
                client._transfers,
                url,
                tmp_path / "a.png",
                overwrite=False,
                on_progress=None,
                deadline=None,
            )
        assert KEY not in str(refused.value)
    assert not (tmp_path / "a.png").exists()
    assert server.count() == 0
    monkeypatch.setenv("SSL_CERT_FILE", CA)
    async with make(server.url) as client:
        await download_to(
            client._pipeline,
            client._transfers,
            url,
            tmp_path / "b.png",
            overwrite=False,
            on_progress=None,
            deadline=None,
        )
        assert context_of(client._transfers.client()) is context_of(client._pipeline.http)
    assert (tmp_path / "b.png").read_bytes() == PNG
    assert server.count(".png") == 1
    assert built == [None, CA]


async def _refused_download(server: HTTPSServer, tmp_path: Path) -> str:
    async with make(server.url) as client:  # certifi: the CDN certificate is refused
        with pytest.raises(k.APIConnectionError) as refused:
            await download_to(
                client._pipeline,
                client._transfers,
                server.url + "/f.png",
                tmp_path / "f.png",
                overwrite=False,
                on_progress=None,
                deadline=None,
            )
    assert server.count() == 0
    return str(refused.value)


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_refused_download_names_its_reason_on_asyncio(
    server: HTTPSServer, built: list[str | None], tmp_path: Path
) -> None:
    assert "CERTIFICATE_VERIFY_FAILED" in await _refused_download(server, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_refused_download_names_its_reason_on_trio(
    server: HTTPSServer, built: list[str | None], tmp_path: Path
) -> None:
    assert "CERTIFICATE_VERIFY_FAILED" in await _refused_download(server, tmp_path)


def _wait_child(pid: int, seconds: float) -> int | None:
    """The child's exit code, or None (and the child killed) if it hangs."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def _fork() -> int:
    with warnings.catch_warnings():  # forking with the server's threads running
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_makes_a_client_and_handshakes(
    server: HTTPSServer, built: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", CA)
    with k.Kolbo(api_key=KEY, base_url=server.url, max_retries=0) as parent:
        assert parent.models.list() == []  # the context exists before the fork
        pid = _fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                with k.Kolbo(api_key=KEY, base_url=server.url, max_retries=0) as child:
                    code = 0 if child.models.list() == [] else 2
            finally:
                os._exit(code)
        assert _wait_child(pid, 20) == 0
        assert parent.models.list() == []
    assert server.count() == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_while_another_thread_builds_a_context_does_not_hang_the_child(
    built: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread is building a context (holding `_tls._lock`, e.g. a web app making its first
    client) when another thread forks (a worker pool): the child's first client must not wait
    forever for a lock whose holder does not exist in the child."""
    import httpx

    building, release = threading.Event(), threading.Event()
    real = httpx.create_ssl_context

    def slow() -> ssl.SSLContext:
        building.set()
        release.wait(10)
        return real()

    monkeypatch.setattr(httpx, "create_ssl_context", slow)
    builder = threading.Thread(target=_tls.shared_ssl_context)
    builder.start()
    try:
        building.wait(10)
        pid = _fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                httpx.create_ssl_context = real  # only the lock is left from the parent
                os.environ["SSL_CERT_FILE"] = CA
                k.AsyncKolbo(api_key=KEY)  # builds (or would build) its context here
                code = 0
            finally:
                os._exit(code)
    finally:
        # Also when the fork fails: a builder left waiting would build 10 s later, under
        # whatever SSL_CERT_FILE a later test has set, and fail there.
        release.set()
        builder.join()
    assert _wait_child(pid, 3) == 0  # it takes ~30 ms when it does not hang


def test_a_missing_ssl_cert_file_raises_a_kolbo_error(
    built: list[str | None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(k.KolboError) as raised:
        k.AsyncKolbo(api_key=KEY)
    assert KEY not in str(raised.value)


def test_a_missing_ssl_cert_file_is_not_cached(
    built: list[str | None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A failed build leaves nothing behind: once the file exists, the same setting works."""
    missing = tmp_path / "ca.pem"
    monkeypatch.setenv("SSL_CERT_FILE", str(missing))
    with pytest.raises(k.KolboError):
        k.AsyncKolbo(api_key=KEY)
    missing.write_bytes(Path(CA).read_bytes())
    with k.Kolbo(api_key=KEY):
        pass
    assert built == [str(missing), str(missing)]
