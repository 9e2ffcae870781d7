"""A small web app on kolbo-async: a prompt form, live progress over Server-Sent Events, the video.

    pip install 'kolbo-async[web]'
    python examples/web_app.py --sandbox           # the built-in simulator: no key, no network
    KOLBO_API_KEY=kolbo_live_... python examples/web_app.py

then open http://127.0.0.1:8000 and type a prompt.

What it shows:

- One `AsyncKolbo` for the whole app, opened and closed in the lifespan: its pacing, 429
  cooldowns and shared status poller only work when every request shares it. (Each worker
  process of ``uvicorn --workers N`` gets its own, made after the fork, as it must.)
- Progress streamed to the browser straight from ``handle.progress()``, one Server-Sent Event
  per change of state or percentage, then the finished video in a ``<video>`` element.
- A generation outlives the server: its id is in the page's URL (``/generations/{id}``) and in
  a small JSON file of recent generations. After a restart the browser's EventSource
  reconnects by itself, and the handle is rebuilt with ``client.generations.attach(id)``: no
  request is made for it, nothing is paid again, the progress resumes.

To try a restart in the sandbox, keep the simulator in its own process (a ``--sandbox`` app
forgets its simulated generations when it stops):

    kolbo sandbox                                   # prints KOLBO_BASE_URL to export
    KOLBO_BASE_URL=http://127.0.0.1:8765 KOLBO_API_KEY=kolbo_live_demo python examples/web_app.py
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import anyio
import anyio.to_thread
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from kolbo_async import (
    AsyncGeneration,
    AsyncKolbo,
    GenerationStatus,
    GenerationTimeoutError,
    InsufficientCreditsError,
    InvalidRequestError,
    KolboError,
    NotFoundError,
    RateLimitError,
    SubmissionOutcomeUnknownError,
)

#: The key a ``--sandbox`` app uses: the simulator accepts any ``kolbo_live_`` key.
SANDBOX_KEY = "kolbo_live_sandbox"
#: How long the browser waits before reconnecting a dropped event stream (milliseconds).
RECONNECT_MS = 1000
#: How many generations the front page lists.
RECENT = 20
#: How many handles from `videos.generate` are kept in memory (see `_events`).
HANDLES = 100


class RecentGenerations:
    """The ids of the last generations started here, in a small JSON file.

    The file is what lets the front page list a generation again after a restart; the id
    alone is enough to follow it (``client.generations.attach(id)``). Written atomically
    (a temporary file renamed into place), off the event loop.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = anyio.Lock()

    def read(self) -> list[dict[str, Any]]:
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]

    def find(self, generation_id: str) -> dict[str, Any] | None:
        return next((e for e in self.read() if e["id"] == generation_id), None)

    async def add(self, generation_id: str, prompt: str) -> None:
        async with self._lock:
            await anyio.to_thread.run_sync(self._add, generation_id, prompt)

    def _add(self, generation_id: str, prompt: str) -> None:
        entries = [{"id": generation_id, "prompt": prompt, "started": time.time()}]
        entries += [e for e in self.read() if e["id"] != generation_id][: RECENT - 1]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".recent-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entries, f, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def create_app(
    *, recent_file: Path, sandbox: bool = False, **client_options: Any
) -> Starlette:
    """The app. `client_options` go to `AsyncKolbo` (api_key, base_url, ...).

    Without them the client reads ``KOLBO_API_KEY`` and ``KOLBO_BASE_URL`` as usual.
    """
    recent = RecentGenerations(recent_file)
    # The handles this process started, by id. Kept only because a fresh handle knows the
    # server's `poll_interval_hint` from its submission; any other id (after a restart, or
    # started elsewhere) is re-attached from the id alone.
    handles: dict[str, AsyncGeneration] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[Mapping[str, Any]]:
        # One client for the whole app, on uvicorn's event loop; closed on shutdown.
        async with AsyncKolbo(**client_options) as client:
            yield {"kolbo": client}

    async def index(request: Request) -> Response:
        return _page(recent, sandbox=sandbox)

    async def start(request: Request) -> Response:
        client: AsyncKolbo = request.state.kolbo
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8")).items()}
        prompt = form.get("prompt", "")
        try:
            duration = _number(form.get("duration"))
        except ValueError:
            error = "duration must be a number of seconds"
            return _page(recent, sandbox=sandbox, prompt=prompt, error=error, status=400)
        try:
            gen = await client.videos.generate(
                prompt, aspect_ratio=form.get("aspect_ratio") or None, duration=duration
            )
        except InvalidRequestError as exc:
            return _page(recent, sandbox=sandbox, prompt=prompt, error=str(exc), status=400)
        except SubmissionOutcomeUnknownError as exc:
            # Never resubmit on our own: Kolbo may have created and charged it.
            message = f"{exc} Check your Kolbo dashboard before trying again."
            return _page(recent, sandbox=sandbox, prompt=prompt, error=message, status=502)
        except InsufficientCreditsError as exc:
            return _page(recent, sandbox=sandbox, prompt=prompt, error=str(exc), status=402)
        except RateLimitError as exc:
            return _page(recent, sandbox=sandbox, prompt=prompt, error=str(exc), status=429)
        except KolboError as exc:
            return _page(recent, sandbox=sandbox, prompt=prompt, error=str(exc), status=502)
        handles[gen.id] = gen
        while len(handles) > HANDLES:
            del handles[next(iter(handles))]
        await recent.add(gen.id, prompt)
        # Post/redirect/get: the id lives in the URL from now on (bookmark it, reload it).
        return RedirectResponse(f"/generations/{quote(gen.id, safe='')}", status_code=303)

    async def generation(request: Request) -> Response:
        generation_id = request.path_params["generation_id"]
        entry = recent.find(generation_id)
        return _page(
            recent,
            sandbox=sandbox,
            generation_id=generation_id,
            prompt_shown=entry["prompt"] if entry else None,
        )

    async def events(request: Request) -> Response:
        client: AsyncKolbo = request.state.kolbo
        generation_id = request.path_params["generation_id"]
        stream = _events(client, generation_id, handles.get(generation_id))
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return Starlette(
        routes=[
            Route("/", index),
            Route("/generations", start, methods=["POST"]),
            Route("/generations/{generation_id}", generation),
            Route("/generations/{generation_id}/events", events),
        ],
        lifespan=lifespan,
    )


async def _events(
    client: AsyncKolbo, generation_id: str, gen: AsyncGeneration | None
) -> AsyncIterator[str]:
    """The Server-Sent Events of one generation, straight from ``handle.progress()``.

    A generation this process did not start (after a restart, or from another instance) is
    re-attached from its id alone: no request is made, nothing is paid again. Every
    (re)connection of the browser gets a stream; tabs on one generation share its polls.
    """
    yield f"retry: {RECONNECT_MS}\n\n"
    if gen is None:
        try:
            gen = client.generations.attach(generation_id)
        except InvalidRequestError as exc:
            yield _event("gone", {"message": str(exc)})
            return
    last: GenerationStatus | None = None
    try:
        async with gen.progress() as updates:
            async for last in updates:
                yield _event("status", _status(last))
    except NotFoundError:
        yield _event("gone", {"message": "Kolbo does not know this generation."})
        return
    except GenerationTimeoutError:
        # Still running at Kolbo: end this stream, the browser reconnects and follows again.
        return
    except KolboError as exc:
        yield _event("problem", {"message": str(exc)})
        return
    if last is None:
        return
    if last.succeeded and last.result is not None and last.result.url:
        result = last.result
        yield _event(
            "completed",
            {"video_url": result.url, "poster_url": result.thumbnail_url, "model": result.model},
        )
    elif last.state == "completed":  # Kolbo's content filters complete with no video
        yield _event("failed", {"state": "filtered", "message": "Completed without a video."})
    else:
        message = last.error or (last.failure.message if last.failure else None)
        yield _event("failed", {"state": last.state, "message": message or last.state})


def _status(status: GenerationStatus) -> dict[str, Any]:
    return {"id": status.generation_id, "state": status.state, "progress": status.progress}


def _event(name: str, data: Mapping[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _number(text: str | None) -> float | None:
    """A form's number; None when left empty. Raises ValueError for anything else."""
    return float(text) if text else None


def _page(
    recent: RecentGenerations,
    *,
    sandbox: bool,
    generation_id: str | None = None,
    prompt: str = "",
    prompt_shown: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    esc = html.escape
    items = "".join(
        f'<li><a href="/generations/{esc(quote(e["id"], safe=""))}">{esc(str(e.get("prompt")))}'
        f"</a> <code>{esc(e['id'])}</code></li>"
        for e in recent.read()
    )
    card = ""
    if generation_id is not None:
        card = _CARD.format(
            id=esc(generation_id),
            prompt=esc(prompt_shown) if prompt_shown else "<em>started elsewhere</em>",
        )
    body = _PAGE.format(
        sandbox='<span class="badge">sandbox</span>' if sandbox else "",
        prompt=esc(prompt),
        error=f'<p class="error" role="alert">{esc(error)}</p>' if error else "",
        card=card,
        recent=f"<h2>Recent</h2><ul>{items}</ul>" if items else "",
        data_id=esc(generation_id or ""),
        script=_SCRIPT,
    )
    return HTMLResponse(body, status_code=status)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Kolbo video</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body {{ font: 16px/1.5 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d2433; }}
 header {{ background: #1d3557; color: #f1faee; padding: 12px 24px; font-weight: 600; }}
 main {{ max-width: 720px; margin: 24px auto; padding: 0 16px; }}
 form, .card {{ background: #fff; border-radius: 8px; padding: 16px;
   box-shadow: 0 1px 3px #0002; margin-bottom: 16px; }}
 textarea {{ width: 100%; box-sizing: border-box; font: inherit; }}
 button {{ background: #e76f51; color: #fff; border: 0; border-radius: 6px;
   padding: 8px 20px; font: inherit; cursor: pointer; }}
 progress {{ width: 100%; height: 18px; }}
 video {{ width: 100%; background: #000; border-radius: 6px; margin-top: 8px; }}
 .badge {{ background: #e9c46a; color: #1d2433; border-radius: 4px; padding: 1px 8px;
   margin-left: 8px; font-size: 13px; }}
 .error {{ color: #b00020; }}  code {{ font-size: 13px; color: #555; }}
</style></head>
<body data-generation-id="{data_id}">
<header>Kolbo video studio{sandbox}</header>
<main>
<form method="post" action="/generations">
 <label for="prompt">Prompt</label>
 <textarea id="prompt" name="prompt" rows="3" required>{prompt}</textarea>
 <p><label>Aspect ratio <select name="aspect_ratio">
   <option value="">default</option><option>16:9</option><option>9:16</option>
   <option>1:1</option></select></label>
  <label>Duration <select name="duration">
   <option value="">default</option><option value="5">5 s</option>
   <option value="10">10 s</option></select></label>
  <button id="generate" type="submit">Generate</button></p>
 {error}
</form>
{card}
{recent}
</main>
<script>{script}</script>
</body></html>
"""

_CARD = """<section class="card" id="generation">
 <p>{prompt}<br><code id="generation-id">{id}</code></p>
 <progress id="bar" max="100" value="0"></progress>
 <p><strong id="percent">0 %</strong> &middot; <span id="state">connecting</span></p>
 <video id="video" controls muted autoplay loop playsinline hidden></video>
 <p id="message" class="error" hidden></p>
</section>
"""

# Plain browser JavaScript: an EventSource per generation page. It reconnects by itself when
# the stream drops (a restart, a proxy); the server re-attaches and the progress goes on.
_SCRIPT = """
const id = document.body.dataset.generationId;
const $ = (name) => document.getElementById(name);
function follow() {
  const events = new EventSource("/generations/" + encodeURIComponent(id) + "/events");
  events.addEventListener("status", (e) => {
    const s = JSON.parse(e.data);
    $("bar").value = s.progress;
    $("percent").textContent = s.progress + " %";
    $("state").textContent = s.state;
  });
  events.addEventListener("completed", (e) => {
    events.close();
    const r = JSON.parse(e.data);
    const video = $("video");
    if (r.poster_url) video.poster = r.poster_url;
    video.src = r.video_url;
    video.hidden = false;
  });
  for (const name of ["failed", "gone", "problem"]) {
    events.addEventListener(name, (e) => {
      events.close();
      const d = JSON.parse(e.data);
      $("state").textContent = d.state || name;
      $("message").textContent = d.message;
      $("message").hidden = false;
    });
  }
  events.onerror = () => {
    $("state").textContent = "reconnecting";
    if (events.readyState === EventSource.CLOSED) setTimeout(follow, 1000);
  };
}
if (id) follow();
"""


@contextlib.contextmanager
def _sandbox(speed: float) -> Iterator[dict[str, Any]]:
    """The simulator over real HTTP on loopback; the browser fetches its CDN's videos."""
    from kolbo_async.testing import Simulator

    with Simulator(speed=speed).serve() as base_url:
        yield {"api_key": SANDBOX_KEY, "base_url": base_url}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--sandbox", action="store_true", help="run against the built-in simulator (no key)"
    )
    parser.add_argument(
        "--speed", type=float, default=30.0, help="the sandbox's clock speed (default x30)"
    )
    parser.add_argument(
        "--recent-file",
        type=Path,
        default=Path("kolbo-web-recent.json"),
        help="where the ids of recent generations are kept (default ./kolbo-web-recent.json)",
    )
    args = parser.parse_args(argv)
    if not args.sandbox and not os.environ.get("KOLBO_API_KEY"):
        parser.error("set KOLBO_API_KEY, or pass --sandbox to try it against the simulator")
    with contextlib.ExitStack() as stack:
        options = stack.enter_context(_sandbox(args.speed)) if args.sandbox else {}
        app = create_app(recent_file=args.recent_file, sandbox=args.sandbox, **options)
        print(f"Kolbo web app on http://{args.host}:{args.port}", flush=True)
        # A short graceful shutdown: event streams never end by themselves, and the browser
        # reconnects to the next instance anyway.
        uvicorn.run(
            app, host=args.host, port=args.port, timeout_graceful_shutdown=2, log_level="warning"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
