"""Local files given for media (`_local_files`, `_multipart`): what is a file and what a URL,
the checks made before anything is sent, the multipart body's exact bytes (re-readable for a
retry), and a file's identity in a journal (its content)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async import AsyncKolbo, ElementsToVideo, FramesToVideo
from kolbo_async._journal_keys import request_key
from kolbo_async._local_files import CHUNK, FRAME_MAX_BYTES, LocalFile, local_file
from kolbo_async._multipart import Form, form_of
from kolbo_async._requests import check_medium
from kolbo_async.testing._forms import parse_form

KEY = "kolbo_live_" + "f6" * 20
A = "https://example.com/a.png"


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


class TestCheck:
    def test_url_stays_a_url(self) -> None:
        assert type(check_medium()("image_url", A)) is str

    def test_a_path_string_and_a_pathlike_are_files(self, tmp_path: Path) -> None:
        path = write(tmp_path / "a.png", b"12345")
        for given in (path, Path(path), os.path.relpath(path)):
            file = check_medium()("image_url", given)
            assert isinstance(file, LocalFile) and file == path
            assert (file.size, file.kind, file.content_type) == (5, "image", "image/png")

    @pytest.mark.parametrize("given", ["missing.png", "ftp://example.com/a.png", "", " "])
    def test_not_a_file_names_the_argument(self, tmp_path: Path, given: str) -> None:
        with pytest.raises(k.InvalidRequestError) as info:
            check_medium()("first_frame", str(tmp_path / given) if given == "missing.png"
                           else given)  # fmt: skip
        assert info.value.field == "first_frame"

    def test_a_directory_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(k.InvalidRequestError, match="not a regular file"):
            local_file("face", tmp_path)

    def test_oversized_is_refused_before_reading(self, tmp_path: Path) -> None:
        path = tmp_path / "big.png"
        with path.open("wb") as file:  # sparse: no 10 MiB written
            file.truncate(FRAME_MAX_BYTES + 1)
        with pytest.raises(k.InvalidRequestError, match="10 MiB") as info:
            FramesToVideo(path, A).body()
        assert info.value.field == "first_frame"

    @pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
    def test_unreadable_is_refused(self, tmp_path: Path) -> None:
        path = Path(write(tmp_path / "a.png", b"x"))
        path.chmod(0)
        with pytest.raises(k.InvalidRequestError, match="cannot read"):
            local_file("face", path)

    @pytest.mark.anyio
    async def test_nothing_is_sent_for_a_missing_file(self, tmp_path: Path) -> None:
        with respx.mock(assert_all_called=False) as router:
            async with AsyncKolbo(KEY, rate_limits=None) as client:
                with pytest.raises(k.InvalidRequestError) as info:
                    await client.videos.lipsync(A, tmp_path / "voice.mp3")
                with pytest.raises(k.InvalidRequestError):
                    await client.media.upload(tmp_path / "gone.png")
        assert info.value.field == "audio"
        assert not router.calls

    def test_kind_by_extension(self, tmp_path: Path) -> None:
        kinds = {name: local_file("x", write(tmp_path / name, b"x")).kind
                 for name in ("a.MP4", "b.wav", "c.jpeg", "d")}  # fmt: skip
        assert kinds == {"a.MP4": "video", "b.wav": "audio", "c.jpeg": "image", "d": "image"}


@pytest.mark.anyio
class TestForm:
    async def body(self, form: Form) -> bytes:
        return b"".join([chunk async for chunk in form])

    async def test_exact_bytes_and_length(self, tmp_path: Path) -> None:
        a = local_file("a", write(tmp_path / 'my "a".png', b"PNG"))
        form = Form([("files", a)], [("prompt", "dawn\r\nto dusk"), ("duration", "5")])
        dash = f"--{form.boundary}"
        expected = (
            f'{dash}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="my %22a%22.png"\r\nContent-Type: image/png\r\n\r\nPNG\r\n'
            f'{dash}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\ndawn\r\nto dusk\r\n'
            f'{dash}\r\nContent-Disposition: form-data; name="duration"\r\n\r\n5\r\n{dash}--\r\n'
        ).encode()
        body = await self.body(form)
        assert body == expected and form.length == len(body)
        assert await self.body(form) == body  # re-readable: a retry sends it whole again

    async def test_a_large_file_streams_in_chunks(self, tmp_path: Path) -> None:
        data = os.urandom(CHUNK * 2 + 5)
        form = Form([("file", local_file("file", write(tmp_path / "v.mp4", data)))], [])
        chunks = [chunk async for chunk in form]
        assert max(map(len, chunks)) == CHUNK  # never the whole file at once
        assert data in b"".join(chunks) and form.length == sum(map(len, chunks))

    async def test_a_file_that_shrank_is_named(self, tmp_path: Path) -> None:
        path = Path(write(tmp_path / "a.png", b"12345"))
        form = Form([("files", local_file("first_frame", path))], [])
        path.write_bytes(b"1")
        with pytest.raises(k.InvalidRequestError, match="shrank") as info:
            await self.body(form)
        assert info.value.field == "first_frame"

    async def test_field_encoding(self, tmp_path: Path) -> None:
        """Arrays and objects as JSON strings, booleans and numbers as text, the elements'
        reference_images repeated; URLs of a list stay fields beside its files."""
        a = write(tmp_path / "a.png", b"a")
        path, body = ElementsToVideo(
            "p", images=[a, A, A + "?2"], audio=[A], keyframes=[(A, 1.5)], duration=5.0,
            enhance_prompt=False, visual_dna_ids=["d1"], multi_shot_count=2,
        ).body()  # fmt: skip
        form = form_of(path, body)
        assert form is not None
        assert [(name, file.filename) for name, file in form.files] == [("files", "a.png")]
        assert form.fields == [
            ("prompt", "p"), ("reference_images", A), ("reference_images", A + "?2"),
            ("reference_audio_urls", f'["{A}"]'),
            ("keyframes", f'[{{"image_url":"{A}","timestamp_seconds":1.5}}]'),
            ("multi_shot_count", "2"), ("duration", "5"), ("enhance_prompt", "false"),
            ("visual_dna_ids", '["d1"]'),
        ]  # fmt: skip

    async def test_no_file_no_form(self) -> None:
        assert form_of(*FramesToVideo(A, A).body()) is None


class TestJournalIdentity:
    def test_a_file_counts_by_its_content(self, tmp_path: Path) -> None:
        a = write(tmp_path / "a.png", b"one")
        moved = write(tmp_path / "moved.png", b"one")
        key = request_key(*FramesToVideo(a, a).body())
        assert request_key(*FramesToVideo(moved, moved).body()) == key
        Path(a).write_bytes(b"two")  # edited: a new item
        assert request_key(*FramesToVideo(a, a).body()) != key


def test_import_loads_no_multipart_machinery() -> None:
    """import kolbo_async does not load the multipart encoder (only local files need it)."""
    code = (
        "import sys, kolbo_async; "
        "sys.exit('kolbo_async._multipart' in sys.modules or 'anyio.to_thread' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.anyio
async def test_respx_sees_the_parts_of_a_frames_post(tmp_path: Path) -> None:
    """Both local frames: two `files` parts, first then last, then the fields."""
    a, b = write(tmp_path / "a.png", b"AA"), write(tmp_path / "b.jpg", b"BB")
    with respx.mock() as router:
        route = router.post("https://api.kolbo.ai/api/v1/generate/first-last-frame").mock(
            return_value=httpx.Response(200, json={"success": True, "generation_id": "g1"})
        )
        async with AsyncKolbo(KEY, rate_limits=None) as client:
            await client.videos.from_frames(a, b, prompt="p", sound_enabled=True)
    request = route.calls.last.request
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert int(request.headers["content-length"]) == len(request.content)
    fields, files = parse_form(request.headers["content-type"], request.content)
    assert files == [
        ("files", "a.png", "image/png", b"AA"), ("files", "b.jpg", "image/jpeg", b"BB")
    ]  # fmt: skip
    assert fields == [("prompt", "p"), ("sound_enabled", "true")]
