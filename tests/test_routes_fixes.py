"""Fixes of issue 14's adversarial findings (local files, uploads, the trust gate, routes).

Each test comes from the tester's repro (tests/test_adversary_routes_*.py hold the passing
ones); each failed before its fix.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async import AsyncKolbo
from kolbo_async._cli import main
from kolbo_async.testing import Simulator, VirtualClock

KEY = "kolbo_live_" + "0f" * 20
API = "https://api.kolbo.ai/api/v1"

pytestmark = pytest.mark.timeout(60)

_UNTRUSTED = {"success": False, "error": "u", "code": "UNTRUSTED_REFERENCE_MEDIA_URL"}


# --- The trust gate's re-host: the reference's host is not Kolbo ---------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("status", [401, 403])
async def test_a_reference_hosts_401_is_not_an_account_error_halting_the_batch(
    status: int,
) -> None:
    """An expired signed URL (S3 answers 403 AccessDenied) met while re-hosting one item's
    reference is that item's problem: not AuthenticationError / PermissionDeniedError, the
    URL named without its signature, and the rest of the batch goes on."""
    ref = "https://bucket.example.com/ref.png?X-Amz-Signature=expired"
    done = {"success": True, "generation_id": "g2", "state": "completed", "progress": 100,
            "result": {"urls": ["https://cdn.kolbo.ai/v.mp4"]}}  # fmt: skip
    with respx.mock(assert_all_called=False) as router:
        router.post(f"{API}/generate/elements").mock(
            return_value=httpx.Response(400, json=_UNTRUSTED)
        )
        router.get(url__startswith="https://bucket.example.com/").mock(
            return_value=httpx.Response(status, text="AccessDenied")
        )
        text = router.post(f"{API}/generate/video").mock(
            return_value=httpx.Response(200, json={"success": True, "generation_id": "g2"})
        )
        router.get(f"{API}/generate/g2/status").mock(return_value=httpx.Response(200, json=done))
        requests = [
            k.ElementsToVideo("p", images=[ref]),
            k.TextToVideo("a"),
            k.TextToVideo("b"),
        ]
        async with AsyncKolbo(KEY, rate_limits=None, _clock=VirtualClock()) as client:
            with anyio.fail_after(30):
                outcomes = {
                    o.index: o.error
                    async for o in client.videos.generate_many(requests, concurrency=1)
                }
    error = outcomes[0]
    assert isinstance(error, k.InvalidRequestError) and error.field == "images"
    assert "https://bucket.example.com/ref.png" in str(error)
    assert "Signature" not in str(error)
    assert outcomes[1] is None and outcomes[2] is None
    assert text.call_count == 2


@pytest.mark.anyio
@pytest.mark.parametrize("status", [401, 404, 500])
async def test_an_unfetchable_reference_names_the_argument_and_its_url(status: int) -> None:
    ref = "https://example.com/gone.png?token=secret"
    with respx.mock(assert_all_called=False) as router:
        router.post(f"{API}/generate/elements").mock(
            return_value=httpx.Response(400, json=_UNTRUSTED)
        )
        router.get(url__startswith="https://example.com/").mock(
            return_value=httpx.Response(status, text="nope")
        )
        async with AsyncKolbo(KEY, rate_limits=None, _clock=VirtualClock()) as client:
            with anyio.fail_after(30), pytest.raises(k.InvalidRequestError) as info:
                await client.videos.from_elements("p", images=[ref])
    assert info.value.field == "images"
    assert "https://example.com/gone.png" in str(info.value) and str(status) in str(info.value)
    assert "secret" not in str(info.value)
    assert not isinstance(info.value, k.APIStatusError)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [401, 403])
async def test_media_upload_of_a_url_its_host_refuses_is_not_an_account_error(
    status: int,
) -> None:
    ref = "https://bucket.example.com/ref.png?X-Amz-Signature=expired"
    with respx.mock(assert_all_called=False) as router:
        router.get(url__startswith="https://bucket.example.com/").mock(
            return_value=httpx.Response(status, text="AccessDenied")
        )
        async with AsyncKolbo(KEY, rate_limits=None, _clock=VirtualClock()) as client:
            with anyio.fail_after(30), pytest.raises(k.InvalidRequestError) as info:
                await client.media.upload(ref)
    assert info.value.field == "file" and "Signature" not in str(info.value)


@pytest.mark.anyio
async def test_a_references_user_and_password_stay_out_of_errors_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reference URL carrying ``user:password@``: neither its error nor the DEBUG line of
    its download shows them (nor its query)."""
    secret = "hunter2-ref"
    with respx.mock(assert_all_called=False) as router:
        router.get(url__startswith="https://bucket.example.com/refused").mock(
            return_value=httpx.Response(403, text="AccessDenied")
        )
        router.get(url__startswith="https://bucket.example.com/ok").mock(
            return_value=httpx.Response(200, content=b"\x89PNG\r\n\x1a\n" + bytes(64),
                                        headers={"content-type": "image/png"})
        )  # fmt: skip
        router.post(f"{API}/media/upload").mock(
            return_value=httpx.Response(200, json={"success": True, "media": {"url": "u"}})
        )
        caplog.set_level(logging.DEBUG, logger="kolbo_async")
        async with AsyncKolbo(KEY, rate_limits=None, _clock=VirtualClock()) as client:
            with anyio.fail_after(30), pytest.raises(k.InvalidRequestError) as info:
                await client.media.upload(f"https://me:{secret}@bucket.example.com/refused?s=1")
            await client.media.upload(f"https://me:{secret}@bucket.example.com/ok.png?s=1")
    assert secret not in str(info.value) and "s=1" not in str(info.value)
    assert "bucket.example.com" in caplog.text
    assert secret not in caplog.text


# --- Never pay twice, but never strand what was certainly not sent ---------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["drop_after", "gateway_502", "500"])
async def test_a_lost_upload_does_not_strand_its_batch_item_as_unknown(
    tmp_path: Path, fault: str
) -> None:
    """The upload-first item never sent its generation POST: nothing can have been charged,
    so a rerun with the journal sends it (uploading again), not refuse it as unknown."""
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG-a")
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    sim.inject("upload", fault)
    journal = tmp_path / "batch.db"
    async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        with anyio.fail_after(30):
            [first] = [
                o
                async for o in client.videos.generate_many(
                    [k.ImageToVideo(png, prompt="zoom")], journal=journal
                )
            ]
            assert first.error is not None and not sim.generations
            assert not isinstance(first.error, k.SubmissionOutcomeUnknownError) or (
                "upload" in str(first.error)
            )
            [again] = [
                o
                async for o in client.videos.generate_many(
                    [k.ImageToVideo(png, prompt="zoom")], journal=journal
                )
            ]
    assert again.error is None, again.error
    assert len(sim.generations) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("make", [k.VideoToVideo, lambda p: k.ImageToVideo(p, prompt="x")],
                         ids=["multipart", "upload-first"])  # fmt: skip
async def test_a_file_gone_before_its_post_is_not_an_unknown_outcome(
    tmp_path: Path, make: object
) -> None:
    """Item 1's file is deleted while item 0 is being sent (after the batch's up-front
    check): its body can never be read whole, so Kolbo cannot have acted on it. The item
    ends with the InvalidRequestError, and a rerun (file restored) sends it."""
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    a.write_bytes(b"a" * 100)
    b.write_bytes(b"b" * 100)
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    inner = sim.transport()
    armed = [True]

    class DeleteB(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if armed[0] and "/generate/" in request.url.path:
                armed[0] = False
                b.unlink()
            return await inner.handle_async_request(request)

    journal = tmp_path / "batch.db"
    requests = [make(a), make(b)]  # type: ignore[operator]
    async with AsyncKolbo(KEY, _transport=DeleteB(), _clock=clock) as client:
        with anyio.fail_after(30):
            first = {o.index: o.error async for o in client.videos.generate_many(
                requests, journal=journal, concurrency=1)}  # fmt: skip
            b.write_bytes(b"b" * 100)
            again = {o.index: o.error async for o in client.videos.generate_many(
                requests, journal=journal, concurrency=1)}  # fmt: skip
    assert isinstance(first[1], k.InvalidRequestError)
    assert again[1] is None and len(sim.generations) == 2


@pytest.mark.anyio
async def test_a_generation_post_that_fails_after_its_uploads_stays_unknown(
    tmp_path: Path,
) -> None:
    """The other side of the line: the uploads went through, then the generation POST's
    answer was lost. That one may have been charged, so a rerun reports it, never resends."""
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG-a")
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    sim.inject("generate", "drop_after")
    journal = tmp_path / "batch.db"
    request = k.ImageToVideo(png, prompt="zoom")
    async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        with anyio.fail_after(30):
            [first] = [o async for o in client.videos.generate_many([request], journal=journal)]
            [again] = [o async for o in client.videos.generate_many([request], journal=journal)]
    assert isinstance(first.error, k.SubmissionOutcomeUnknownError)
    assert isinstance(again.error, k.SubmissionOutcomeUnknownError)
    assert len(sim.generations) <= 1


# --- Wrong file objects given to media.upload ---------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["stringio", "text-mode-file", "read-raises",
                                  "read-raises-later"])  # fmt: skip
async def test_a_wrong_file_object_is_refused_saying_why(tmp_path: Path, kind: str) -> None:
    text = tmp_path / "a.txt"
    text.write_text("hello wörld")

    class Failing(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            raise RuntimeError("disk on fire")

    class FailingLater(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            if n == 0:
                return b""
            raise RuntimeError("disk on fire")

    clock = VirtualClock()
    sim = Simulator(clock=clock)
    async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        with text.open() as handle, anyio.fail_after(30):
            file = {"stringio": io.StringIO("hello"), "text-mode-file": handle,
                    "read-raises": Failing(b"abc"),
                    "read-raises-later": FailingLater(b"abc")}[kind]  # fmt: skip
            with pytest.raises(k.InvalidRequestError) as info:
                await client.media.upload(file)  # type: ignore[arg-type]
    assert info.value.field == "file"
    assert "shrank" not in str(info.value) and "closed" not in str(info.value)
    if kind.startswith("read-raises"):
        assert "disk on fire" in str(info.value)


@pytest.mark.anyio
async def test_a_runtime_error_from_a_body_is_not_read_as_a_closed_client() -> None:
    from kolbo_async._send import send

    async def body() -> AsyncIterator[bytes]:
        yield b"a"
        raise RuntimeError("disk on fire")

    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=request.read()))
    async with httpx.AsyncClient(transport=transport) as http:
        request = http.build_request("POST", "https://api.kolbo.ai/x", content=body())
        with pytest.raises(RuntimeError, match="disk on fire"):
            await send(http, request, anyio.Semaphore(1), lambda _: None)


# --- Text that is not valid UTF-8 (lone surrogates from os.listdir, argv) -------------------


def _non_utf8_file(tmp_path: Path) -> str:
    """A file whose name is not UTF-8 (as old archives and Latin-1 systems leave them);
    Python hands it out (os.listdir, argv, Path.iterdir) with surrogate escapes."""
    raw = os.fsencode(tmp_path) + b"/caf\xe9.png"
    with open(raw, "wb") as file:
        file.write(b"\x89PNG-cafe")
    return os.fsdecode(raw)


_FILE_CALLS: dict[str, Callable[[AsyncKolbo, str], Awaitable[object]]] = {
    "first_frame": lambda c, name: c.videos.from_frames(name, "https://e.test/b.png"),
    "face": lambda c, name: c.videos.lipsync(name, "https://e.test/a.mp3"),
    "video": lambda c, name: c.videos.from_video(name),
    "images[0]": lambda c, name: c.videos.from_elements("p", images=[name]),
    "file": lambda c, name: c.media.upload(name),
    "image_url": lambda c, name: c.videos.from_image(name),
}


@pytest.mark.anyio
@pytest.mark.parametrize("field", sorted(_FILE_CALLS))
async def test_a_non_utf8_file_name_is_refused_naming_the_argument(
    tmp_path: Path, field: str
) -> None:
    name = _non_utf8_file(tmp_path)
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        with anyio.fail_after(30), pytest.raises(k.InvalidRequestError) as info:
            await _FILE_CALLS[field](client, name)
    assert info.value.field == field and "UTF-8" in str(info.value)
    assert not sim.requests


@pytest.mark.anyio
@pytest.mark.parametrize(
    "field", ["prompt", "image", "frames-prompt", "description", "extra_body", "extra_key"]
)
async def test_a_lone_surrogate_in_a_text_field_is_an_invalid_request(
    tmp_path: Path, field: str
) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG")
    text = "caf\udce9"  # what os.fsdecode / surrogateescape makes of b"caf\xe9"
    calls: dict[str, Callable[[AsyncKolbo], Awaitable[object]]] = {
        "prompt": lambda c: c.videos.generate(text),
        "image": lambda c: c.images.generate(text),
        "frames-prompt": lambda c: c.videos.from_frames(png, png, prompt=text),
        "description": lambda c: c.media.upload(png, description=text),
        "extra_body": lambda c: c.videos.generate("p", extra_body={"x": [text]}),
        "extra_key": lambda c: c.videos.generate("p", extra_body={text: 1}),
    }
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        with anyio.fail_after(30), pytest.raises(k.InvalidRequestError) as info:
            await calls[field](client)
    assert info.value.field in ("prompt", "description", "extra_body")
    assert not sim.requests


def test_valid_non_ascii_text_passes() -> None:
    assert k.TextToVideo("café 東京 🎬").body()[1]["prompt"] == "café 東京 🎬"


@pytest.mark.parametrize(
    "argv", [["upload", "FILE"], ["frames", "FILE", "FILE"], ["image", "caf\udce9 at dawn"]]
)
def test_cli_non_utf8_argument_is_a_usage_error_not_a_traceback(
    tmp_path: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOLBO_SANDBOX_SPEED", "300")
    name = _non_utf8_file(tmp_path)
    argv = [name if a == "FILE" else a for a in argv]
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    code = main(["--sandbox", *argv], stdout=out)
    assert code == 2 and err.getvalue().startswith("kolbo: error:"), err.getvalue()
    assert "UTF-8" in err.getvalue()


# --- Typing: a media argument takes a pathlib.Path ------------------------------------------

_MEDIA_FIELDS = [
    (k.FramesToVideo, "first_frame", False),
    (k.FramesToVideo, "last_frame", False),
    (k.VideoToVideo, "video", False),
    (k.VideoToVideo, "reference_images", True),
    (k.VideoToVideo, "reference_videos", True),
    (k.Lipsync, "face", False),
    (k.Lipsync, "audio", False),
    (k.ElementsToVideo, "images", True),
    (k.ElementsToVideo, "videos", True),
    (k.ElementsToVideo, "audio", True),
    (k.ImageToVideo, "image_url", False),
    (k.TextToVideo, "reference_images", True),
    (k.TextToImage, "reference_images", True),
    (k.ImageEdit, "images", True),
]


@pytest.mark.parametrize(("cls", "name", "many"), _MEDIA_FIELDS)
def test_a_media_field_is_typed_to_take_a_path(cls: type, name: str, many: bool) -> None:
    """What mypy reads: the class's annotation, and its __init__'s (a converter's)."""
    import typing
    from collections.abc import Sequence

    import kolbo_async._requests as requests_module

    medium = str | os.PathLike[str]
    namespace = vars(requests_module)
    declared = typing.get_type_hints(cls, namespace)[name]
    taken = typing.get_type_hints(cls.__init__, namespace)[name]
    for hint in (declared, taken):
        args = set(typing.get_args(hint))
        if many:
            assert Sequence[medium] in args or hint == Sequence[medium], hint
        else:
            assert hint == medium, hint


# --- A cancelled upload is an upload, not a generation --------------------------------------


@pytest.mark.anyio
async def test_a_cancelled_upload_is_not_logged_as_a_charged_generation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG-a")
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    inner = sim.transport()
    arrived, release = anyio.Event(), anyio.Event()

    class Held(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            arrived.set()
            await release.wait()
            return await inner.handle_async_request(request)

    with caplog.at_level(logging.WARNING, logger="kolbo_async"):
        client = AsyncKolbo(KEY, _transport=Held(), _clock=clock)
        async with client, anyio.create_task_group() as group:
            scope = anyio.CancelScope()

            async def caller() -> None:
                with scope:
                    await client.media.upload(png)

            group.start_soon(caller)
            await arrived.wait()
            scope.cancel()
            release.set()
    assert "attach(None)" not in caplog.text and "generation None" not in caplog.text
    assert "stored in the media library as https://" in caplog.text, caplog.text


@pytest.mark.anyio
async def test_a_cancelled_upload_whose_answer_is_lost_says_the_file_may_be_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG-a")
    arrived, release = anyio.Event(), anyio.Event()

    class Lost(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            arrived.set()
            await release.wait()
            raise httpx.ReadError("connection reset", request=request)

    with caplog.at_level(logging.WARNING, logger="kolbo_async"):
        client = AsyncKolbo(KEY, _transport=Lost(), _clock=VirtualClock())
        async with client, anyio.create_task_group() as group:
            scope = anyio.CancelScope()

            async def caller() -> None:
                with scope:
                    await client.media.upload(png)

            group.start_soon(caller)
            await arrived.wait()
            scope.cancel()
            release.set()
    assert "may have stored the file in the media library" in caplog.text, caplog.text
    assert "charged generation" not in caplog.text


# --- kolbo upload: every file checked before the first is sent ------------------------------


def _cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.setenv("KOLBO_SANDBOX_SPEED", "300")
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    code = main(["--sandbox", *argv], stdout=out)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_cli_upload_of_a_fifo_or_device_is_not_a_regular_file(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kind == "fifo":
        name = str(tmp_path / "pipe")
        os.mkfifo(name)
    else:
        name = "/dev/zero"
    code, out, err = _cli(["upload", name], monkeypatch)
    assert code == 2 and not out
    assert err.startswith("kolbo: error: FILE:") and "is not a regular file" in err, err


def test_cli_upload_checks_every_file_before_sending_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    day, big = tmp_path / "day.png", tmp_path / "big.mp4"
    day.write_bytes(b"\x89PNG")
    with big.open("wb") as file:  # sparse: 600 MiB announced, nothing written
        file.truncate(600 * 1024 * 1024)
    code, out, err = _cli(["upload", str(day), str(big)], monkeypatch)
    assert code == 2 and not out  # day.png was not uploaded either
    assert err.startswith("kolbo: error: FILE 2:") and "500 MiB" in err, err


def test_cli_upload_of_a_missing_file_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = _cli(["upload", str(tmp_path / "gone.png")], monkeypatch)
    assert code == 2 and "does not exist" in err and not out
