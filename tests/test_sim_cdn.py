"""The simulated CDN: completed generations' files, keyless, with ranges and padding."""

from __future__ import annotations

from kolbo_async.testing import SimRequest, Simulator, VirtualClock
from kolbo_async.testing._cdn import chunks, parse_range

from . import sim_fixtures
from .conftest import sim_call, sim_submit

# This module's fixtures: a virtual clock at 0 (not conftest's StepClock) and a simulator on it.
clock = sim_fixtures.clock
sim = sim_fixtures.sim


class TestParseRange:
    def test_forms(self) -> None:
        """Plain, open, suffix and unsatisfiable ranges; unreadable ones mean the whole body."""
        assert parse_range("bytes=4-7", 100) == (4, 8, 206)
        assert parse_range("bytes=90-", 100) == (90, 100, 206)
        assert parse_range("bytes=-10", 100) == (90, 100, 206)
        assert parse_range("bytes=100-", 100) is None
        assert parse_range("bytes=0-1,5-6", 100) == (0, 100, 200)
        assert parse_range("items=0-1", 100) == (0, 100, 200)

    def test_padding_depends_on_position(self) -> None:
        """Bytes past the real content are padding that differs by offset, in any chunking."""
        whole = b"".join(chunks(b"abc", 0, 200_000))
        assert len(whole) == 200_000 and whole[:3] == b"abc"
        assert b"".join(chunks(b"abc", 70_000, 70_100, chunk=7)) == whole[70_000:70_100]


class TestServing:
    def test_ranges(self, sim: Simulator, clock: VirtualClock) -> None:
        """The CDN serves the video whole or by Range, with no key needed."""
        gen = sim_submit(sim)
        clock.advance(1000)
        sim_call(sim, "GET", gen["poll_url"])
        path = f"/videos/{gen['generation_id']}.mp4"
        whole = sim.handle(SimRequest("GET", path, host="cdn"))
        data = b"".join(sim.video_chunks(whole))
        assert whole.status == 200
        assert data[4:8] == b"ftyp"
        part = sim.handle(SimRequest("GET", path, headers={"range": "bytes=4-7"}, host="cdn"))
        assert part.status == 206
        assert b"".join(sim.video_chunks(part)) == b"ftyp"
        assert part.headers["content-range"] == f"bytes 4-7/{len(data)}"

    def _done(self, sim: Simulator) -> str:
        gen = sim_submit(sim)
        sim.complete(gen["generation_id"])
        return str(gen["generation_id"])

    def test_suffix_range_head_and_416(self, sim: Simulator) -> None:
        """Suffix ranges, HEAD and unsatisfiable ranges follow RFC 9110."""
        path = f"/videos/{self._done(sim)}.mp4"
        size = int(sim.handle(SimRequest("HEAD", path, host="cdn")).headers["content-length"])
        head = sim.handle(SimRequest("HEAD", path, host="cdn"))
        assert (head.status, head.chunks, head.headers["accept-ranges"]) == (200, None, "bytes")
        tail = sim.handle(SimRequest("GET", path, headers={"range": "bytes=-10"}, host="cdn"))
        assert tail.headers["content-range"] == f"bytes {size - 10}-{size - 1}/{size}"
        assert len(b"".join(sim.video_chunks(tail))) == 10
        bad = sim.handle(SimRequest("GET", path, headers={"range": f"bytes={size}-"}, host="cdn"))
        assert bad.status == 416

    def test_large_video_size_is_padded(self, clock: VirtualClock) -> None:
        """video_size serves a large file, produced in chunks."""
        sim = Simulator(clock=clock, video_size=1_000_000)
        path = f"/videos/{self._done(sim)}.mp4"
        answer = sim.handle(SimRequest("GET", path, host="cdn"))
        data = b"".join(sim.video_chunks(answer))
        assert len(data) == int(answer.headers["content-length"]) == 1_000_000
        part = sim.handle(SimRequest("GET", path, headers={"range": "bytes=500000-500099"},
                                     host="cdn"))
        assert b"".join(sim.video_chunks(part)) == data[500_000:500_100]

    def test_not_ready_filtered_and_thumbs(self, sim: Simulator) -> None:
        """Only completed videos exist; filtered ones have no video; thumbnails are JPEG."""
        running = sim_submit(sim)["generation_id"]
        assert sim.handle(SimRequest("GET", f"/videos/{running}.mp4", host="cdn")).status == 404
        gen_id = self._done(sim)
        thumb = sim.handle(SimRequest("GET", f"/thumbs/{gen_id}.jpg", host="cdn"))
        assert (thumb.status, thumb.headers["content-type"]) == (200, "image/jpeg")
        sim.plan("filtered")
        filtered = sim_submit(sim)["generation_id"]
        sim.complete(filtered, filtered=True)
        assert sim.handle(SimRequest("GET", f"/videos/{filtered}.mp4", host="cdn")).status == 404
