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

The lifecycle of a generation is a function of its timeline and `now`:

    state        becomes        when
    ----------   ------------   -----------------------------------------------
    pending      processing     pending_seconds after submit
    processing   completed      processing_seconds later (outcome "completed")
    processing   completed      same, but with no URLs (outcome "filtered")
    processing   failed         same (outcome "failed"); credits refunded
    pending,     cancelled      POST .../cancel; credits refunded
    processing
    completed, failed, cancelled never change; cancelling them answers 409
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from ._catalog import CATALOG, SMART_SELECT_CREDIT, matches_type
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
FAULTS = frozenset(
    {"500", "502", "503", "html_502", "invalid_json", "429", "drop_before", "drop_after",
     "slow", "insufficient_credits"}
)
ROUTES = frozenset({"generate", "status", "cancel", "models", "credits", "cdn"})
TERMINAL = frozenset({"completed", "failed", "cancelled"})
POLL_INTERVAL_HINT = 8.0
WINDOW = 60.0

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
        credits: float,
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
        self.rate_limits = rate_limits
        self.generations_per_minute = generations_per_minute
        self.requests_per_minute = requests_per_minute
        self.pending_seconds = pending_seconds
        self.processing_seconds = processing_seconds
        self.cdn_url = cdn_url.rstrip("/")
        self.video = video
        self.thumbnail = thumbnail
        self.video_size = video_size if video_size is not None else len(video)
        self.rng = random.Random(seed)
        self.faults = Faults()
        self.balance = {"plan_credits": float(credits), "credit_pack": 0.0, "redemption": 0.0}
        self.generations: dict[str, GenerationRecord] = {}
        self.requests: list[RecordedRequest] = []
        self._injected: dict[str, deque[str]] = {route: deque() for route in ROUTES}
        self._plans: deque[Plan] = deque()
        self._windows: dict[tuple[str, str], tuple[int, int]] = {}

    # -- scripting -----------------------------------------------------------------------

    def inject(self, route: str, fault: str, times: int = 1) -> None:
        if route not in ROUTES:
            raise ValueError(f"route must be one of {sorted(ROUTES)}, not {route!r}")
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {sorted(FAULTS)}, not {fault!r}")
        self._injected[route].extend([fault] * times)

    def plan(self, outcome: str, processing_seconds: float | None, times: int) -> None:
        if outcome not in ("completed", "failed", "filtered"):
            raise ValueError(f"outcome must be completed, failed or filtered, not {outcome!r}")
        self._plans.extend([Plan(outcome, processing_seconds)] * times)

    def create(self, now: float, *, key: str, request: Mapping[str, Any], kind: str) -> str:
        """Create (and charge for) a generation without HTTP; returns its id."""
        record = self._new_generation(now, key, dict(request), kind, credits=0.0)
        return record.id

    # -- the service ---------------------------------------------------------------------

    def handle(self, request: SimRequest, now: float) -> SimResponse:
        """Answer one request at simulated time `now`, and record it."""
        route = _route(request)
        fault = self._next_fault(route)
        if fault == "drop_before":
            response = SimResponse(fault="drop_before")
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
            return self._cdn(request, fault)
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
            return _json(200, {"success": True, "credits": self._credits()})
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
                seen_window, count = self._windows.get((bucket, ""), (window, 0))
                if seen_window != window:
                    count = 0
                if count >= limit:
                    over = True
        if route == "generate" and not over and self.faults.generate_429_rate:
            over = self.rng.random() < self.faults.generate_429_rate
        if over:
            retry_after = max((window + 1) * WINDOW - now, 1.0) / self.speed
            header = str(math.ceil(retry_after)) if self.speed == 1 else f"{retry_after:.3f}"
            response = _json(429, {"status": False,
                                   "message": "Too many requests, please try again later"})
            response.headers["retry-after"] = header
            return response
        if self.rate_limits:
            for bucket, _ in buckets:
                seen_window, count = self._windows.get((bucket, ""), (window, 0))
                self._windows[(bucket, "")] = (window, 1 if seen_window != window else count + 1)
        return None

    def _generate(
        self, request: SimRequest, key: str, now: float, fault: str | None
    ) -> SimResponse:
        image = request.path.endswith("/from-image")
        refuse = self.faults.generate_refuse_rate
        if not image and refuse and self.rng.random() < refuse:
            return SimResponse(fault="drop_before")
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
        cost = _price(model, body)
        if self.faults.insufficient_credits or fault == "insufficient_credits" or (
            cost > self._total()
        ):
            return _json(400, {"success": False, "error": "Insufficient credits",
                               "code": "INSUFFICIENT_CREDITS"})
        record = self._new_generation(now, key, body, kind, credits=cost, model=model)
        if self.faults.generate_drop_after_create_rate and (
            self.rng.random() < self.faults.generate_drop_after_create_rate
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
            "poll_interval_hint": _number(POLL_INTERVAL_HINT / self.speed),
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
        duration = _snap(body.get("duration", 5), durations)
        ratios = (model or {}).get("supported_aspect_ratios") or ["16:9", "9:16", "1:1"]
        ratio = body.get("aspect_ratio") if body.get("aspect_ratio") in ratios else ratios[0]
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
            processing_seconds=plan.processing_seconds or self.processing_seconds,
            outcome=outcome,
        )
        self._charge(credits)
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
            self._refund(record)
            body["error"] = _FAILURE["message"]
            body["failure"] = dict(_FAILURE)
        elif state == "cancelled":
            self._refund(record)
        return body

    def _cancel(self, request: SimRequest, key: str, now: float) -> SimResponse:
        record = self._owned(request, key)
        if record is None:
            return _json(404, {"success": False, "error": "Generation not found",
                               "code": "NOT_FOUND"})
        state, _ = record.state_at(now)
        if state in TERMINAL:
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

    def _cdn(self, request: SimRequest, fault: str | None) -> SimResponse:
        if fault in ("500", "502", "503"):
            return SimResponse(int(fault), {"content-type": "text/plain"}, b"CDN error")
        parts = request.path.strip("/").split("/")
        record = None
        if len(parts) == 2 and parts[0] in ("videos", "thumbs"):
            record = self.generations.get(parts[1].rsplit(".", 1)[0])
        if record is None or record.state != "completed" or record.outcome == "filtered":
            return SimResponse(404, {"content-type": "text/plain"}, b"Not Found")
        if parts[0] == "thumbs":
            return SimResponse(200, {"content-type": "image/jpeg"}, self.thumbnail)
        size = self.video_size
        start, end, status = 0, size - 1, 200
        wanted = request.headers.get("range", "")
        if wanted.startswith("bytes=") and "-" in wanted:
            first, _, last = wanted[6:].partition("-")
            if first.isdigit():
                start = int(first)
                end = min(int(last), size - 1) if last.isdigit() else size - 1
                status = 206
                if start >= size:
                    return SimResponse(416, {"content-range": f"bytes */{size}"}, b"")
        headers = {
            "content-type": "video/mp4",
            "content-length": str(end - start + 1),
            "accept-ranges": "bytes",
        }
        if status == 206:
            headers["content-range"] = f"bytes {start}-{end}/{size}"
        return SimResponse(status, headers, chunks=self._video_bytes(start, end + 1))

    def _video_bytes(self, start: int, stop: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
        video = self.video
        while start < stop:
            if start < len(video):
                piece = video[start : min(stop, start + chunk)]
            else:  # past the real file: padding, for large-file tests
                piece = bytes(min(chunk, stop - start))
            yield piece
            start += len(piece)

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
            roll = self.rng.random()
            if roll < faults.status_error_rate:
                return self.rng.choice(["500", "502", "503", "html_502"])
            roll -= faults.status_error_rate
            if roll < faults.status_drop_rate:
                return self.rng.choice(["drop_before", "drop_after"])
            roll -= faults.status_drop_rate
            if roll < faults.status_slow_rate:
                return "slow"
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

    def _credits(self) -> dict[str, Any]:
        return {"total": _number(self._total()),
                **{k: _number(v) for k, v in self.balance.items()}}

    def _total(self) -> float:
        return sum(self.balance.values())

    def _charge(self, amount: float) -> None:
        for bucket in ("plan_credits", "credit_pack", "redemption"):
            take = min(amount, self.balance[bucket])
            self.balance[bucket] -= take
            amount -= take

    def _refund(self, record: GenerationRecord) -> float:
        if record.refunded:
            return 0.0
        record.refunded = True
        self.balance["plan_credits"] += record.credits
        return record.credits


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


def _price(model: Mapping[str, Any] | None, body: Mapping[str, Any]) -> float:
    durations = (model or {}).get("supported_durations") or []
    duration = _snap(body.get("duration", 5), durations)
    credit = float((model or {}).get("credit", SMART_SELECT_CREDIT))
    multiplier = float((model or {}).get("resolution_multipliers", {}).get(
        body.get("resolution"), 1.0))
    if body.get("sound_enabled") and (model or {}).get("sound_credit_multiplier"):
        multiplier *= float(model["sound_credit_multiplier"])  # type: ignore[index]
    return credit * duration * multiplier


def _snap(value: Any, allowed: list[Any]) -> float:
    number = float(value) if isinstance(value, (int, float)) and not isinstance(
        value, bool) and math.isfinite(value) and value > 0 else 5.0
    if not allowed:
        return number
    return float(min(allowed, key=lambda d: abs(float(d) - number)))


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 4)


def _json(status: int, body: Mapping[str, Any]) -> SimResponse:
    return SimResponse(status, {"content-type": "application/json"}, json.dumps(body).encode())
