"""The `kolbo` commands of every route: image, frames, elements, restyle and lipsync.

Driven in-process as a user types them: with `--sandbox` (the real path, end to end), and
against a simulator on a virtual clock the test can inspect (what was sent, what was paid).
`--download` names files by what the CDN sends and saves every image of a result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from kolbo_async import _cli
from kolbo_async._cli_save import extension
from kolbo_async.testing import Simulator, VirtualClock
from tests.test_cli import KEY, run

A = "https://example.com/a.png"
B = "https://example.com/b.png"
CLIP = "https://example.com/clip.mp4"
VOICE = "https://example.com/voice.mp3"
PNG = b"\x89PNG\r\n\x1a\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64 + b"\xff\xd9"

#: (command line, the path it POSTs to, what the body holds, the extension saved)
ROUTES: list[tuple[list[str], str, dict[str, Any], str]] = [
    (["image", "a lighthouse", "--num-images", "1", "--resolution", "2K"],
     "/image", {"prompt": "a lighthouse", "num_images": 1, "resolution": "2K"}, ".png"),
    (["image", "paint it green", "--edit", A, "--reference", B],
     "/image-edit",
     {"prompt": "paint it green", "source_images": [A], "reference_images": [B]}, ".png"),
    (["frames", A, B, "--prompt", "dusk", "--duration", "5", "--no-sound"],
     "/first-last-frame",
     {"first_frame_url": A, "last_frame_url": B, "prompt": "dusk", "duration": 5.0,
      "sound_enabled": False}, ".mp4"),
    (["elements", "a bottle turns", "--image", A, "--audio", VOICE,
      "--keyframe", f"{B}@1.5", "--aspect-ratio", "16:9", "--no-enhance"],
     "/elements",
     {"prompt": "a bottle turns", "reference_images": [A], "reference_audio_urls": [VOICE],
      "keyframes": [{"image_url": B, "timestamp_seconds": 1.5}], "aspect_ratio": "16:9",
      "enhance_prompt": False}, ".mp4"),
    (["restyle", CLIP, "--prompt", "as a watercolour", "--set", "target_fps=24"],
     "/video-from-video",
     {"video_url": CLIP, "prompt": "as a watercolour", "target_fps": 24}, ".mp4"),
    (["lipsync", A, VOICE, "--box", "0,0,64,64", "--set", "sync_mode=loop"],
     "/lipsync",
     {"source_url": A, "audio_url": VOICE, "bounding_box_target": [0, 0, 64, 64],
      "sync_mode": "loop"}, ".mp4"),
    (["generate", "a cat", "--image", A, "--resolution", "720p"],
     "/video/from-image", {"image_url": A, "prompt": "a cat", "resolution": "720p"}, ".mp4"),
]  # fmt: skip
IDS = [" ".join(route[0][:2]) if route[0][0] == "image" else route[0][0] for route in ROUTES]


@pytest.fixture(autouse=True)
def _fast_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOLBO_SANDBOX_SPEED", "300")


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Simulator:
    """A simulator on a virtual clock behind every `kolbo` run of the test (one world)."""
    sim = Simulator(clock=VirtualClock())
    monkeypatch.setenv("KOLBO_API_KEY", KEY)
    monkeypatch.setattr(_cli, "_client", lambda args: sim.client(KEY, rate_limits=None))
    return sim


def posts(sim: Simulator) -> list[Any]:
    return [r for r in sim.requests if r.method == "POST" and "/cancel" not in r.path]


@pytest.mark.parametrize(("argv", "path", "sent", "ext"), ROUTES, ids=IDS)
def test_each_route_sends_its_fields_and_saves_its_file(
    sim: Simulator, tmp_path: Path, argv: list[str], path: str, sent: dict[str, Any], ext: str
) -> None:
    code, out, err = run(*argv, "--download", str(tmp_path))
    assert code == 0, err
    (post,) = posts(sim)
    assert post.path == "/api/v1/generate" + path
    assert post.json == sent
    (saved,) = out.split()
    assert saved == str(tmp_path / f"{next(iter(sim.generations))}{ext}")
    head = Path(saved).read_bytes()[:8]
    assert head == PNG if ext == ".png" else head[4:8] == b"ftyp"
    assert list(tmp_path.iterdir()) == [Path(saved)]  # no scratch file left behind


@pytest.mark.slow
@pytest.mark.parametrize("argv", [route[0] for route in ROUTES], ids=IDS)
def test_sandbox_shows_each_route_end_to_end(tmp_path: Path, argv: list[str]) -> None:
    """`kolbo --sandbox <command>`: no key, a live report on stderr, the file on disk."""
    code, out, err = run("--sandbox", *argv, "--download", str(tmp_path))
    assert code == 0, err
    assert err.startswith("Generation ") and "credits)" in err.splitlines()[0]
    assert any(line.startswith("completed") for line in err.splitlines())
    assert Path(out.strip()).is_file() and Path(out.strip()).parent == tmp_path


def test_several_images_are_all_saved_and_reported_in_json(sim: Simulator, tmp_path: Path) -> None:
    code, out, err = run(
        "image", "a fox", "--num-images", "3", "--download", str(tmp_path), "--json"
    )
    assert code == 0 and err == ""
    submitted, outcome = (json.loads(line) for line in out.splitlines())
    gid = submitted["generation_id"]
    assert outcome["generation_id"] == gid and outcome["state"] == "completed"
    paths = [tmp_path / f"{gid}-{i}.png" for i in range(3)]
    assert outcome["paths"] == [str(p) for p in paths] and outcome["path"] == str(paths[0])
    assert all(p.read_bytes()[:8] == PNG for p in paths)
    assert sorted(tmp_path.iterdir()) == sorted(paths)


def test_several_images_to_one_name_are_numbered_beside_it(sim: Simulator, tmp_path: Path) -> None:
    target = tmp_path / "fox.png"
    code, out, err = run("image", "a fox", "--num-images", "2", "--download", str(target))
    assert code == 0, err
    assert out.split() == [str(tmp_path / "fox-0.png"), str(tmp_path / "fox-1.png")]
    # Run again: those names are taken, which is a usage error before anything is paid for.
    code, _, err = run("image", "a fox", "--num-images", "2", "--download", str(target))
    assert code == 2 and "fox-0.png" in err and "--overwrite" in err
    assert len(posts(sim)) == 1
    code, _, err = run(
        "image", "a fox", "--num-images", "2", "--download", str(target), "--overwrite"
    )
    assert code == 0, err


def test_the_extension_is_what_the_cdn_sends(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The CDN answers a JPEG at a ``.png`` URL: saved in a directory as ``ID.jpg``."""
    sim = Simulator(clock=VirtualClock())
    inner = sim.transport()

    class JpegCdn(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.startswith("/images/"):
                return httpx.Response(200, headers={"content-type": "image/jpeg"}, content=JPEG)
            return await inner.handle_async_request(request)

    def client(args: object) -> Any:
        from kolbo_async import AsyncKolbo

        return AsyncKolbo(
            KEY, base_url=sim.base_url, _transport=JpegCdn(), _clock=sim.clock, rate_limits=None
        )

    monkeypatch.setenv("KOLBO_API_KEY", KEY)
    monkeypatch.setattr(_cli, "_client", client)
    code, out, err = run("image", "a fox", "--download", str(tmp_path))
    assert code == 0, err
    saved = Path(out.strip())
    assert saved.suffix == ".jpg" and saved.read_bytes() == JPEG


@pytest.mark.parametrize(
    ("head", "url", "image", "ext"),
    [
        (PNG, "https://cdn/x.jpg", True, ".png"),
        (JPEG[:16], "https://cdn/x.png", True, ".jpg"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", None, True, ".webp"),
        (b"GIF89a", None, True, ".gif"),
        (b"\x00\x00\x00\x18ftypmp42", "https://cdn/x.bin", False, ".mp4"),
        (b"\x00\x00\x00\x14ftypqt  ", None, False, ".mov"),
        (b"\x1a\x45\xdf\xa3\x9f", None, False, ".webm"),
        (b"????", "https://cdn/v/clip.MOV?sig=1", False, ".mov"),
        (b"????", "https://cdn/v/clip", False, ".mp4"),
        (b"????", "https://cdn/i/pic.toolongext", True, ".png"),
    ],
)
def test_extension_by_signature_then_url_then_kind(
    head: bytes, url: str | None, image: bool, ext: str
) -> None:
    assert extension(head, url, image=image) == ext


def test_download_command_saves_every_image(sim: Simulator, tmp_path: Path) -> None:
    code, out, _ = run("image", "a fox", "--num-images", "2", "--no-wait")
    assert code == 0
    gid = out.strip()
    code, out, err = run("download", gid, str(tmp_path))
    assert code == 0, err
    assert out.split() == [str(tmp_path / f"{gid}-{i}.png") for i in range(2)]
    code, out, err = run("download", gid, str(tmp_path / "one.webp"))
    assert code == 0, err  # a name the user gives is kept as given, numbered for several
    assert out.split() == [str(tmp_path / f"one-{i}.webp") for i in range(2)]


def test_an_image_already_saved_is_not_fetched_again(sim: Simulator, tmp_path: Path) -> None:
    code, out, _ = run("image", "a fox", "--no-wait")
    gid = out.strip()
    (tmp_path / f"{gid}.png").write_bytes(b"mine")
    code, _, err = run("download", gid, str(tmp_path))
    assert code == 2 and "--overwrite" in err
    assert (tmp_path / f"{gid}.png").read_bytes() == b"mine"
    assert not [r for r in sim.requests if r.host == "cdn"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{gid}.png"]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["frames", A, "missing-last.png"], "LAST"),
        (["frames", "", B], "FIRST"),
        (["elements", "x", "--image", A, "--image", ""], "--image[1]"),
        (["elements", "x", "--keyframe", f"{A}@-1"], "--keyframe[0]"),
        (["image", "x", "--edit", "  "], "--edit[0]"),
        (["lipsync", A, "nowhere.mp3"], "AUDIO"),
        (["restyle", CLIP, "--set", "prompt=x", "--prompt", "y"], "--set"),
        (["image", " "], "prompt"),
        (["frames", A, B, "--prompt", " "], "prompt"),
        (["frames", A, B, "--aspect-ratio", "wide"], "aspect_ratio"),
    ],
)
def test_bad_input_names_the_argument_and_sends_nothing(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], named: str
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(*argv)
    assert code == 2, err
    assert err.startswith(f"kolbo: error: {named}"), err
    assert out == "" and not posts(sim)


@pytest.mark.parametrize(
    "argv",
    [
        ["elements", "x", "--keyframe", "no-time"],
        ["lipsync", A, VOICE, "--box", "1,2,3"],
        ["image", "x", "--num-images", "0"],
        ["image", "x", "--set", "=1"],
        ["frames", A],
    ],
)
def test_malformed_options_are_usage_errors(sim: Simulator, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run(*argv)
    assert info.value.code == 2
    assert not sim.requests


def test_download_with_no_wait_is_refused_for_every_route(sim: Simulator) -> None:
    code, _, err = run("lipsync", A, VOICE, "--no-wait", "--download", ".")
    assert code == 2 and "--no-wait" in err
    assert not sim.requests


def test_a_cap_of_the_model_is_an_api_error_naming_it(sim: Simulator) -> None:
    code, _, err = run("image", "x", "--model", "nano-banana", "--num-images", "3")
    assert code == 3
    assert "TOO_MANY_IMAGES" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("kind", "header", "model"),
    [
        ("text_to_img", "CREDITS/IMAGE", "flux-2-pro"),
        ("image_editing", "CREDITS/IMAGE", "nano-banana"),
        ("firstlastgenerations", "CREDITS/S", "kling-o1-first-last-frame"),
        ("elements", "CREDITS/S", "kling-o3-elements"),
        ("video_to_video", "CREDITS/S", "runway-aleph"),
        ("lipsync-image", "CREDITS/S", "sync-lipsync-2"),
        ("lipsync-video", "CREDITS/S", "sync-lipsync-2"),
    ],
)
def test_models_of_each_route(kind: str, header: str, model: str) -> None:
    code, out, err = run("--sandbox", "models", "--type", kind)
    assert code == 0, err
    assert header in out.splitlines()[0]
    assert any(line.startswith(model + " ") for line in out.splitlines())


def test_models_of_every_type_price_each_row_in_its_unit() -> None:
    # A listing of several kinds (a catalog type Kolbo adds) puts the unit on each row.
    from kolbo_async._cli_commands import _models_table
    from kolbo_async._models import Model

    mixed = _models_table(
        [
            Model(identifier="v", types=("text_to_video",), credit=10),
            Model(identifier="i", types=("text_to_img",), credit=4),
        ]
    )
    assert "CREDITS " in mixed.splitlines()[0]
    assert "10/s" in mixed and "4/image" in mixed


def test_help_lists_every_route() -> None:
    with pytest.raises(SystemExit):
        run("--help")
    from kolbo_async._cli_parser import build_parser

    text = build_parser().format_help()
    for command in ("generate", "image", "frames", "elements", "restyle", "lipsync", "upload"):
        assert f"\n    {command} " in text


# --- Local files ---------------------------------------------------------------------------------

PNG_FILE = (
    PNG + b"\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
    b"\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding a picture, a clip and a voice, as a user's would."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "day.png").write_bytes(PNG_FILE)
    (tmp_path / "night.png").write_bytes(PNG_FILE)
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    (tmp_path / "voice.mp3").write_bytes(b"ID3" + b"\x00" * 64)
    (tmp_path / "out").mkdir()
    return tmp_path


#: (command line with local files, how Kolbo's client sends them: as parts or uploaded first)
LOCAL: list[tuple[list[str], str, str]] = [
    (["image", "paint it", "--edit", "day.png"], "/image-edit", "upload"),
    (["image", "a fox", "--reference", "night.png"], "/image", "upload"),
    (["frames", "day.png", "night.png"], "/first-last-frame", "multipart"),
    (["elements", "a scene", "--image", "day.png", "--audio", "voice.mp3"], "/elements",
     "multipart"),
    (["restyle", "clip.mp4", "--prompt", "watercolour"], "/video-from-video", "multipart"),
    (["lipsync", "day.png", "voice.mp3"], "/lipsync", "multipart"),
    (["generate", "slow zoom", "--image", "day.png"], "/video/from-image", "upload"),
]  # fmt: skip
LOCAL_IDS = [" ".join(route[0][:2]) if route[0][0] == "image" else route[0][0] for route in LOCAL]


@pytest.mark.parametrize(("argv", "path", "how"), LOCAL, ids=LOCAL_IDS)
def test_local_files_are_sent_as_kolbo_takes_them(
    sim: Simulator, files: Path, argv: list[str], path: str, how: str
) -> None:
    code, out, err = run(*argv, "--download", "out")
    assert code == 0, err
    (post,) = [p for p in posts(sim) if p.path.startswith("/api/v1/generate/")]
    assert post.path == "/api/v1/generate" + path
    uploads = [r for r in sim.requests if r.path == "/api/v1/media/upload"]
    if how == "multipart":
        assert post.headers["content-type"].startswith("multipart/form-data") and not uploads
    else:
        assert post.headers["content-type"] == "application/json" and len(uploads) == 1
        assert "https://cdn.kolbo.test/uploads/" in json.dumps(post.json)
    assert Path(out.strip()).parent == Path("out") and Path(out.strip()).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("argv", [route[0] for route in LOCAL], ids=LOCAL_IDS)
def test_sandbox_takes_local_files_for_each_route(files: Path, argv: list[str]) -> None:
    code, out, err = run("--sandbox", *argv, "--download", "out")
    assert code == 0, err
    assert Path(out.strip()).is_file()


def test_a_missing_local_file_names_it_and_sends_nothing(sim: Simulator, files: Path) -> None:
    code, _, err = run("elements", "a scene", "--image", "day.png", "--audio", "gone.mp3")
    assert code == 2
    assert err.startswith("kolbo: error: --audio[0]") and "gone.mp3" in err
    assert not sim.requests


class TestUpload:
    def test_prints_each_url_in_order(self, sim: Simulator, files: Path) -> None:
        code, out, err = run("upload", "day.png", "voice.mp3", "--description", "a day")
        assert code == 0, err
        urls = out.split()
        assert [Path(u).name for u in urls] == ["day.png", "voice.mp3"]
        uploads = [r for r in sim.requests if r.path == "/api/v1/media/upload"]
        assert len(uploads) == 2
        assert all(r.headers["content-type"].startswith("multipart/") for r in uploads)

    def test_json_lines_and_the_urls_feed_a_generation(self, sim: Simulator, files: Path) -> None:
        code, out, err = run("upload", "day.png", "night.png", "--json")
        assert code == 0 and err == ""
        records = [json.loads(text) for text in out.splitlines()]
        assert [r["file"] for r in records] == ["day.png", "night.png"]
        first, last = (r["url"] for r in records)
        # `kolbo frames $(kolbo upload day.png night.png)`
        code, _, err = run("frames", first, last, "--no-wait")
        assert code == 0, err
        assert posts(sim)[-1].json == {"first_frame_url": first, "last_frame_url": last}

    @pytest.mark.parametrize(
        ("argv", "named"),
        [
            (["upload", "gone.png"], "FILE: 'gone.png' does not exist"),
            (["upload", "day.png", "out"], "FILE 2: 'out' is a directory"),
            (["upload", "day.png", ""], "FILE 2: must not be empty"),
        ],
    )
    def test_every_file_is_checked_before_the_first_is_sent(
        self, sim: Simulator, files: Path, argv: list[str], named: str
    ) -> None:
        code, out, err = run(*argv)
        assert code == 2 and out == ""
        assert err.strip() == f"kolbo: error: {named}"
        assert not sim.requests

    def test_sandbox(self, files: Path) -> None:
        code, out, err = run("--sandbox", "upload", "clip.mp4")
        assert code == 0, err
        assert out.strip().startswith("https://") and out.strip().endswith("/clip.mp4")


def test_each_image_gets_its_own_download_bar(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The progress display is told where one file ends and the next begins."""
    from kolbo_async import _cli_progress

    events: list[str] = []

    class Recorder:
        def status(self, status: object) -> None:
            events.append("status")

        def bytes(self, done: int, total: int | None) -> None:
            if done == 0:
                events.append("start")

        def done(self) -> None:
            events.append("done")

    monkeypatch.setattr(_cli_progress, "reporter", lambda stream, quiet: Recorder())
    code, _, err = run("image", "a fox", "--num-images", "3", "--download", str(tmp_path))
    assert code == 0, err
    downloads = [e for e in events if e != "status"]
    # (the first "done" ends the generation's bar)
    assert downloads[1:6] == ["start", "done", "start", "done", "start"]
