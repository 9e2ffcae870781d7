"""An adversarial user of the shared rate budget (``RateLimits(store="sqlite:///..." |
"redis://...")``): real client processes against the simulator served over HTTP with Kolbo's
limits on (10 generations a minute), counted at the simulator; the API key looked for in
Redis (``KEYS``, values, ``MONITOR``), the SQLite file and the logs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from kolbo_async import AsyncKolbo, RateLimits
from kolbo_async.testing import Simulator

from . import forked
from .test_rate_store_servers import RedisServer
from .test_rate_store_servers import own_redis as own_redis  # noqa: PLC0414
from .test_rate_store_servers import redis_server as redis_server  # noqa: PLC0414

pytest.importorskip("uvicorn")
pytest.importorskip("redis")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ROOT = Path(__file__).resolve().parent.parent
_KEYS = iter(range(10**6))

#: A client that submits `count` generations at once and stops after `seconds`; prints how
#: many submissions returned and the errors raised.
CLIENT = textwrap.dedent(
    """
    import faulthandler, json, logging, sys
    import anyio
    faulthandler.dump_traceback_later(50, exit=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    from kolbo_async import AsyncKolbo, RateLimits

    args = json.loads(sys.argv[1])
    done, errors = [], []

    async def one(client, i):
        try:
            generation = await client.videos.generate(f"{args['tag']} {i}")
            done.append(generation.id)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    async def main():
        limits = RateLimits(10, 300, store=args["store"])
        async with AsyncKolbo(args["key"], base_url=args["url"], rate_limits=limits,
                              max_retries=0) as client:
            print("ready", flush=True)
            with anyio.move_on_after(args["seconds"]):
                async with anyio.create_task_group() as tg:
                    for i in range(args["count"]):
                        tg.start_soon(one, client, i)
        print(json.dumps({"done": done, "errors": errors}), flush=True)

    anyio.run(main, backend=args["backend"])
    """
)


def fresh_key() -> str:
    return "kolbo_live_" + "e5" * 14 + f"{os.getpid():08d}{next(_KEYS):04d}"


def start_client(
    url: str,
    store: str,
    key: str,
    *,
    tag: str,
    count: int,
    seconds: float,
    backend: str = "asyncio",
) -> subprocess.Popen[str]:
    args = {
        "url": url,
        "store": store,
        "key": key,
        "tag": tag,
        "count": count,
        "seconds": seconds,
        "backend": backend,
    }
    return forked.Popen(
        [sys.executable, "-c", CLIENT, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def results(procs: list[subprocess.Popen[str]]) -> list[tuple[dict[str, Any], str]]:
    """What each client printed last, and its stderr (pipes read directly: a client whose
    "ready" line was read already has its stdout's buffer in use)."""
    found = []
    for proc in procs:
        assert proc.stdout is not None and proc.stderr is not None
        with proc.stdout, proc.stderr:
            out, err = proc.stdout.read(), proc.stderr.read()
        assert proc.wait(timeout=60) == 0, err
        found.append((json.loads(out.splitlines()[-1]), err))
    return found


def posts(sim: Simulator) -> list[Any]:
    return [
        r
        for r in sim.requests
        if r.method == "POST" and r.path.startswith("/api/v1/generate/video")
    ]


@pytest.fixture(params=["sqlite", "redis"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rates.db'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_six_client_processes_send_ten_generations_a_minute_and_see_no_429(
    store: str, tmp_path: Path
) -> None:
    """Six real client processes (asyncio and trio) each try 5 generations at once on one
    key and one shared budget: Kolbo (limits on) sees exactly 10 POSTs in the minute's
    first seconds, never a 429; the others wait (nothing raised); the key is in no output."""
    key = fresh_key()
    sim = Simulator(speed=1.0, rate_limits=True, seed=3)
    with sim.serve() as url:
        procs = [
            start_client(
                url,
                store,
                key,
                tag=f"w{i}",
                count=5,
                seconds=8.0,
                backend="trio" if i % 2 else "asyncio",
            )
            for i in range(6)
        ]
        found = results(procs)
    sent = posts(sim)
    assert len(sent) == 10
    assert [r.status for r in sent] == [200] * 10
    assert not [r for r in sim.requests if r.status == 429]
    assert sum(len(f["done"]) for f, _ in found) == 10
    assert all(f["errors"] == [] for f, _ in found)
    for f, err in found:
        assert key[11:] not in err + json.dumps(f)
        assert "Traceback" not in err
    if store.startswith("sqlite"):
        for name in os.listdir(tmp_path):
            assert key[11:].encode() not in (tmp_path / name).read_bytes()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_the_key_never_reaches_redis_not_even_in_monitor(redis_server: RedisServer) -> None:
    """While two client processes work on one Redis budget, everything the server receives
    (``MONITOR``) and everything it holds afterwards (every key, every value) is free of the
    API key, and each key of ours names the budget by its hash tag."""
    import redis

    key = fresh_key()
    monitor = subprocess.Popen(
        ["redis-cli", "-u", redis_server.url, "monitor"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(0.3)
        sim = Simulator(speed=1.0, rate_limits=True, seed=4)
        with sim.serve() as url:
            results(
                [
                    start_client(url, redis_server.url, key, tag=f"m{i}", count=3, seconds=4.0)
                    for i in range(2)
                ]
            )
        time.sleep(0.3)
    finally:
        monitor.send_signal(signal.SIGINT)
        seen, _ = monitor.communicate(timeout=10)
    assert b"EVALSHA" in seen.upper() or b"EVAL" in seen.upper()  # it saw our calls
    assert key[11:].encode() not in seen
    assert key[11:25].encode() not in seen
    r = redis.Redis.from_url(redis_server.url)
    try:
        for name in r.scan_iter("*"):
            assert key[11:].encode() not in name
            kind = r.type(name)
            if kind == b"zset":
                values = [m for m, _ in r.zrange(name, 0, -1, withscores=True)]
            elif kind == b"hash":
                values = [*r.hgetall(name).keys(), *r.hgetall(name).values()]
            elif kind == b"string":
                values = [r.get(name) or b""]
            else:
                values = []
            assert not [v for v in values if key[11:].encode() in v]
    finally:
        r.close()


@pytest.mark.slow
@pytest.mark.anyio
async def test_an_unreachable_redis_with_a_password_warns_without_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Redis URL with a password, nothing listening: the client waits (no request goes
    out on a private budget), warns naming the store without its password or the key."""
    key = fresh_key()
    sim = Simulator(speed=1.0, rate_limits=True)
    store = "redis://:hunter2-secret@127.0.0.1:1/0"
    caplog.set_level(logging.WARNING, logger="kolbo_async")
    with sim.serve() as url:
        async with AsyncKolbo(key, base_url=url, rate_limits=RateLimits(store=store)) as client:
            with anyio.move_on_after(3) as scope:
                await client.videos.generate("never sent")
    assert scope.cancelled_caught
    assert not posts(sim)
    text = caplog.text
    assert "unreachable" in text and "127.0.0.1:1" in text
    assert "hunter2-secret" not in text and key[11:] not in text
    assert "hunter2-secret" not in repr(RateLimits(store=store))


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_redis_frozen_mid_minute_holds_every_process(own_redis: RedisServer) -> None:
    """Three processes use 6 of the minute's 10 generations; Redis is then frozen (SIGSTOP:
    it accepts connections and never answers) while three new processes each try 4: none
    goes ahead on a budget of its own; each warns that the store is unreachable, then that
    it is back; together they send the 4 left and Kolbo never answers 429."""
    key = fresh_key()
    sim = Simulator(speed=1.0, rate_limits=True, seed=6)
    with sim.serve() as url:
        results(
            [
                start_client(url, own_redis.url, key, tag=f"a{i}", count=2, seconds=3.0)
                for i in range(3)
            ]
        )
        assert len(posts(sim)) == 6
        own_redis.signal(signal.SIGSTOP)
        try:
            procs = [
                start_client(
                    url,
                    own_redis.url,
                    key,
                    tag=f"b{i}",
                    count=4,
                    seconds=10.0,
                    backend="trio" if i % 2 else "asyncio",
                )
                for i in range(3)
            ]
            # Each client made (the store is contacted only on the first admission), so each
            # asks the frozen store within the window, however slowly the machine started it.
            for proc in procs:
                assert proc.stdout is not None
                assert proc.stdout.readline().strip() == "ready"
            time.sleep(5.0)
            assert len(posts(sim)) == 6  # nothing went out while the store was away
        finally:
            own_redis.signal(signal.SIGCONT)
        found = results(procs)
    assert len(posts(sim)) == 10
    assert not [r for r in sim.requests if r.status == 429]
    assert all(f["errors"] == [] for f, _ in found)
    # Every one that found the store away said so, and said it was back.
    assert any("unreachable" in err for _, err in found)
    for _, err in found:
        assert ("unreachable" in err) == ("reachable again" in err), err
        assert "Traceback" not in err and key[11:] not in err
