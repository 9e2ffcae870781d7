"""The benchmark scenarios; each returns rows for the scoreboard."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import scale
from _harness import Row, compare_async, spread

from kolbo_async import AsyncKolbo, RateLimits

KEY = "kolbo_live_" + "0" * 40
API = "https://api.kolbo.ai"
STATUS_BODY = json.dumps(
    {"success": True, "generation_id": "gen1", "type": "video", "state": "processing",
     "progress": 40}
).encode()
SUBMIT_BODY = json.dumps(
    {"success": True, "generation_id": "gen1", "type": "video", "model": "auto",
     "credits_charged": 35, "poll_url": "/api/v1/generate/gen1/status", "poll_interval_hint": 8}
).encode()
JSON = {"content-type": "application/json"}


def _mock_transport() -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        body = SUBMIT_BODY if request.method == "POST" else STATUS_BODY
        return httpx.Response(200, content=body, headers=JSON)

    return httpx.MockTransport(handler)


def _sizes(smoke: bool) -> dict[str, int]:
    return {"calls": 200, "rounds": 3, "warmup": 50} if smoke else {
        "calls": 2000, "rounds": 9, "warmup": 500
    }


def status_poll_inprocess(smoke: bool) -> list[Row]:
    """handle.status() vs raw httpx GET + raise_for_status + json + fields, in-process."""
    rows = []
    for paced in (False, True):
        async def run(paced: bool = paced) -> tuple[float, float, bool]:
            transport = _mock_transport()
            # Pacing on, with limits lifted so the row measures the bookkeeping, not waiting.
            limits = RateLimits(10**9, 10**9) if paced else None
            async with AsyncKolbo(KEY, _transport=transport, rate_limits=limits) as client, \
                    httpx.AsyncClient(transport=transport) as raw:
                gen = client.generations.attach("gen1")

                async def mine() -> object:
                    return await gen.status()

                async def baseline() -> object:
                    response = await raw.get(
                        f"{API}/api/v1/generate/gen1/status", headers={"X-API-Key": KEY}
                    )
                    response.raise_for_status()
                    data = response.json()
                    return data["state"], data["progress"], data.get("result")

                return await compare_async(mine, baseline, **_sizes(smoke))

        ours, base, noisy = anyio.run(run)
        rows.append(Row(
            f"status poll, in-process, pacing {'on' if paced else 'off'}",
            ours, base, "s", goal=1.10, noisy=noisy,
        ))
    return rows


def submit_inprocess(smoke: bool) -> list[Row]:
    """videos.generate() vs raw httpx POST + json + fields, in-process, pacing off."""

    async def run() -> tuple[float, float, bool]:
        transport = _mock_transport()
        async with AsyncKolbo(KEY, _transport=transport, rate_limits=None) as client, \
                httpx.AsyncClient(transport=transport) as raw:
            async def ours() -> object:
                return await client.videos.generate("A drone over snowy peaks", duration=5)

            async def baseline() -> object:
                response = await raw.post(
                    f"{API}/api/v1/generate/video",
                    json={"prompt": "A drone over snowy peaks", "duration": 5},
                    headers={"X-API-Key": KEY},
                )
                response.raise_for_status()
                data = response.json()
                return data["generation_id"], data["poll_interval_hint"]

            return await compare_async(ours, baseline, **_sizes(smoke))

    ours, base, noisy = anyio.run(run)
    return [Row("submit, in-process, pacing off", ours, base, "s", goal=1.10, noisy=noisy)]


def import_time(smoke: bool) -> list[Row]:
    """What importing kolbo-async adds to importing its run-time dependencies, fresh processes.

    Both sides import httpx, anyio, attrs and cattrs, so the ratio is kolbo-async's own cost
    (`import kolbo_async` alone loads cattrs only with the first answer: timing it alone
    would flatter us). The blocking client is imported on first use, so it has a row of its
    own. The package is byte-compiled first, as pip does when it installs a wheel, so both
    sides load bytecode. Rounds alternate, so load on the machine hits both alike.
    """
    import compileall
    from pathlib import Path

    import kolbo_async

    compileall.compile_dir(str(Path(kolbo_async.__file__).parent), quiet=1)
    rounds = 3 if smoke else 15
    deps = "import httpx, anyio, attrs, cattrs"
    statements = {
        "ours": f"{deps}; import kolbo_async; kolbo_async.AsyncKolbo",
        "blocking": f"{deps}; from kolbo_async import Kolbo",
        "deps": deps,
    }
    times: dict[str, list[float]] = {name: [] for name in statements}
    for _ in range(rounds):
        for name, statement in statements.items():
            code = (
                "import time; t = time.perf_counter(); "
                f"{statement}; print(time.perf_counter() - t)"
            )
            times[name].append(float(subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout))
    noisy = any(spread(values) > 0.25 for values in times.values())
    base = statistics.median(times["deps"])
    return [
        Row(
            "import kolbo_async", statistics.median(times["ours"]), base, "s",
            baseline_name="httpx+anyio+attrs+cattrs", goal=1.10, noisy=noisy,
        ),
        Row(
            "from kolbo_async import Kolbo", statistics.median(times["blocking"]), base, "s",
            baseline_name="httpx+anyio+attrs+cattrs", goal=1.10, noisy=noisy,
        ),
    ]


def loopback(smoke: bool) -> list[Row]:
    """status() and generate() vs raw httpx over real HTTP to the simulator's server."""
    from kolbo_async.testing import Simulator

    sim = Simulator(rate_limits=False, credits=10**12)
    gen_id = sim.create_generation(key=KEY)
    sizes = _sizes(smoke)
    sizes["calls"] = max(50, sizes["calls"] // 10)
    rows = []
    with sim.serve() as base_url:

        async def run() -> list[tuple[str, float, float, bool]]:
            out = []
            async with AsyncKolbo(KEY, base_url=base_url, rate_limits=None) as client, \
                    httpx.AsyncClient() as raw:
                gen = client.generations.attach(gen_id)

                async def mine() -> object:
                    return await gen.status()

                async def baseline() -> object:
                    response = await raw.get(
                        f"{base_url}/api/v1/generate/{gen_id}/status", headers={"X-API-Key": KEY}
                    )
                    response.raise_for_status()
                    data = response.json()
                    return data["state"], data["progress"], data.get("result")

                out.append(("status poll, loopback, pacing off",
                            *await compare_async(mine, baseline, **sizes)))

                async def submit() -> object:
                    return await client.videos.generate("A drone over snowy peaks", duration=5)

                async def raw_submit() -> object:
                    response = await raw.post(
                        f"{base_url}/api/v1/generate/video",
                        json={"prompt": "A drone over snowy peaks", "duration": 5},
                        headers={"X-API-Key": KEY},
                    )
                    response.raise_for_status()
                    data = response.json()
                    return data["generation_id"], data["poll_interval_hint"]

                out.append(("submit, loopback, pacing off",
                            *await compare_async(submit, raw_submit, **sizes)))
            return out

        for name, ours, base, noisy in anyio.run(run):
            rows.append(Row(name, ours, base, "s", goal=1.10, noisy=noisy))
    return rows


def whole_generation(smoke: bool) -> list[Row]:
    """One generation through progress() vs the docs' own requests + sleep(hint) loop.

    Reports the delay between the simulator finishing and the caller knowing, and how many
    status requests each made.
    """
    import time

    import requests

    from kolbo_async.testing import Simulator

    speed = 40.0 if smoke else 10.0
    sim = Simulator(speed=speed, rate_limits=False)
    finish = (sim._state.pending_seconds + sim._state.processing_seconds) / speed

    with sim.serve() as base_url:

        async def ours() -> tuple[float, str]:
            async with AsyncKolbo(KEY, base_url=base_url, rate_limits=None) as client:
                gen = await client.videos.generate("A drone over snowy peaks", duration=5)
                start = time.monotonic()
                await gen.wait()
                return time.monotonic() - start, gen.id

        mine_elapsed, mine_id = anyio.run(ours)

        def docs_loop() -> tuple[float, str]:
            headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
            data = requests.post(
                f"{base_url}/api/v1/generate/video", headers=headers,
                json={"prompt": "A drone over snowy peaks", "duration": 5}, timeout=30,
            ).json()
            start = time.monotonic()
            interval = data.get("poll_interval_hint", 8)
            while True:
                time.sleep(interval)
                status = requests.get(
                    f"{base_url}/api/v1/generate/{data['generation_id']}/status",
                    headers={"X-API-Key": KEY}, timeout=30,
                ).json()
                if status["state"] in ("completed", "failed"):
                    return time.monotonic() - start, data["generation_id"]

        docs_elapsed, docs_id = docs_loop()
        polls = {
            gid: sum(1 for r in sim.requests if r.path == f"/api/v1/generate/{gid}/status")
            for gid in (mine_id, docs_id)
        }
    hint = 8 / speed
    return [
        Row("whole generation: completion noticed after", max(0.0, mine_elapsed - finish),
            max(0.0, docs_elapsed - finish), "s", baseline_name="docs' requests loop",
            note=f"generation {finish:.2f} s, hint {hint:.2f} s"),
        Row("whole generation: status requests", float(polls[mine_id]), float(polls[docs_id]),
            "req", baseline_name="docs' requests loop"),
    ]


def sync_overhead(smoke: bool) -> list[Row]:
    """Kolbo's gen.status() vs AsyncKolbo's in its own loop, against the simulator in-process."""
    from _harness import compare_sync

    from kolbo_async import Kolbo
    from kolbo_async.testing import Simulator

    sizes = _sizes(smoke)
    sim = Simulator(speed=1e-6)  # a clock that barely moves: the generation stays put
    gen_id = sim.create_generation(key=KEY)
    transport = sim.transport()

    async def async_calls(n: int) -> float:
        import time

        async with AsyncKolbo(KEY, _transport=transport, rate_limits=None) as client:
            gen = client.generations.attach(gen_id)
            for _ in range(sizes["warmup"]):
                await gen.status()
            start = time.perf_counter()
            for _ in range(n):
                await gen.status()
            return (time.perf_counter() - start) / n

    with Kolbo(KEY, _transport=transport, rate_limits=None) as client:
        gen = client.generations.attach(gen_id)
        ours, _, noisy = compare_sync(gen.status, lambda: None, **sizes)
    baseline = sorted(anyio.run(async_calls, sizes["calls"]) for _ in range(sizes["rounds"]))
    base = baseline[len(baseline) // 2]
    rows = [Row("sync wrapper: gen.status() per call", ours, base, "s",
                baseline_name="AsyncKolbo in its loop", goal=1.30, noisy=noisy,
                note="simulator in-process")]

    loop_sim = Simulator(rate_limits=False)
    loop_id = loop_sim.create_generation(key=KEY)
    with loop_sim.serve() as base_url:

        async def over_loopback(n: int) -> float:
            import time

            async with AsyncKolbo(KEY, base_url=base_url, rate_limits=None) as client:
                gen = client.generations.attach(loop_id)
                for _ in range(20):
                    await gen.status()
                start = time.perf_counter()
                for _ in range(n):
                    await gen.status()
                return (time.perf_counter() - start) / n

        calls = max(50, sizes["calls"] // 10)
        with Kolbo(KEY, base_url=base_url, rate_limits=None) as client:
            gen = client.generations.attach(loop_id)
            sync_time, _, noisy = compare_sync(
                gen.status, lambda: None, calls=calls, rounds=sizes["rounds"], warmup=20
            )
        async_times = sorted(anyio.run(over_loopback, calls) for _ in range(sizes["rounds"]))
        rows.append(Row("sync wrapper: gen.status() per call", sync_time,
                        async_times[len(async_times) // 2], "s",
                        baseline_name="AsyncKolbo in its loop", goal=1.30, noisy=noisy,
                        note="simulator over loopback"))
    return rows


TASK = {"id": "17f20503-6c24-4c16-946b-35dbbce2af2f", "status": "RUNNING",
        "createdAt": "2024-06-27T19:49:32.334Z", "progress": 0.4}
MODEL = {"id": "gpt-4o", "object": "model", "created": 1, "owned_by": "openai"}


def _peer_transport() -> httpx.MockTransport:
    """What openai's and runwayml's retrieve calls expect, and Kolbo's status elsewhere."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v1/models/"):
            return httpx.Response(200, json=MODEL)
        if request.url.path.startswith("/v1/tasks/"):
            return httpx.Response(200, json=TASK)
        return httpx.Response(200, content=STATUS_BODY, headers=JSON)

    return httpx.MockTransport(handler)


def peers(smoke: bool) -> list[Row]:
    """The same shape of call (one GET + parse) through peer SDKs, where installed.

    ``pip install -e '.[bench]'`` brings openai (1.x, on httpx) and runwayml. Each is given an
    httpx.AsyncClient on the same in-process transport as raw httpx.
    """
    try:
        from openai import AsyncOpenAI
        from runwayml import AsyncRunwayML
    except ImportError:
        return [Row("peers (openai, runwayml)", None, None, "s",
                    note="not installed: pip install -e '.[bench]'")]

    async def run() -> list[Row]:
        transport = _peer_transport()
        rows = []
        async with httpx.AsyncClient(transport=transport) as raw, \
                httpx.AsyncClient(transport=transport) as h1, \
                httpx.AsyncClient(transport=transport) as h2:
            openai = AsyncOpenAI(api_key="sk-x", base_url="https://peer.example/v1", http_client=h1)
            runway = AsyncRunwayML(api_key="key", base_url="https://peer.example", http_client=h2)

            def raw_get(path: str) -> Callable[[], Any]:
                async def get() -> object:
                    response = await raw.get(f"https://peer.example{path}",
                                             headers={"Authorization": "Bearer x"})
                    response.raise_for_status()
                    return response.json()["id"]
                return get

            for name, call, path in (
                ("openai models.retrieve (1.x)", lambda: openai.models.retrieve("gpt-4o"),
                 "/v1/models/gpt-4o"),
                ("runwayml tasks.retrieve", lambda: runway.tasks.retrieve(TASK["id"]),
                 f"/v1/tasks/{TASK['id']}"),
            ):
                ours, base, noisy = await compare_async(call, raw_get(path), **_sizes(smoke))
                rows.append(Row(f"peer: {name}", ours, base, "s", noisy=noisy,
                                note="for reference; same GET shape, in-process"))
        return rows

    return anyio.run(run)


def _raw_sync_status(raw: httpx.Client, base_url: str, gen_id: str) -> Callable[[], object]:
    """A status poll the way a script without the SDK writes it, on `raw`."""

    def status() -> object:
        response = raw.get(
            f"{base_url}/api/v1/generate/{gen_id}/status", headers={"X-API-Key": KEY}
        )
        response.raise_for_status()
        data = response.json()
        return data["state"], data["progress"], data.get("result")

    return status


def _sync_peers(transport: httpx.MockTransport) -> dict[str, Callable[[], object]]:
    """openai's and runwayml's blocking clients, one retrieve call each, when installed."""
    try:
        from openai import OpenAI
        from runwayml import RunwayML
    except ImportError:
        return {}
    openai = OpenAI(api_key="sk-x", base_url="https://peer.example/v1",
                    http_client=httpx.Client(transport=transport))
    runway = RunwayML(api_key="key", base_url="https://peer.example",
                      http_client=httpx.Client(transport=transport))
    return {
        "openai": lambda: openai.models.retrieve("gpt-4o"),
        "runwayml": lambda: runway.tasks.retrieve(TASK["id"]),
    }


def blocking(smoke: bool) -> list[Row]:
    """The blocking `Kolbo` vs raw `httpx.Client` and the peers' sync clients: one status poll.

    In-process (the network removed by `httpx.MockTransport`, the same JSON) all four take
    turns in one loop of rounds; over loopback, Kolbo and raw httpx against the simulator.
    """
    from _harness import compare_sync, compare_sync_many

    from kolbo_async import Kolbo
    from kolbo_async.testing import Simulator

    transport = _peer_transport()
    rows = []
    with Kolbo(KEY, _transport=transport, rate_limits=None) as client, \
            httpx.Client(transport=transport) as raw:
        fns = {
            "raw": _raw_sync_status(raw, API, "gen1"),
            "kolbo": client.generations.attach("gen1").status,
            **_sync_peers(transport),
        }
        times, noisy = compare_sync_many(fns, **_sizes(smoke))
    name = "raw httpx.Client"
    rows.append(Row("blocking status poll, in-process", times["kolbo"], times["raw"], "s",
                    baseline_name=name, goal=1.30, noisy=noisy))
    for peer, what in (("openai", "models.retrieve"), ("runwayml", "tasks.retrieve")):
        if peer not in times:
            rows.append(Row(f"peer (sync): {peer}", None, None, "s",
                            note="not installed: pip install -e '.[bench]'"))
            continue
        rows.append(Row(f"peer (sync): {peer} {what}", times[peer], times["raw"], "s",
                        baseline_name=name, noisy=noisy, note="for reference; same GET shape"))
        rows.append(Row(f"blocking status poll vs {peer} (sync)", times["kolbo"], times[peer],
                        "s", baseline_name=f"{peer} sync client", goal=1.0, noisy=noisy))

    sim = Simulator(rate_limits=False, credits=10**12)
    gen_id = sim.create_generation(key=KEY)
    sizes = _sizes(smoke)
    sizes["calls"] = max(50, sizes["calls"] // 10)
    with sim.serve() as base_url, \
            Kolbo(KEY, base_url=base_url, rate_limits=None) as client, \
            httpx.Client() as raw:
        ours, base, noisy = compare_sync(client.generations.attach(gen_id).status,
                                         _raw_sync_status(raw, base_url, gen_id), **sizes)
    rows.append(Row("blocking status poll, loopback", ours, base, "s", baseline_name=name,
                    goal=1.10, noisy=noisy))
    return rows


def _threads_seconds(work: Callable[[int], None], threads: int) -> float:
    """Wall seconds for `threads` threads to run ``work(i)``, from one common start."""
    import threading
    import time

    start = threading.Barrier(threads + 1)

    def run(i: int) -> None:
        start.wait()
        work(i)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in pool:
        thread.join()
    return time.perf_counter() - began


def threads_sharing(smoke: bool) -> list[Row]:
    """16 threads polling through one shared `Kolbo` vs 16 threads, each its own raw
    `httpx.Client`, in-process; alternating rounds. Reported as time per call (the
    inverse of throughput), so the goal is the ratio of throughputs: >= 0.9x."""
    from kolbo_async import Kolbo

    threads = 16
    per_thread = 30 if smoke else 200
    rounds = 3 if smoke else 9
    transport = _mock_transport()
    raws = [httpx.Client(transport=transport) for _ in range(threads)]
    polls = [_raw_sync_status(raw, API, "gen1") for raw in raws]
    shared: list[float] = []
    own: list[float] = []
    with Kolbo(KEY, _transport=transport, rate_limits=None) as client:
        status = client.generations.attach("gen1").status

        def ours(_: int) -> None:
            for _ in range(per_thread):
                status()

        def baseline(i: int) -> None:
            for _ in range(per_thread):
                polls[i]()

        _threads_seconds(ours, threads)  # warm-up
        _threads_seconds(baseline, threads)
        for _ in range(rounds):
            shared.append(_threads_seconds(ours, threads) / (threads * per_thread))
            own.append(_threads_seconds(baseline, threads) / (threads * per_thread))
    for raw in raws:
        raw.close()
    ours_s, base_s = statistics.median(shared), statistics.median(own)
    return [Row(
        "16 threads polling: one shared Kolbo", ours_s, base_s, "s",
        baseline_name="16 raw httpx.Clients", goal=1 / 0.9,
        noisy=spread(shared) > 0.25 or spread(own) > 0.25,
        note=f"{1 / ours_s:,.0f} vs {1 / base_s:,.0f} calls/s",
    )]


_DOWNLOAD_SERVER = """
import sys
from kolbo_async.testing import Simulator
sim = Simulator(speed=1000.0, pending_seconds=0.0, processing_seconds=1.0,
                video_size=int(sys.argv[1]), rate_limits=False)
gen_id = sim.create_generation(key=sys.argv[2])
with sim.serve() as base_url:
    print(base_url, gen_id, flush=True)
    sys.stdin.read()
"""


def download(smoke: bool) -> list[Row]:
    """gen.download() vs raw httpx streaming the same file to disk, over loopback.

    Throughput is reported as time per file (lower is better, so the ratio is ours/raw) and
    the peak of Python allocations during our download shows that memory stays flat.
    """
    import tempfile
    import time
    import tracemalloc
    from pathlib import Path

    size = (20 if smoke else 200) * 1024 * 1024
    rounds = 2 if smoke else 5
    # The server runs in its own process, as a CDN would: its work must not be billed to the
    # client through the GIL.
    server = subprocess.Popen(
        [sys.executable, "-c", _DOWNLOAD_SERVER, str(size), KEY],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert server.stdout is not None
    assert server.stdin is not None
    base_url, gen_id = server.stdout.readline().split()
    time.sleep(1.1)  # the simulated generation completes after one simulated second
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        async def run() -> tuple[list[float], list[float], int]:
            ours_times: list[float] = []
            raw_times: list[float] = []
            peak = 0
            async with AsyncKolbo(KEY, base_url=base_url, rate_limits=None) as client, \
                    httpx.AsyncClient() as raw:
                gen = client.generations.attach(gen_id)
                url = (await gen.result()).url
                assert url is not None
                # Memory first, in a round of its own: tracemalloc slows every allocation.
                tracemalloc.start()
                await gen.download(folder / "memory.mp4")
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                (folder / "memory.mp4").unlink()
                for i in range(rounds):
                    start = time.perf_counter()
                    await gen.download(folder / f"ours{i}.mp4")
                    ours_times.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    with open(folder / f"raw{i}.mp4", "wb") as out:  # noqa: ASYNC230
                        async with raw.stream("GET", url) as response:
                            response.raise_for_status()
                            async for chunk in response.aiter_bytes():
                                out.write(chunk)
                    raw_times.append(time.perf_counter() - start)
                    (folder / f"ours{i}.mp4").unlink()
                    (folder / f"raw{i}.mp4").unlink()
            return ours_times, raw_times, peak

        try:
            ours_times, raw_times, peak = anyio.run(run)
        finally:
            server.stdin.close()
            server.wait(timeout=30)
    ours = statistics.median(ours_times)
    base = statistics.median(raw_times)
    mb = size / 1024 / 1024
    return [Row(
        f"download {mb:.0f} MB over loopback", ours, base, "s",
        goal=1 / 0.9, noisy=spread(ours_times) > 0.25 or spread(raw_times) > 0.25,
        note=f"{mb / ours:.0f} vs {mb / base:.0f} MB/s; peak Python memory "
        f"{peak / 1024 / 1024:.1f} MB (tracemalloc)",
    )]


SCENARIOS: list[tuple[str, Callable[[bool], list[Row]]]] = [
    ("status", status_poll_inprocess),
    ("submit", submit_inprocess),
    ("loopback", loopback),
    ("generation", whole_generation),
    ("download", download),
    ("sync", sync_overhead),
    ("blocking", blocking),
    ("threads", threads_sharing),
    ("peers", peers),
    ("import", import_time),
    ("pacing", scale.pacing),
    ("watching", scale.watching),
]
