"""A real reverse proxy for the fault soak: the gateway that stands between users and Kolbo.

It forwards every request to the simulator's loopback server over its own connections and
passes the answer back, except that for a seeded fraction of the generation POSTs the
simulator *created and charged* it throws the answer away and returns its own: a 502, 504
(nginx) or 524 (Cloudflare) HTML page, or a 200 nobody can read. It also does what a real
gateway does when the upstream connection is lost (the simulator's dropped connections): it
answers a 502 page of its own. Every generation POST it handled is kept in `passages`, so the
soak can tell which of the caller's unknowns the gateway caused, from the gateway's side.

The choice to replace is a pure function of the seed and the request body, so the same item
gets the same fate whatever order the concurrent POSTs arrive in.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import attrs
import httpx
import uvicorn

from kolbo_async.testing._asgi import _listen, read_body  # _listen: TCP_NODELAY

__all__ = ["REPLACEMENTS", "Gateway", "GatewayRates", "Passage", "serve_gateway"]

#: What the gateway can put in place of a created generation's answer.
REPLACEMENTS = ("gateway_502", "gateway_504", "gateway_524", "unreadable_200")
#: A POST whose upstream connection broke, answered with the gateway's own 502 page.
UPSTREAM_LOST = "upstream_lost"

_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
    "upgrade", "content-length", "content-encoding", "host",
})
_PAGES = {
    "gateway_502": (502, "<html><head><title>502 Bad Gateway</title></head><body><center>"
                         "<h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body>"
                         "</html>"),
    "gateway_504": (504, "<html><head><title>504 Gateway Time-out</title></head><body><center>"
                         "<h1>504 Gateway Time-out</h1></center><hr><center>nginx</center>"
                         "</body></html>"),
    "gateway_524": (524, "<!DOCTYPE html><html><head><title>api.kolbo.ai | 524: A timeout "
                         "occurred</title></head><body><h1>A timeout occurred</h1><p>Error "
                         "code 524</p><p>Cloudflare Ray ID: 8a1b2c3d4e5f6a7b</p></body></html>"),
}
# The ways a 200 cannot be read: cut short, empty, a maintenance page, and JSON without an id.
_UNREADABLE_200 = (
    ("application/json", b'{"success": true, "generation_id": "'),
    ("application/json", b""),
    ("text/html", b"<html><body><h1>Scheduled maintenance</h1></body></html>"),
    ("application/json", b'{"success": true, "message": "queued"}'),
)


@attrs.frozen
class GatewayRates:
    """Fractions (0..1) of the *created* generation POSTs whose answer the gateway replaces."""

    gateway_502: float = 0.03
    gateway_504: float = 0.03
    gateway_524: float = 0.02
    unreadable_200: float = 0.02


@attrs.define
class Passage:
    """One generation POST through the gateway.

    Attributes:
        prompt: the request's prompt (every soak item has its own), else its body.
        upstream_status: what the simulator answered (0: the connection broke).
        generation_id: the id the simulator created, when its answer named one.
        action: ``"forwarded"``, one of `REPLACEMENTS`, or ``"upstream_lost"``.
    """

    prompt: str
    upstream_status: int
    generation_id: str | None
    action: str


class Gateway:
    """The proxy as an ASGI 3 app; `upstream` is set (in the server's loop) before serving."""

    def __init__(self, upstream_url: str, rates: GatewayRates, seed: int) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.rates = rates
        self.seed = seed
        self.upstream: httpx.AsyncClient | None = None
        self.passages: list[Passage] = []
        self._lock = threading.Lock()

    def verdict(self, prompt: str) -> str | None:
        """Which replacement (if any) a created POST with this prompt gets: seeded, per
        prompt, so a caller can work out beforehand which items the gateway will hit."""
        digest = hashlib.sha256(f"{self.seed}:{prompt}".encode()).digest()
        roll = int.from_bytes(digest[:8], "big") / 2**64
        for name in REPLACEMENTS:
            rate: float = getattr(self.rates, name)
            if roll < rate:
                return name
            roll -= rate
        return None

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: Any, send: Any
    ) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        method = scope["method"]
        path = scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in _HOP_BY_HOP
        ]
        paid = method == "POST" and path.startswith("/api/v1/generate/video")
        assert self.upstream is not None
        try:
            answer = await self.upstream.request(
                method,
                self.upstream_url + path + (f"?{query}" if query else ""),
                headers=headers,
                content=body,
            )
        except httpx.HTTPError:
            # What nginx does when the upstream resets: its own 502 page.
            if paid:
                self._note(_prompt(body), 0, None, UPSTREAM_LOST)
            await _page(send, 502, _PAGES["gateway_502"][1])
            return
        if paid:
            prompt = _prompt(body)
            generation_id = _generation_id(answer)
            action = self.verdict(prompt) if generation_id is not None else None
            self._note(prompt, answer.status_code, generation_id, action or "forwarded")
            if action == "unreadable_200":
                variant = hashlib.sha256(prompt.encode()).digest()[0] % len(_UNREADABLE_200)
                content_type, junk = _UNREADABLE_200[variant]
                await _answer(send, 200, content_type, junk)
                return
            if action is not None:
                status, page = _PAGES[action]
                await _page(send, status, page)
                return
        await send({
            "type": "http.response.start",
            "status": answer.status_code,
            "headers": [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in answer.headers.items()
                if k.lower() not in _HOP_BY_HOP
            ],
        })
        await send({"type": "http.response.body", "body": answer.content})

    def _note(self, prompt: str, status: int, generation_id: str | None, action: str) -> None:
        with self._lock:
            self.passages.append(Passage(prompt, status, generation_id, action))


def _prompt(body: bytes) -> str:
    """The request's prompt (its whole body when it has none): what an item is known by."""
    try:
        prompt = json.loads(body).get("prompt")
    except (ValueError, AttributeError):
        prompt = None
    return prompt if isinstance(prompt, str) else body.decode("utf-8", "replace")


def _generation_id(answer: httpx.Response) -> str | None:
    if not 200 <= answer.status_code < 300:
        return None
    try:
        generation_id = answer.json().get("generation_id")
    except (ValueError, AttributeError):
        return None
    return generation_id if isinstance(generation_id, str) else None


async def _page(send: Any, status: int, page: str) -> None:
    await _answer(send, status, "text/html", page.encode())


async def _answer(send: Any, status: int, content_type: str, body: bytes) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type.encode())],
    })
    await send({"type": "http.response.body", "body": body})


@contextmanager
def serve_gateway(
    upstream_url: str, rates: GatewayRates | None = None, *, seed: int = 0
) -> Iterator[tuple[str, Gateway]]:
    """Run a `Gateway` to `upstream_url` on loopback (uvicorn, its own thread and loop);
    yields its base URL and the gateway (read `passages` once the block ends)."""
    gateway = Gateway(upstream_url, rates or GatewayRates(), seed)
    sock = _listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        gateway, lifespan="off", log_level="warning", access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)

    async def run() -> None:
        # Generous upstream timeouts, as a gateway has: the caller's own timeout ends first.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
        async with httpx.AsyncClient(timeout=30.0, limits=limits) as upstream:
            gateway.upstream = upstream
            await server.serve(sockets=[sock])

    thread = threading.Thread(target=lambda: asyncio.run(run()), name="soak-gateway",
                              daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}", gateway
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
