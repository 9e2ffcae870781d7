"""What `import kolbo_async` leaves for first use, and that first use then finds everything
as it always was: signatures, ``help()``, names in reprs, pickles, type hints.

Each check runs in a fresh interpreter: in this one, other tests have loaded every module.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: Modules that build attrs classes (or load cattrs, or the blocking client) that a program
#: may never need; none is loaded by `import kolbo_async` nor by making a client.
DEFERRED = (
    "cattrs",
    "kolbo_async._models",
    "kolbo_async._convert",
    "kolbo_async._requests",
    "kolbo_async._routes_image",
    "kolbo_async._routes_video",
    "kolbo_async._local_files",
    "kolbo_async._download",
    "kolbo_async._sync",
    "kolbo_async._sync_handles",
    "kolbo_async._portal",
)


def run(code: str) -> str:
    """`code` in a fresh interpreter (no key in the environment); its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_and_a_client_load_none_of_the_deferred_modules() -> None:
    """Importing the package, reading `AsyncKolbo` and making a client build no route class,
    no model, and load neither cattrs nor the blocking client."""
    out = run(f"""
        import sys
        import kolbo_async
        client = kolbo_async.AsyncKolbo("kolbo_live_x")
        print([m for m in {DEFERRED!r} if m in sys.modules])
    """)
    assert out.strip() == "[]"


def test_signatures_and_help_before_any_call() -> None:
    """`inspect.signature` and `help()` show each route's parameters before the route was
    ever used, on the async, blocking and raw-response calls alike."""
    out = run("""
        import inspect, io, pydoc
        import kolbo_async as k
        client = k.AsyncKolbo("kolbo_live_x")
        print(inspect.signature(client.videos.from_frames))
        print(inspect.signature(k.Kolbo.__init__))
        with k.Kolbo("kolbo_live_x") as blocking:
            print(inspect.signature(blocking.images.edit))
            print(inspect.signature(blocking.with_raw_response.videos.generate))
            print(inspect.signature(blocking.media.upload))
        print(pydoc.render_doc(client.videos.lipsync, renderer=pydoc.plaintext))
    """)
    lines = out.splitlines()
    assert lines[0].startswith("(first_frame: 'Medium', last_frame: 'Medium', *, prompt")
    assert lines[0].endswith("-> 'AsyncGeneration'")
    assert lines[1].startswith("(self, api_key: 'str | None' = None, *, base_url")
    assert lines[2].startswith("(images: 'Sequence[Medium]', prompt: 'str', *")
    assert lines[2].endswith("-> 'Generation'")
    assert lines[3].startswith("(prompt: 'str', *, ")
    assert lines[3].endswith("-> 'RawResponse[Generation]'")
    assert lines[4].startswith("(file: 'str | os.PathLike[str] | BinaryIO', *, description")
    rendered = " ".join(out.split())  # 3.13's pydoc breaks a signature into lines
    assert "lipsync( face: 'Medium', audio: 'Medium'" in rendered.replace("lipsync(face", "lipsync( face")


def test_names_read_as_the_packages_whoever_loaded_them() -> None:
    """A model loaded by the SDK itself (the first answer parsed), not through
    ``kolbo_async.X``, still reads as ``kolbo_async.X``; each pickles and unpickles."""
    out = run("""
        import pickle
        import anyio
        import kolbo_async as k
        from kolbo_async.testing import Simulator, VirtualClock

        async def main():
            clock = VirtualClock()
            sim = Simulator(clock=clock)
            async with k.AsyncKolbo(
                "kolbo_live_x", _transport=sim.transport(), _clock=clock
            ) as client:
                gen = await client.videos.generate("a fox")
                status = await gen.wait()
                print(type(status).__module__, type(gen.submission).__module__)
                print(pickle.loads(pickle.dumps(status)) == status)

        anyio.run(main)
        print(sorted({getattr(k, n).__module__ for n in k.__all__}))
    """)
    assert out.splitlines() == ["kolbo_async kolbo_async", "True", "['kolbo_async']"]


def test_signatures_resolve_once_across_threads() -> None:
    """Threads asking for the same method's signature at once all get it, and it is then the
    method's own."""
    out = run("""
        import inspect, threading
        from kolbo_async._namespaces import AsyncVideos
        seen, barrier = [], threading.Barrier(8)

        def ask():
            barrier.wait()
            seen.append(str(inspect.signature(AsyncVideos.from_elements)))

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(len(set(seen)), len(seen), hasattr(AsyncVideos.from_elements, "__wrapped__"))
        print("__signature__" in vars(AsyncVideos.from_elements))
    """)
    assert out.splitlines() == ["1 8 False", "True"]


@pytest.mark.parametrize(
    ("name", "module"),
    [("FramesToVideo", "kolbo_async._routes_video"), ("Kolbo", "kolbo_async._sync"),
     ("Model", "kolbo_async._models")],
)
def test_a_lazy_name_loads_its_module_on_first_read(name: str, module: str) -> None:
    """``from kolbo_async import X`` loads X's module then, and only then."""
    out = run(f"""
        import sys
        import kolbo_async
        print({module!r} in sys.modules)
        from kolbo_async import {name}
        print({module!r} in sys.modules, {name}.__module__)
    """)
    assert out.splitlines() == ["False", "True kolbo_async"]
