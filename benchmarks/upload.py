"""Uploading a large local file: `client.media.upload` against raw httpx streaming it.

    python benchmarks/upload.py               # 200 MB, 3 rounds each (about a minute)
    python benchmarks/upload.py --mb 20 --rounds 2   # quick

A loopback sink (its own process: a few lines of asyncio that read the whole body and answer
Kolbo's upload JSON) receives both. Each side runs in its own process, so its peak RSS is its
own: raw httpx POSTs the file as a streamed body (1 MiB reads from disk, Content-Length set);
the SDK sends it as Kolbo takes it, one ``file`` part of ``multipart/form-data`` streamed
from disk, through its whole send path (pacing, the paid-POST shield, the answer read). The
same file is sent by both, in alternating rounds after a warm-up; the best round counts.

Exits 1 when the SDK takes more than 1.1x raw httpx's time, or when its peak RSS grows by
more than 64 MiB over raw httpx's (memory must stay flat: the file is never held whole).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEY = "kolbo_live_" + "0" * 40
ANSWER = b'{"success": true, "media": {"url": "https://cdn.kolbo.ai/u/1.bin", "id": "1"}}'
MiB = 1024 * 1024


# --- the sink ------------------------------------------------------------------------------


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while length:
                length -= len(await reader.read(min(length, 4 * MiB)))
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def _sink(port_file: str) -> None:
    server = await asyncio.start_server(_serve_one, "127.0.0.1", 0, limit=4 * MiB)
    Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))  # noqa: ASYNC240
    async with server:
        await server.serve_forever()


# --- the two clients ---------------------------------------------------------------------


async def _raw(url: str, path: str) -> None:
    import httpx

    async def chunks() -> object:
        with open(path, "rb") as file:  # noqa: ASYNC230 (the baseline reads as httpx users do)
            while data := file.read(MiB):
                yield data

    size = os.path.getsize(path)  # noqa: ASYNC240
    async with httpx.AsyncClient(timeout=120) as http:
        answer = await http.post(
            url + "/api/v1/media/upload",
            content=chunks(),  # type: ignore[arg-type]
            headers={"X-API-Key": KEY, "Content-Length": str(size),
                     "Content-Type": "application/octet-stream"},
        )  # fmt: skip
        answer.raise_for_status()


async def _sdk(url: str, path: str) -> None:
    from kolbo_async import AsyncKolbo

    async with AsyncKolbo(KEY, base_url=url, timeout=120) as client:
        media = await client.media.upload(path)
        assert media.url


def _client(side: str, url: str, path: str, rounds: int) -> None:
    # Imported before the clock starts: the upload is measured, not the import.
    import httpx  # noqa: F401

    import kolbo_async  # noqa: F401

    run = _raw if side == "raw" else _sdk
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        asyncio.run(run(url, path))
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"times": times, "peak_rss_mib": peak}))


# --- the driver ----------------------------------------------------------------------------


def _measure(side: str, url: str, path: str, rounds: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", side, "--url", url, "--file", path,
         "--rounds", str(rounds)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, object] = json.loads(out.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="file size in MB (default 200)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sink", metavar="PORT_FILE", help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=["raw", "sdk"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink:
        asyncio.run(_sink(args.sink))
        return 0
    if args.client:
        _client(args.client, args.url, args.file, args.rounds)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "upload.mp4")
        with open(path, "wb") as file:  # real bytes, not a sparse file
            block = os.urandom(MiB)
            for _ in range(args.mb * 1_000_000 // MiB):
                file.write(block)
        port_file = os.path.join(folder, "port")
        sink = subprocess.Popen([sys.executable, __file__, "--sink", port_file])
        try:
            while not os.path.exists(port_file) or not Path(port_file).read_text():
                time.sleep(0.05)
            url = f"http://127.0.0.1:{Path(port_file).read_text()}"
            _measure("raw", url, path, 1)  # warm-up: the page cache holds the file
            results: dict[str, list[float]] = {"raw": [], "sdk": []}
            peaks: dict[str, float] = {"raw": 0.0, "sdk": 0.0}
            for _ in range(args.rounds):  # alternating, one process per round and side
                for side in ("raw", "sdk"):
                    measured = _measure(side, url, path, 1)
                    results[side] += measured["times"]  # type: ignore[arg-type]
                    peaks[side] = max(peaks[side], float(measured["peak_rss_mib"]))  # type: ignore[arg-type]
        finally:
            sink.terminate()
            sink.wait()
    size_mb = args.mb
    raw, sdk = min(results["raw"]), min(results["sdk"])
    ratio = sdk / raw
    print(f"upload of {size_mb} MB over loopback, best of {args.rounds} rounds each")
    print(f"  raw httpx streaming   {raw:7.3f} s  {size_mb / raw:8.1f} MB/s  "
          f"peak RSS {peaks['raw']:6.1f} MiB")  # fmt: skip
    print(f"  client.media.upload   {sdk:7.3f} s  {size_mb / sdk:8.1f} MB/s  "
          f"peak RSS {peaks['sdk']:6.1f} MiB")  # fmt: skip
    print(f"  ratio {ratio:.3f}x (limit 1.10x); RSS {peaks['sdk'] - peaks['raw']:+.1f} MiB")
    ok = ratio <= 1.10 and peaks["sdk"] - peaks["raw"] <= 64
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
