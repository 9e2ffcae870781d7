"""The simulated Kolbo service: a state machine with no I/O and no clock of its own.

Every entry point takes a plain `SimRequest` and the simulated time `now`, and returns a plain
`SimResponse`; the adapters (`_transport.py`, `_respx.py`, `_asgi.py`) only translate. The
rules follow Kolbo's documentation (see ``kolbo-api.md``):

- A generation is charged at submit (``credit x duration x resolution multiplier``; Smart
  Select costs 7 credits/s, so 5 s cost 35 as in the docs) and refunded when it fails or is
  cancelled.
- Rate limits count in fixed one-minute windows: 10 generation POSTs per key, 300 requests per
  client address (generation POSTs count in both). A 429 is rejected before any work, with
  ``{"status": false, "message": ...}`` and a ``Retry-After`` in real seconds.
- Unsupported durations and aspect ratios are snapped to the closest supported value (the docs
  say "the API may select the closest match").

The lifecycle is the `TRANSITIONS` table below.
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from collections.abc import Mapping
from typing import Any

from ._catalog import CATALOG, matches_type, price, snap, snap_ratio
from ._media import chunks, parse_range
from ._records import (
    Faults,
    GenerationRecord,
    Plan,
    RecordedRequest,
    SimRequest,
    SimResponse,
)

__all__ = [
    "FAULTS",
    "Faults",
    "GenerationRecord",
    "RecordedRequest",
    "ServiceState",
    "SimRequest",
    "SimResponse",
]

#: What `inject()` accepts. drop_before: the connection is refused before the request is
#: read (nothing happens); drop_after: the request is processed, then the connection drops.
#: The gateway faults are processed too, and then a gateway in front of Kolbo replaces the
#: answer: with its own 502/504/524 HTML page, or with a 200 whose body is cut short.
FAULTS = frozenset(
    {"500", "502", "503", "html_502", "invalid_json", "429", "drop_before", "drop_after",
     "slow", "insufficient_credits", "gateway_502", "gateway_504", "gateway_524",
     "gateway_garbled_200"}
)
_GATEWAY_PAGES = {
    "gateway_502": (502, "Bad Gateway"),
    "gateway_504": (504, "Gateway Time-out"),
    "gateway_524": (524, "A timeout occurred"),
}
ROUTES = frozenset({"generate", "status", "cancel", "models", "credits", "cdn"})

# The lifecycle of a generation. Its rules:
#
# - A generation's state is a function of its timeline and the time asked (`now`): nothing
#   ticks in the background. `GenerationRecord.state_at` reads the timeline; this table says
#   which moves exist, and the code checks moves against it.
# - "start" happens pending_seconds after submit (documented as "queued"), and the outcome
#   ("complete", "filter" = completed with no URLs, a documented quirk, or "fail") happens
#   processing_seconds later. Progress rises 0..99 while processing, 100 when completed.
# - "cancel" is a request (POST .../cancel); the terminal states have no moves, so cancelling
#   them answers 409 with the current state.
# - Entering a state in REFUNDING gives the credits charged at submit back, exactly once.
TRANSITIONS: dict[str, dict[str, str]] = {
    "pending": {"start": "processing", "cancel": "cancelled"},
    "processing": {
        "complete": "completed",
        "filter": "completed",
        "fail": "failed",
        "cancel": "cancelled",
    },
    "completed": {},
    "failed": {},
    "cancelled": {},
}
REFUNDING = frozenset({"failed", "cancelled"})
TERMINAL = frozenset(state for state, moves in TRANSITIONS.items() if not moves)
_OUTCOME_EVENT = {"completed": "complete", "filtered": "filter", "failed": "fail"}
POLL_INTERVAL_HINT = 8.0
BUCKETS = ("plan_credits", "credit_pack", "redemption")
WINDOW = 60.0

def _gateway_page(fault: str) -> SimResponse:
    if fault == "gateway_garbled_200":
        return SimResponse(200, {"content-type": "application/json"}, b'{"success": true, "gen')
    status, reason = _GATEWAY_PAGES[fault]
    page = (
        f"<html><head><title>{status} {reason}</title></head><body>"
        f"<center><h1>{status} {reason}</h1></center><hr><center>gateway</center>"
        "</body></html>"
    ).encode()
    return SimResponse(status, {"content-type": "text/html"}, page)


_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_FAILURE = {
    "message": "The provider rejected the prompt as sensitive content",
    "category": "content_policy",
    "code": "CONTENT_FLAGGED_SENSITIVE",
    "retryable": False,
    "severity": "error",
    "provider": "simulated",
}


class ServiceState:
    """The whole simulated service. Not thread-safe: `Simulator` serialises calls to it."""

    def __init__(
        self,
        *,
        api_key: str | None,
        speed: float,
        credits: float | Mapping[str, float],
        scaled_hints: bool = True,
        rate_limits: bool,
        generations_per_minute: int,
        requests_per_minute: int,
        pending_seconds: float,
        processing_seconds: float,
        seed: int,
        cdn_url: str,
        video: bytes,
        thumbnail: bytes,
        video_size: int | None,
    ) -> None:
        self.api_key = api_key
        self.speed = speed
        # What the client is told to sleep is divided by this: the speed for a client on
        # real time, 1 for one sharing the simulator's scaled clock.
        self.hint_scale = speed if scaled_hints else 1.0
        self.rate_limits = rate_limits
        self.generations_per_minute = generations_per_minute
        self.requests_per_minute = requests_per_minute
        self.pending_seconds = pending_seconds
        self.processing_seconds = processing_seconds
        self.cdn_url = cdn_url.rstrip("/")
        self.video = video
        self.thumbnail = thumbnail
        self.video_size = video_size if video_size is not None else len(video)
        # Two generators: ids must not shift when fault rates change, and vice versa.
        self.rng = random.Random(seed)
        self.fault_rng = random.Random(f"faults:{seed}")
        self.faults = Faults()
        self.balance = dict.fromkeys(BUCKETS, 0.0)
        if isinstance(credits, Mapping):
            unknown = set(credits) - set(BUCKETS)
            if unknown:
                raise ValueError(f"credit buckets are {list(BUCKETS)}, not {sorted(unknown)}")
            self.balance.update({k: float(v) for k, v in credits.items()})
        else:
            self.balance["plan_credits"] = float(credits)
        self.generations: dict[str, GenerationRecord] = {}
        self.requests: list[RecordedRequest] = []
        self._injected: dict[str, deque[str]] = {route: deque() for route in ROUTES}
        self._plans: deque[Plan] = deque()
        self._windows: dict[str, tuple[int, int]] = {}
        # Generations due to fail and not yet refunded: refunds happen lazily, when `settle`
        # sees their end time pass, so a failure refunds even if nobody polls it.
        self._failing: dict[str, GenerationRecord] = {}

    # -- scripting -----------------------------------------------------------------------

    def inject(self, route: str, fault: str, times: int = 1) -> None:
        """Queue `fault` for the next `times` requests to `route` (see `Simulator.inject`)."""
        if route not in ROUTES:
            raise ValueError(f"route must be one of {sorted(ROUTES)}, not {route!r}")
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {sorted(FAULTS)}, not {fault!r}")
        self._injected[route].extend([fault] * times)

    def plan(
        self,
        outcome: str,
        processing_seconds: float | None,
        times: int,
        failure: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue how the next `times` generations end."""
        _check_outcome(outcome)
        if processing_seconds is not None and processing_seconds < 0:
            raise ValueError(f"processing_seconds must be >= 0, not {processing_seconds!r}")
        self._plans.extend(
            [Plan(outcome, processing_seconds, dict(failure) if failure else None)] * times
        )

    def create(
        self,
        now: float,
        *,
        key: str,
        request: Mapping[str, Any],
        kind: str,
        credits: float = 0.0,
        outcome: str | None = None,
        processing_seconds: float | None = None,
    ) -> str:
        """Create a generation without HTTP (charging `credits`); returns its id."""
        record = self._new_generation(now, key, dict(request), kind, credits=credits)
        if outcome is not None:
            _check_outcome(outcome)
            record.outcome = outcome
        if processing_seconds is not None:
            record.processing_seconds = processing_seconds
        self._track(record)
        return record.id

    def finish(
        self, gen_id: str, outcome: str, now: float, failure: Mapping[str, Any] | None = None
    ) -> None:
        """End a pending or processing generation at `now` as `outcome`.

        Raises:
            KeyError: no such generation.
            ValueError: it has already ended.
        """
        _check_outcome(outcome)
        record = self.generations[gen_id]
        state, _ = record.state_at(now)
        if state in TERMINAL:  # no move out of it in TRANSITIONS
            raise ValueError(f"generation {gen_id} is already {state}")
        # Rewrite the timeline so that it ends now; the state stays a function of time.
        record.pending_seconds = min(record.pending_seconds, now - record.created_at)
        record.processing_seconds = now - record.created_at - record.pending_seconds
        record.outcome = outcome
        if failure is not None:
            record.failure = dict(failure)
        self._track(record)
        self.settle(now)

    def settle(self, now: float) -> None:
        """Refund every generation that has failed by `now` (cheap: only those due to fail)."""
        for gen_id, record in list(self._failing.items()):
            if record.cancelled_at is not None or record.refunded:
                del self._failing[gen_id]
            elif now >= record.ends_at:
                self._refund(record)
                del self._failing[gen_id]

    def _track(self, record: GenerationRecord) -> None:
        if record.outcome == "failed":
            self._failing[record.id] = record
        else:
            self._failing.pop(record.id, None)

    # -- the service ---------------------------------------------------------------------

    def handle(self, request: SimRequest, now: float) -> SimResponse:
        """Answer one request at simulated time `now`, and record it."""
        self.settle(now)
        route = _route(request)
        fault = self._next_fault(route)
        if fault == "drop_before":
            response = SimResponse(fault="drop_before")
        elif fault is not None and fault.startswith("gateway_"):
            # Kolbo does the work (and charges); only the answer is lost on the way back.
            self._answer(request, route, now, None)
            response = _gateway_page(fault)
        else:
            response = self._answer(request, route, now, fault)
            if fault == "drop_after":
                response.fault = "drop_after"
            elif fault == "slow":
                response.fault = "slow"
                response.delay = self.faults.slow_seconds
        self._record(request, now, response)
        return response

    def _answer(
        self, request: SimRequest, route: str, now: float, fault: str | None
    ) -> SimResponse:
        if route == "cdn":
            return self._cdn(request, fault, now)
        if fault in ("500", "502", "503"):
            return _json(int(fault), {"success": False, "error": "Internal error",
                                      "code": "GENERATION_ERROR"})
        if fault == "html_502":
            return SimResponse(502, {"content-type": "text/html"}, _HTML_502)
        key = request.headers.get("x-api-key", "")
        if not key.startswith("kolbo_live_") or (self.api_key and key != self.api_key):
            return _json(401, {"success": False, "error": "Invalid API key",
                               "code": "INVALID_API_KEY"})
        limited = self._rate_limited(request, route, key, now, fault == "429")
        if limited is not None:
            return limited
        if fault == "invalid_json":
            return SimResponse(200, {"content-type": "application/json"}, b'{"success": tru')
        if route == "generate":
            return self._generate(request, key, now, fault)
        if route == "status":
            return self._status(request, key, now)
        if route == "cancel":
            return self._cancel(request, key, now)
        if route == "models":
            return self._models(request)
        if route == "credits":
            return _json(200, {"success": True, "credits": self.credits()})
        return _json(404, {"success": False, "error": "Not found", "code": "NOT_FOUND"})

    def _rate_limited(
        self, request: SimRequest, route: str, key: str, now: float, forced: bool
    ) -> SimResponse | None:
        buckets = [("ip:" + request.client, self.requests_per_minute)]
        if route == "generate":
            buckets.append(("gen:" + key, self.generations_per_minute))
        window = int(now // WINDOW)
        over = forced
        if self.rate_limits and not forced:
            for bucket, limit in buckets:
                seen_window, count = self._windows.get(bucket, (window, 0))
                if seen_window == window and count >= limit:
                    over = True
        if over:
            # Seconds until the window ends, in the client's (real) seconds.
            retry_after = max((window + 1) * WINDOW - now, 1.0) / self.hint_scale
            response = _json(429, {"status": False,
                                   "message": "Too many requests, please try again later"})
            response.headers["retry-after"] = _retry_after(retry_after, self.hint_scale)
            return response
        if self.rate_limits:
            for bucket, _ in buckets:
                seen_window, count = self._windows.get(bucket, (window, 0))
                self._windows[bucket] = (window, 1 if seen_window != window else count + 1)
        return None

    def _generate(
        self, request: SimRequest, key: str, now: float, fault: str | None
    ) -> SimResponse:
        image = request.path.endswith("/from-image")
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            body = None
        required = "image_url" if image else "prompt"
        if not isinstance(body, dict) or not isinstance(body.get(required), str) or not body[
            required
        ].strip():
            return _json(400, {"success": False, "error": f"Missing required field: {required}",
                               "code": "MISSING_FIELDS"})
        kind = "img_to_video" if image else "text_to_video"
        model_id = body.get("model")
        model = None
        if model_id is not None:
            model = next((m for m in CATALOG if m["identifier"] == model_id), None)
            if model is None:
                return _json(400, {"success": False, "error": "Model not found",
                                   "code": "MODEL_NOT_FOUND"})
            if kind not in model["types"]:
                return _json(400, {"success": False, "error": f"Model {model_id} cannot do "
                                   f"{kind}", "code": "WRONG_MODEL_TYPE"})
        dna = body.get("visual_dna_ids") or []
        max_dna = (model or {}).get("max_visual_dna", 3)
        if isinstance(dna, list) and len(dna) > max_dna:
            return _json(400, {"success": False, "error": f"At most {max_dna} Visual DNA ids",
                               "code": "TOO_MANY_VISUAL_DNA"})
        cost = price(model, body)
        if self.faults.insufficient_credits or fault == "insufficient_credits" or (
            cost > self.total()
        ):
            return _json(400, {"success": False, "error": "Insufficient credits",
                               "code": "INSUFFICIENT_CREDITS"})
        record = self._new_generation(now, key, body, kind, credits=cost, model=model)
        self._track(record)
        if self.faults.generate_drop_after_create_rate and (
            self.fault_rng.random() < self.faults.generate_drop_after_create_rate
        ):
            response = self._submitted(record)
            response.fault = "drop_after"
            return response
        return self._submitted(record)

    def _submitted(self, record: GenerationRecord) -> SimResponse:
        return _json(200, {
            "success": True,
            "generation_id": record.id,
            "type": "video",
            "model": record.model,
            "credits_charged": _number(record.credits),
            "poll_url": f"/api/v1/generate/{record.id}/status",
            "poll_interval_hint": _number(POLL_INTERVAL_HINT / self.hint_scale),
        })

    def _new_generation(
        self,
        now: float,
        key: str,
        body: dict[str, Any],
        kind: str,
        *,
        credits: float,
        model: Mapping[str, Any] | None = None,
    ) -> GenerationRecord:
        plan = self._plans.popleft() if self._plans else Plan()
        prompt = str(body.get("prompt") or "")
        outcome = plan.outcome
        if "[fail]" in prompt:
            outcome = "failed"
        elif "[filtered]" in prompt:
            outcome = "filtered"
        durations = (model or {}).get("supported_durations") or []
        duration = snap(body.get("duration", 5), durations)
        ratios = (model or {}).get("supported_aspect_ratios") or ["16:9", "9:16", "1:1"]
        ratio = snap_ratio(body.get("aspect_ratio", "16:9"), ratios)
        record = GenerationRecord(
            id=f"{self.rng.getrandbits(96):024x}",
            key=key,
            kind=kind,
            request=body,
            model=(model or {}).get("identifier", "auto"),
            duration=duration,
            aspect_ratio=str(ratio),
            credits=credits,
            created_at=now,
            pending_seconds=self.pending_seconds,
            processing_seconds=(
                self.processing_seconds
                if plan.processing_seconds is None
                else plan.processing_seconds
            ),
            outcome=outcome,
            failure=plan.failure,
        )
        record.charged = self._charge(credits)
        self.generations[record.id] = record
        return record

    def _status(self, request: SimRequest, key: str, now: float) -> SimResponse:
        record = self._owned(request, key)
        if record is None:
            return _json(404, {"success": False, "error": "Generation not found",
                               "code": "NOT_FOUND"})
        return _json(200, self._status_body(record, now))

    def _status_body(self, record: GenerationRecord, now: float) -> dict[str, Any]:
        state, progress = record.state_at(now)
        record.state = state
        if state in REFUNDING:
            self._refund(record)
        body: dict[str, Any] = {"success": True, "generation_id": record.id, "type": "video",
                                "state": state, "progress": progress}
        if state == "completed":
            urls = [] if record.outcome == "filtered" else [
                f"{self.cdn_url}/videos/{record.id}.mp4"
            ]
            body["result"] = {
                "urls": urls,
                "thumbnail_url": f"{self.cdn_url}/thumbs/{record.id}.jpg",
                "duration": _number(record.duration),
                "aspect_ratio": record.aspect_ratio,
                "model": record.model,
            }
            body["credits_used"] = _number(record.credits)
        elif state == "failed":
            failure = {**_FAILURE, **(record.failure or {})}
            body["error"] = str(failure["message"])
            body["failure"] = failure
        return body

    def _cancel(self, request: SimRequest, key: str, now: float) -> SimResponse:
        record = self._owned(request, key)
        if record is None:
            return _json(404, {"success": False, "error": "Generation not found",
                               "code": "NOT_FOUND"})
        state, _ = record.state_at(now)
        if "cancel" not in TRANSITIONS[state]:
            record.state = state
            return _json(409, {"success": False, "code": "CONFLICT", "state": state,
                               "error": f"Cannot cancel a generation that is already {state}"})
        record.cancelled_at = now
        record.state = "cancelled"
        refunded = self._refund(record)
        return _json(200, {"success": True, "generation_id": record.id, "state": "cancelled",
                           "credits_refunded": _number(refunded)})

    def _models(self, request: SimRequest) -> SimResponse:
        wanted = request.query.get("type")
        models = [dict(m) for m in CATALOG if matches_type(m, wanted)]
        return _json(200, {"success": True, "models": models, "count": len(models)})

    def _cdn(self, request: SimRequest, fault: str | None, now: float) -> SimResponse:
        # The CDN takes no key (the SDK must not send one there; tests read the records).
        if fault in ("500", "502", "503"):
            return SimResponse(int(fault), {"content-type": "text/plain"}, b"CDN error")
        if fault == "html_502":
            return SimResponse(502, {"content-type": "text/html"}, _HTML_502)
        parts = request.path.strip("/").split("/")
        record = None
        if len(parts) == 2 and parts[0] in ("videos", "thumbs"):
            stem, _, ext = parts[1].rpartition(".")
            if ext == ("mp4" if parts[0] == "videos" else "jpg"):
                record = self.generations.get(stem)
        if (
            request.method not in ("GET", "HEAD")
            or record is None
            or record.state_at(now)[0] != "completed"
            or (record.outcome == "filtered" and parts[0] == "videos")
        ):
            return SimResponse(404, {"content-type": "text/plain"}, b"Not Found")
        if parts[0] == "thumbs":
            content, size, kind = self.thumbnail, len(self.thumbnail), "image/jpeg"
        else:
            content, size, kind = self.video, self.video_size, "video/mp4"
        headers = {"content-type": kind, "accept-ranges": "bytes"}
        span = parse_range(request.headers.get("range"), size)
        if span is None:
            return SimResponse(
                416, {**headers, "content-range": f"bytes */{size}"}, b""
            )
        start, stop, status = span
        headers["content-length"] = str(stop - start)
        if status == 206:
            headers["content-range"] = f"bytes {start}-{stop - 1}/{size}"
        if request.method == "HEAD":
            return SimResponse(status, headers)
        return SimResponse(status, headers, chunks=chunks(content, start, stop))

    # -- bookkeeping ---------------------------------------------------------------------

    def _owned(self, request: SimRequest, key: str) -> GenerationRecord | None:
        parts = request.path.split("/")
        record = self.generations.get(parts[4]) if len(parts) > 4 else None
        if record is None or record.key != key:
            return None
        return record

    def _next_fault(self, route: str) -> str | None:
        queue = self._injected.get(route)
        if queue:
            return queue.popleft()
        faults = self.faults
        if route == "status":
            rates = [
                (faults.status_error_rate, ("500", "502", "503", "html_502")),
                (faults.status_drop_rate, ("drop_before", "drop_after")),
                (faults.status_slow_rate, ("slow",)),
            ]
        elif route == "generate":
            # A refused POST never reaches the server, so it comes before the 429 roll.
            rates = [
                (faults.generate_refuse_rate, ("drop_before",)),
                (faults.generate_429_rate, ("429",)),
            ]
        else:
            return None
        if not any(rate for rate, _ in rates):
            return None  # draw nothing, so the random sequence only moves when faults are on
        roll = self.fault_rng.random()
        for rate, choices in rates:
            if roll < rate:
                return self.fault_rng.choice(choices)
            roll -= rate
        return None

    def _record(self, request: SimRequest, now: float, response: SimResponse) -> None:
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = request.body.decode("utf-8", "replace")
        self.requests.append(RecordedRequest(
            time=now, method=request.method, path=request.path, query=dict(request.query),
            headers=dict(request.headers), json=body, host=request.host,
            status=response.status if response.fault != "drop_before" else 0,
            fault=response.fault,
        ))

    def credits(self) -> dict[str, Any]:
        """The balance as ``GET /account/credits`` reports it."""
        return {"total": _number(self.total()),
                **{k: _number(v) for k, v in self.balance.items()}}

    def total(self) -> float:
        """The total balance."""
        return sum(self.balance.values())

    def _charge(self, amount: float) -> dict[str, float]:
        # Documented order: plan credits first, then credit packs, then redemptions.
        taken: dict[str, float] = {}
        for bucket in BUCKETS:
            take = min(amount, self.balance[bucket])
            if take > 0:
                self.balance[bucket] -= take
                taken[bucket] = take
            amount -= take
        return taken

    def _refund(self, record: GenerationRecord) -> float:
        if record.refunded:
            return 0.0
        record.refunded = True
        # Back where it came from, so a refund never turns pack credits into plan credits.
        for bucket, amount in record.charged.items():
            self.balance[bucket] += amount
        return sum(record.charged.values())


def _route(request: SimRequest) -> str:
    if request.host == "cdn":
        return "cdn"
    path = request.path
    if request.method == "POST" and path in (
        "/api/v1/generate/video", "/api/v1/generate/video/from-image"
    ):
        return "generate"
    if path.startswith("/api/v1/generate/") and path.endswith("/status"):
        return "status"
    if request.method == "POST" and path.startswith("/api/v1/generate/") and path.endswith(
        "/cancel"
    ):
        return "cancel"
    if path == "/api/v1/models":
        return "models"
    if path == "/api/v1/account/credits":
        return "credits"
    return "other"


def _retry_after(seconds: float, speed: float) -> str:
    # Whole seconds at real speed (what servers send); a decimal on a fast clock, where a
    # whole second would be a long simulated wait.
    if speed == 1:
        return str(math.ceil(seconds))
    return f"{seconds:.3f}".rstrip("0").rstrip(".") or "0"


def _check_outcome(outcome: str) -> None:
    if outcome not in _OUTCOME_EVENT:
        raise ValueError(f"outcome must be completed, failed or filtered, not {outcome!r}")


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 4)


def _json(status: int, body: Mapping[str, Any]) -> SimResponse:
    return SimResponse(status, {"content-type": "application/json"}, json.dumps(body).encode())
