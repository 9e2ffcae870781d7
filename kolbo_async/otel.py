"""OpenTelemetry for kolbo-async: a hook that turns the SDK's events into spans.

    from kolbo_async import AsyncKolbo
    from kolbo_async.otel import TracingHook

    client = AsyncKolbo(hooks=[TracingHook()])   # the global tracer provider, or pass one

Needs ``opentelemetry-api`` (``pip install 'kolbo-async[otel]'``); `import kolbo_async` never
imports this module, so a program without tracing pays nothing for it. What it records:

- a CLIENT span per HTTP attempt of an API call, ``GET /api/v1/generate/{generation_id}/status``,
  child of the span current where the call was made, with ``http.request.method``,
  ``url.path``, ``url.template`` (for a path with an id), ``http.response.status_code``,
  ``kolbo.attempt`` (``http.request.resend_count`` on a retry), ``kolbo.generation_id`` and
  ``error.type``; an error status for a failure or a 4xx/5xx answer;
- a span ``kolbo.submit`` per generation submitted (the whole submission, pacing and
  retries included) with ``kolbo.generation_id``, ``kolbo.route``, ``kolbo.model`` and
  ``kolbo.credits``;
- span events on the current span for the rest: ``kolbo.retry``, ``kolbo.pacing_wait``,
  ``kolbo.cooldown``, ``kolbo.state_changed``, and ``kolbo.downloaded`` when a download's
  last byte arrives.

No key, header or URL query is ever recorded (the events carry none).
"""

from __future__ import annotations

import re
import time

try:
    from opentelemetry import trace
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "kolbo_async.otel needs opentelemetry-api: pip install 'kolbo-async[otel]'"
    ) from exc

from ._hooks import (
    CooldownStarted,
    DownloadProgress,
    Event,
    GenerationSubmitted,
    PacingWait,
    RequestDone,
    Retrying,
    StateChanged,
)

__all__ = ["TracingHook"]

#: A path naming a generation: its id becomes ``url.template``'s placeholder.
_WITH_ID = re.compile(r"^(/api/v1/generate/)([^/]+)(/(?:status|cancel))$")

Attributes = dict[str, str | bool | int | float]


class TracingHook:
    """A hook (``AsyncKolbo(hooks=[TracingHook()])``) recording the client's events as
    OpenTelemetry spans and span events (see the module's docstring for which).

    Args:
        tracer_provider: where the spans go; defaults to the global one
            (``opentelemetry.trace.set_tracer_provider``).
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(
            "kolbo_async", _version(), tracer_provider=tracer_provider
        )

    def __call__(self, event: Event) -> None:
        """Record `event`."""
        if isinstance(event, RequestDone):
            self._request(event)
        elif isinstance(event, GenerationSubmitted):
            self._submitted(event)
        else:
            _annotate(event)

    def _request(self, event: RequestDone) -> None:
        attributes: Attributes = {
            "http.request.method": event.method,
            "url.path": event.path,
            "kolbo.attempt": event.attempt,
        }
        name = event.path
        with_id = _WITH_ID.match(event.path)
        if with_id is not None:
            name = f"{with_id[1]}{{generation_id}}{with_id[3]}"
            attributes["url.template"] = name
            attributes["kolbo.generation_id"] = with_id[2]
        if event.attempt > 1:
            attributes["http.request.resend_count"] = event.attempt - 1
        error = event.error
        if event.status_code is not None:
            attributes["http.response.status_code"] = event.status_code
            if event.status_code >= 400:
                error = str(event.status_code)
        if error is not None:
            attributes["error.type"] = error
        end = time.time_ns()
        span = self._tracer.start_span(
            f"{event.method} {name}",
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            start_time=end - int(event.seconds * 1e9),
        )
        if error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR))
        span.end(end_time=end)

    def _submitted(self, event: GenerationSubmitted) -> None:
        attributes: Attributes = {
            "kolbo.generation_id": event.generation_id,
            "kolbo.route": event.route,
        }
        if event.model is not None:
            attributes["kolbo.model"] = event.model
        if event.credits is not None:
            attributes["kolbo.credits"] = event.credits
        end = time.time_ns()
        span = self._tracer.start_span(
            "kolbo.submit", attributes=attributes, start_time=end - int(event.seconds * 1e9)
        )
        span.end(end_time=end)


def _annotate(event: Event) -> None:
    """Add `event` to the current span, when one is recording."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    if isinstance(event, Retrying):
        span.add_event("kolbo.retry", {
            "http.request.method": event.method, "url.path": event.path,
            "kolbo.attempt": event.attempt, "kolbo.retry.delay": event.delay,
            "kolbo.retry.reason": event.reason,
        })  # fmt: skip
    elif isinstance(event, PacingWait):
        span.add_event(
            "kolbo.pacing_wait", {"kolbo.bucket": event.bucket, "kolbo.seconds": event.seconds}
        )
    elif isinstance(event, CooldownStarted):
        where: Attributes = (
            {"kolbo.bucket": event.bucket} if event.bucket is not None
            else {"server.address": event.host or ""}
        )  # fmt: skip
        span.add_event("kolbo.cooldown", {**where, "kolbo.seconds": event.seconds})
    elif isinstance(event, StateChanged):
        span.add_event("kolbo.state_changed", {
            "kolbo.generation_id": event.generation_id, "kolbo.state": event.state,
            "kolbo.progress": event.progress,
        })  # fmt: skip
    elif isinstance(event, DownloadProgress) and event.received == event.total:
        span.add_event("kolbo.downloaded", {"kolbo.bytes": event.received})


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kolbo-async")
    except PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
        return None
