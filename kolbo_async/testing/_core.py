"""The simulated Kolbo service: a state machine with no I/O and no clock of its own.

Every entry point takes a plain `SimRequest` and the simulated time `now`, and returns a plain
`SimResponse`; the adapters (`_transport.py`, `_respx.py`, `_asgi.py`) only translate. The
rules follow Kolbo's documentation (see ``kolbo-api.md``), each kept where its concern lives:

- A generation's lifecycle is the `TRANSITIONS` table in `_lifecycle.py`: it decides every
  state the service reports, which requests may cancel, and when a generation has ended.
- A generation is charged at submit (``credit x duration x resolution multiplier``, from
  `_catalog.py`; Smart Select costs 7 credits/s, so 5 s cost 35 as in the docs) and refunded
  when it fails or is cancelled (`_billing.py`).
- Rate limits count in fixed one-minute windows (`_limits.py`); a 429 is rejected before any
  work.
- Unsupported durations and aspect ratios are snapped to the closest supported value (the docs
  say "the API may select the closest match").
- Faults (`_faults.py`) replace or spoil an answer; the CDN (`_cdn.py`) is another origin.
- Uploads, multipart bodies (`_forms.py`) and the elements trust gate: `_uploads.py`.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from functools import partial
from typing import Any

from ._billing import Balance
from ._catalog import Refused, listing, snap, snap_ratio
from ._cdn import CDN
from ._faults import HTML_502, FaultSource, gateway_page
from ._lifecycle import REFUNDING, TERMINAL, TRANSITIONS, GenerationRecord, check_outcome
from ._limits import RateWindows
from ._records import (
    Faults,
    Plan,
    RecordedRequest,
    SimRequest,
    SimResponse,
    json_answer,
    number,
    recorded,
    route_of,
)
from ._routes import IMAGE_KINDS, ROUTE_SPECS, image_count, read_request
from ._uploads import check_trusted, upload_answer

__all__ = ["POLL_INTERVAL_HINT", "ServiceState"]

#: Simulated seconds a client is told to wait between polls (video, and image routes).
POLL_INTERVAL_HINT = 8.0
IMAGE_POLL_INTERVAL_HINT = 3.0
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
        cdn: CDN,
        trust_gate: bool = False,
    ) -> None:
        self.api_key = api_key
        self.trust_gate = trust_gate  # elements refuses references not hosted for the caller
        self.speed = speed
        # What the client is told to sleep is divided by this: the speed for a client on
        # real time, 1 for one sharing the simulator's scaled clock.
        self.hint_scale = speed if scaled_hints else 1.0
        self.limits = RateWindows(
            enabled=rate_limits,
            generations_per_minute=generations_per_minute,
            requests_per_minute=requests_per_minute,
            hint_scale=self.hint_scale,
        )
        self.pending_seconds = pending_seconds
        self.processing_seconds = processing_seconds
        self.cdn = cdn
        self.balance = Balance(credits)
        # Two generators: ids must not shift when fault rates change, and vice versa.
        self.rng = random.Random(seed)
        self.fault_source = FaultSource(seed)
        self.generations: dict[str, GenerationRecord] = {}
        self.requests: list[RecordedRequest] = []
        self._plans: deque[Plan] = deque()
        # Generations due to fail and not yet refunded: refunds happen lazily, when `settle`
        # sees them fail, so a failure refunds even if nobody polls it.
        self._failing: dict[str, GenerationRecord] = {}

    @property
    def faults(self) -> Faults:
        """The random fault rates."""
        return self.fault_source.faults

    @property
    def rate_limits(self) -> bool:
        """Whether rate limits count (settable)."""
        return self.limits.enabled

    @rate_limits.setter
    def rate_limits(self, on: bool) -> None:
        self.limits.enabled = on

    # -- scripting -----------------------------------------------------------------------

    def inject(self, route: str, fault: str, times: int = 1) -> None:
        """Queue `fault` for the next `times` requests to `route` (see `Simulator.inject`)."""
        self.fault_source.inject(route, fault, times)

    def plan(
        self,
        outcome: str,
        processing_seconds: float | None,
        times: int,
        failure: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue how the next `times` generations end."""
        check_outcome(outcome)
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
            check_outcome(outcome)
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
        check_outcome(outcome)
        record = self.generations[gen_id]
        state, _ = record.state_at(now)
        if state in TERMINAL:
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
            state, _ = record.state_at(now)
            if state in TERMINAL:
                if state in REFUNDING:  # not so when it was cancelled first, and refunded
                    self.balance.refund(record)
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
        route = route_of(request)
        fault = self.fault_source.next(route)
        if fault == "drop_before":
            response = SimResponse(fault="drop_before")
        elif fault is not None and fault.startswith("gateway_"):
            # Kolbo does the work (and charges); only the answer is lost on the way back.
            self._answer(request, route, now, None)
            response = gateway_page(fault)
        else:
            response = self._answer(request, route, now, fault)
            if fault == "drop_after":
                response.fault = "drop_after"
            elif fault == "slow":
                response.fault = "slow"
                response.delay = self.faults.slow_seconds
        self.requests.append(recorded(request, now, response))
        return response

    def _answer(
        self, request: SimRequest, route: str, now: float, fault: str | None
    ) -> SimResponse:
        if route == "cdn":
            return self.cdn.answer(request, fault, now, self.generations)
        if fault in ("500", "502", "503"):
            return _error(int(fault), "Internal error", "GENERATION_ERROR")
        if fault == "html_502":
            return SimResponse(502, {"content-type": "text/html"}, HTML_502)
        key = request.headers.get("x-api-key", "")
        if not key.startswith("kolbo_live_") or (self.api_key and key != self.api_key):
            return _error(401, "Invalid API key", "INVALID_API_KEY")
        paid, forced = route in ("generate", "upload"), fault == "429"  # uploads count too
        limited = self.limits.check(request.client, key, now, generation=paid, forced=forced)
        if limited is not None:
            return limited
        if fault == "invalid_json":
            return SimResponse(200, {"content-type": "application/json"}, b'{"success": tru')
        if route == "generate":
            return self._generate(request, key, now, fault)
        if route == "upload":
            return upload_answer(self.cdn, request, key)
        if route == "status":
            return self._status(request, key, now)
        if route == "cancel":
            return self._cancel(request, key, now)
        if route == "models":
            models = listing(request.query.get("type"))
            return json_answer(200, {"success": True, "models": models, "count": len(models)})
        if route == "credits":
            return json_answer(200, {"success": True, "credits": self.balance.report()})
        return _error(404, "Not found", "NOT_FOUND")

    def _generate(
        self, request: SimRequest, key: str, now: float, fault: str | None
    ) -> SimResponse:
        spec = ROUTE_SPECS.get(request.path)
        if spec is None:  # a generation route Kolbo has and the simulator does not serve
            return _error(404, "Not found", "NOT_FOUND")
        try:
            body, kind, model, cost = read_request(request, spec, partial(self.cdn.store, key))
            if self.trust_gate:
                check_trusted(self.cdn, request.path, body, key, self.generations)
        except Refused as refused:
            return _error(400, refused.message, refused.code)
        if self.faults.insufficient_credits or fault == "insufficient_credits" or (
            cost > self.balance.total()
        ):
            return _error(400, "Insufficient credits", "INSUFFICIENT_CREDITS")
        record = self._new_generation(now, key, body, kind, credits=cost, model=model)
        self._track(record)
        response = json_answer(200, {
            "success": True,
            "generation_id": record.id,
            "type": "image" if spec.image else "video",
            "model": record.model,
            "credits_charged": number(record.credits),
            "poll_url": f"/api/v1/generate/{record.id}/status",
            # Kolbo files every generation under a session; one passed in is kept.
            "session_id": body.get("session_id") or f"session_{record.id}",
            "poll_interval_hint": number(
                (IMAGE_POLL_INTERVAL_HINT if spec.image else POLL_INTERVAL_HINT) / self.hint_scale
            ),
        })
        if self.fault_source.drops_after_create():
            response.fault = "drop_after"
        return response

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
        ratios = (model or {}).get("supported_aspect_ratios") or ["16:9", "9:16", "1:1"]
        record = GenerationRecord(
            id=f"{self.rng.getrandbits(96):024x}",
            key=key,
            kind=kind,
            request=body,
            model=(model or {}).get("identifier", "auto"),
            duration=snap(body.get("duration", 5), durations),
            aspect_ratio=str(snap_ratio(body.get("aspect_ratio", "16:9"), ratios)),
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
        record.charged = self.balance.charge(credits)
        self.generations[record.id] = record
        return record

    def _status(self, request: SimRequest, key: str, now: float) -> SimResponse:
        record = self._owned(request, key)
        if record is None:
            return _error(404, "Generation not found", "NOT_FOUND")
        state, progress = record.state_at(now)
        record.state = state
        if state in REFUNDING:
            self.balance.refund(record)
        image = record.kind in IMAGE_KINDS
        body: dict[str, Any] = {"success": True, "generation_id": record.id,
                                "type": "image" if image else "video",
                                "state": state, "progress": progress}
        if state == "completed" and image:
            count = 0 if record.outcome == "filtered" else image_count(record.request)
            body["result"] = {
                "urls": [self.cdn.image_url(record.id, i) for i in range(count)],
                "prompt_used": str(record.request.get("prompt") or ""),
                "created_at": number(record.ends_at),
                "model": record.model,
            }
            body["credits_used"] = number(record.credits)
        elif state == "completed":
            urls = [] if record.outcome == "filtered" else [self.cdn.video_url(record.id)]
            body["result"] = {
                "urls": urls,
                "thumbnail_url": self.cdn.thumbnail_url(record.id),
                "duration": number(record.duration),
                "aspect_ratio": record.aspect_ratio,
                "model": record.model,
            }
            body["credits_used"] = number(record.credits)
        elif state == "failed":
            failure = {**_FAILURE, **(record.failure or {})}
            body["error"] = str(failure["message"])
            body["failure"] = failure
        return json_answer(200, body)

    def _cancel(self, request: SimRequest, key: str, now: float) -> SimResponse:
        record = self._owned(request, key)
        if record is None:
            return _error(404, "Generation not found", "NOT_FOUND")
        state, _ = record.state_at(now)
        if "cancel" not in TRANSITIONS[state]:
            record.state = state
            return json_answer(409, {
                "success": False, "code": "CONFLICT", "state": state,
                "error": f"Cannot cancel a generation that is already {state}",
            })
        record.cancelled_at = now
        record.state, _ = record.state_at(now)
        refunded = self.balance.refund(record) if record.state in REFUNDING else 0.0
        return json_answer(200, {"success": True, "generation_id": record.id,
                                 "state": record.state, "credits_refunded": number(refunded)})

    # -- bookkeeping ---------------------------------------------------------------------

    def _owned(self, request: SimRequest, key: str) -> GenerationRecord | None:
        parts = request.path.split("/")
        record = self.generations.get(parts[4]) if len(parts) > 4 else None
        if record is None or record.key != key:
            return None
        return record


def _error(status: int, message: str, code: str) -> SimResponse:
    return json_answer(status, {"success": False, "error": message, "code": code})
