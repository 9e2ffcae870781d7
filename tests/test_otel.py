"""OpenTelemetry: `kolbo_async.otel.TracingHook` with the real opentelemetry-api and -sdk,
spans kept by the SDK's in-memory exporter, against the simulator on a virtual clock.

A test per span and per span event, each audited for the key (names, attributes, events);
`import kolbo_async` never imports opentelemetry (a fresh process checks).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from kolbo_async import RateLimits
from kolbo_async.otel import TracingHook
from kolbo_async.testing import Simulator, VirtualClock

KEY = "kolbo_live_" + "0b" * 20
CREDITS = "/api/v1/account/credits"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def app_events(exporter: InMemorySpanExporter, name: str) -> list[dict[str, Any]]:
    """The attributes of the `name` events on the test's own span ("app")."""
    [app] = spans(exporter, "app")
    return [dict(event.attributes or {}) for event in app.events if event.name == name]


def texts(span: ReadableSpan) -> list[str]:
    """Everything a span exports: its name, attributes and events."""
    out = [span.name, repr(dict(span.attributes or {})), span.to_json()]
    out += [f"{e.name} {dict(e.attributes or {})}" for e in span.events]
    return out


@pytest.mark.anyio
class TestSpans:
    async def test_request_span(
        self, provider: TracerProvider, exporter: InMemorySpanExporter
    ) -> None:
        """One CLIENT span per attempt, a child of the caller's span, with the HTTP facts."""
        sim = Simulator(clock=VirtualClock())
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("app") as app:
            async with sim.client(KEY, hooks=[TracingHook(provider)]) as client:
                await client.account.credits()
        [span] = spans(exporter, f"GET {CREDITS}")
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == app.get_span_context().span_id
        assert dict(span.attributes or {}) == {
            "http.request.method": "GET",
            "url.path": CREDITS,
            "kolbo.attempt": 1,
            "http.response.status_code": 200,
        }
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time
        assert span.status.status_code is StatusCode.UNSET

    async def test_request_spans_of_a_retry(
        self, provider: TracerProvider, exporter: InMemorySpanExporter
    ) -> None:
        """A 503 then a 200: two spans, the first an error, the second a resend; the retry is
        an event on the caller's span."""
        sim = Simulator(clock=VirtualClock())
        sim.inject("credits", "503")
        with provider.get_tracer("test").start_as_current_span("app"):
            async with sim.client(KEY, hooks=[TracingHook(provider)]) as client:
                await client.account.credits()
        first, second = spans(exporter, f"GET {CREDITS}")
        assert first.attributes is not None and second.attributes is not None
        assert first.attributes["http.response.status_code"] == 503
        assert first.attributes["error.type"] == "503"
        assert first.status.status_code is StatusCode.ERROR
        assert second.attributes["kolbo.attempt"] == 2
        assert second.attributes["http.request.resend_count"] == 1
        [retry] = app_events(exporter, "kolbo.retry")
        assert retry["kolbo.retry.reason"] == "HTTP 503"
        assert retry["kolbo.attempt"] == 1
        assert retry["kolbo.retry.delay"] > 0

    async def test_request_span_without_an_answer(
        self, provider: TracerProvider, exporter: InMemorySpanExporter
    ) -> None:
        """A transport failure: an error span naming httpx's error, no status."""
        sim = Simulator(clock=VirtualClock())
        sim.inject("credits", "drop_before")
        async with sim.client(KEY, hooks=[TracingHook(provider)], max_retries=0) as client:
            with pytest.raises(Exception, match="could not connect"):
                await client.account.credits()
        [span] = spans(exporter, f"GET {CREDITS}")
        assert span.attributes is not None
        assert span.attributes["error.type"] == "ConnectError"
        assert "http.response.status_code" not in span.attributes
        assert span.status.status_code is StatusCode.ERROR

    async def test_submit_span_and_status_polls(
        self, provider: TracerProvider, exporter: InMemorySpanExporter
    ) -> None:
        """kolbo.submit: generation id, route, model, credits; each poll a span templated on
        the id, with the id as an attribute; state changes are events."""
        sim = Simulator(clock=VirtualClock())
        with provider.get_tracer("test").start_as_current_span("app"):
            async with sim.client(KEY, hooks=[TracingHook(provider)]) as client:
                gen = await client.videos.generate("a cat", duration=5)
                await gen.wait()
        [submit] = spans(exporter, "kolbo.submit")
        assert gen.submission is not None
        assert dict(submit.attributes or {}) == {
            "kolbo.generation_id": gen.id,
            "kolbo.route": "/api/v1/generate/video",
            "kolbo.model": gen.submission.model,
            "kolbo.credits": 35,
        }
        [post] = spans(exporter, "POST /api/v1/generate/video")
        assert post.attributes is not None and post.attributes["kolbo.attempt"] == 1
        polls = spans(exporter, "GET /api/v1/generate/{generation_id}/status")
        assert polls
        for poll in polls:
            assert poll.attributes is not None
            assert poll.attributes["kolbo.generation_id"] == gen.id
            assert poll.attributes["url.template"] == "/api/v1/generate/{generation_id}/status"
            assert poll.attributes["url.path"] == f"/api/v1/generate/{gen.id}/status"
        changes = app_events(exporter, "kolbo.state_changed")
        assert changes[-1] == {
            "kolbo.generation_id": gen.id, "kolbo.state": "completed", "kolbo.progress": 100
        }

    async def test_pacing_and_cooldown_events(
        self, provider: TracerProvider, exporter: InMemorySpanExporter
    ) -> None:
        """A 429's cooldown and the wait it causes, as events on the caller's span."""
        sim = Simulator(clock=VirtualClock())
        sim.inject("credits", "429")
        with provider.get_tracer("test").start_as_current_span("app"):
            async with sim.client(
                KEY, hooks=[TracingHook(provider)], rate_limits=RateLimits()
            ) as client:
                await client.account.credits()
        [cooldown] = app_events(exporter, "kolbo.cooldown")
        assert cooldown["kolbo.bucket"] == "request"
        assert cooldown["kolbo.seconds"] > 0
        [wait] = app_events(exporter, "kolbo.pacing_wait")
        assert wait["kolbo.bucket"] == "request"

    async def test_downloaded_event(
        self, provider: TracerProvider, exporter: InMemorySpanExporter, tmp_path: Path
    ) -> None:
        """A finished download: one event with its size (not one per chunk)."""
        sim = Simulator(clock=VirtualClock(), video_size=200_000)
        with provider.get_tracer("test").start_as_current_span("app"):
            async with sim.client(KEY, hooks=[TracingHook(provider)]) as client:
                gen = await client.videos.generate("a cat")
                path = await gen.download(tmp_path / "cat.mp4")
        assert app_events(exporter, "kolbo.downloaded") == [
            {"kolbo.bytes": path.stat().st_size}
        ]

    async def test_no_current_span_no_events(
        self, provider: TracerProvider, exporter: InMemorySpanExporter
    ) -> None:
        """Outside any span the events have nowhere to go: only the spans are recorded."""
        sim = Simulator(clock=VirtualClock())
        sim.inject("credits", "503")
        async with sim.client(KEY, hooks=[TracingHook(provider)]) as client:
            await client.account.credits()
        assert {s.name for s in exporter.get_finished_spans()} == {f"GET {CREDITS}"}


@pytest.mark.anyio
async def test_no_key_in_any_span(
    provider: TracerProvider, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    """Every span and span event of a run that makes them all: no key anywhere."""
    sim = Simulator(clock=VirtualClock(), video_size=50_000)
    sim.inject("credits", "429")
    sim.inject("credits", "drop_before")
    with provider.get_tracer("test").start_as_current_span("app"):
        async with sim.client(
            KEY, hooks=[TracingHook(provider)], rate_limits=RateLimits(requests_per_minute=3)
        ) as client:
            await client.account.credits()
            gen = await client.videos.generate("a cat")
            await gen.download(tmp_path / "cat.mp4")
    finished = exporter.get_finished_spans()
    names = {span.name for span in finished}
    assert {"kolbo.submit", f"GET {CREDITS}", "POST /api/v1/generate/video"} <= names
    [app] = spans(exporter, "app")
    kinds = {event.name for event in app.events}
    assert kinds == {
        "kolbo.retry", "kolbo.cooldown", "kolbo.pacing_wait", "kolbo.state_changed",
        "kolbo.downloaded",
    }
    for span in finished:
        for text in texts(span):
            assert KEY not in text
            assert KEY[len("kolbo_live_"):] not in text


@pytest.mark.slow
def test_import_kolbo_async_does_not_import_opentelemetry() -> None:
    """Tracing costs nothing until asked for: a fresh `import kolbo_async` (and a client)
    loads no opentelemetry module, nor kolbo_async.otel."""
    code = (
        "import sys, kolbo_async; kolbo_async.AsyncKolbo('k'); "
        "bad = [m for m in sys.modules if m.startswith(('opentelemetry', 'kolbo_async.otel'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_without_opentelemetry_the_error_says_what_to_install() -> None:
    """kolbo_async.otel without opentelemetry-api: an ImportError naming the extra."""
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "try:\n"
        "    import kolbo_async.otel\n"
        "except ImportError as exc:\n"
        "    sys.exit(0 if 'kolbo-async[otel]' in str(exc) else 2)\n"
        "sys.exit(1)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
