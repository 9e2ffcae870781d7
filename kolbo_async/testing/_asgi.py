"""`Simulator.serve()`: the simulator as a real HTTP server on loopback, run by uvicorn.

An ASGI 3 app translates between HTTP and the simulator's core; uvicorn (an optional
dependency) does all the HTTP. It runs in its own thread with its own asyncio loop, so the
caller may be blocking code, asyncio or trio.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl

from ._records import SimRequest, SimService

__all__ = ["SimulatorApp", "read_body", "serve"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class SimulatorApp:
    """ASGI app: requests to `cdn_port` go to the simulated CDN, all others to the API."""

    def __init__(self, service: SimService, cdn_port: int | None = None) -> None:
        self.service = service
        self.cdn_port = cdn_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        server = scope.get("server") or ("", None)
        request = SimRequest(
            method=scope["method"],
            path=scope["path"],
            query=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            body=body,
            host="cdn" if server[1] == self.cdn_port else "api",
            client=(scope.get("client") or ("127.0.0.1", 0))[0],
        )
        answer = self.service.handle(request)
        if answer.fault in ("drop_before", "drop_after"):
            # Over TCP the client cannot tell "refused before reading" from "dropped after
            # processing": both are a connection closed without an answer.
            _abort(send)
            return
        if answer.fault == "slow":
            await asyncio.sleep(answer.delay)
        await send({
            "type": "http.response.start",
            "status": answer.status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                        for k, v in answer.headers.items()],
        })
        if answer.chunks is None:
            await send({"type": "http.response.body", "body": answer.body})
            return
        # One chunk at a time: a large `video_size` is never held in memory.
        for chunk in answer.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


class _QuietAborts(logging.Filter):
    """Drop uvicorn's complaint about the connections the simulator drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without starting response" not in record.getMessage()


def _abort(send: Send) -> None:
    # ASGI has no "drop this connection" message, so this leans on uvicorn's internals
    # (checked against uvicorn 0.30-0.54, h11 and httptools alike): `send` is a bound method
    # of its per-request `RequestResponseCycle`, whose `transport` attribute is the asyncio
    # transport. `abort()` closes the socket at once, unflushed, so the client sees a reset
    # connection and no answer. uvicorn then logs "returned without starting response",
    # which `_QuietAborts` filters.
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        raise RuntimeError("cannot drop the connection: unsupported ASGI server")
    transport.abort()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are
    # TCP, and without it every small answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@contextmanager
def serve(service: SimService, host: str, port: int) -> Iterator[str]:
    """Run the simulator on `host:port` (0 picks a free port) until the block ends."""
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Simulator.serve() needs uvicorn: pip install 'kolbo-async[sim]'"
        ) from exc
    api_sock = _listen(host, port)
    cdn_sock = _listen(host, 0)
    shown = f"[{host}]" if ":" in host else host
    api_port = api_sock.getsockname()[1]
    cdn_port = cdn_sock.getsockname()[1]
    app = SimulatorApp(service, cdn_port)
    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    quiet = _QuietAborts()
    logging.getLogger("uvicorn.error").addFilter(quiet)
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[api_sock, cdn_sock])),
        name="kolbo-simulator",
        daemon=True,
    )
    saved = (service.base_url, service.cdn_url)
    base_url = f"http://{shown}:{api_port}"
    service.base_url = base_url
    service.cdn_url = f"http://{shown}:{cdn_port}"
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the simulator's server did not start")
            time.sleep(0.01)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        logging.getLogger("uvicorn.error").removeFilter(quiet)
        api_sock.close()
        cdn_sock.close()
        service.base_url, service.cdn_url = saved


async def read_body(receive: Receive) -> bytes:
    """The whole body of an ASGI HTTP request."""
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body
