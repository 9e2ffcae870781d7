"""Adversarial checks of commit 5bc0a8a (`import kolbo_async` loads models, route classes, the
blocking client, downloads and cattrs on first use; route methods' signatures made on first ask).

Every check runs in a fresh interpreter: this test process has loaded every module already.
Tests marked ``xfail(strict=True)`` reproduce bugs found; they turn red when fixed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

#: Every name `kolbo_async` exported before 5bc0a8a (`git show 5bc0a8a^:kolbo_async/__init__.py`).
EXPORTS_BEFORE = [
    "APIConnectionError", "APIResponseValidationError", "APIStatusError", "APITimeoutError",
    "AsyncGeneration", "AsyncKolbo", "AuthenticationError", "BadRequestError", "BatchOutcome",
    "ConflictError", "CooldownStarted", "Credits", "DownloadProgress", "ElementsToVideo", "Event",
    "Failure", "FramesToVideo", "Generation", "GenerationCancelledError", "GenerationFailedError",
    "GenerationStatus", "GenerationSubmitted", "GenerationTimeoutError", "ImageEdit",
    "ImageResult", "ImageToVideo", "InsufficientCreditsError", "InternalServerError",
    "InvalidRequestError", "Kolbo", "KolboError", "Lipsync", "Media", "Model", "NotFoundError",
    "PacingWait", "PermissionDeniedError", "RateLimitError", "RateLimits", "RawResponse",
    "RequestDone", "Retrying", "StateChanged", "Submission", "SubmissionOutcomeUnknownError",
    "TextToImage", "TextToVideo", "VideoResult", "VideoToVideo", "as_completed",
]  # fmt: skip

#: Names the package loads on first use since 5bc0a8a.
LAZY = [
    "BatchOutcome", "CooldownStarted", "Credits", "DownloadProgress", "ElementsToVideo", "Event",
    "Failure", "FramesToVideo", "Generation", "GenerationStatus", "GenerationSubmitted",
    "ImageEdit", "ImageResult", "ImageToVideo", "Kolbo", "Lipsync", "Media", "Model", "PacingWait",
    "RawResponse", "RequestDone", "Retrying", "StateChanged", "Submission", "TextToImage",
    "TextToVideo", "VideoResult", "VideoToVideo", "as_completed",
]  # fmt: skip


#: Kept for the fresh interpreters when set (checking an uninstalled tree, another Python).
PYTHONPATH = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


def run(code: str, *, stdin: bytes | None = None, timeout: float = 120) -> str:
    """`code` in a fresh interpreter; its stdout (fails on a non-zero exit or a hang)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        input=stdin,
        check=False,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", **PYTHONPATH},
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def raw_output(code: str) -> bytes:
    """`code`'s stdout bytes, run in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        check=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **PYTHONPATH},
    ).stdout


# --- names: what a new user, a REPL, help() and pydoc see --------------------------------------


def test_every_name_exported_before_is_still_exported_and_resolves() -> None:
    """`from kolbo_async import *` in a fresh interpreter gives every name of the previous
    release, each the same object as ``kolbo_async.X`` and named ``kolbo_async.X``."""
    out = run(f"""
        import kolbo_async
        ns = {{}}
        exec("from kolbo_async import *", ns)
        names = {EXPORTS_BEFORE!r}
        print(sorted(set(names) - set(kolbo_async.__all__)))
        print([n for n in names if ns.get(n) is not getattr(kolbo_async, n)])
        print([n for n in names if getattr(kolbo_async, n).__module__ != "kolbo_async"])
        print(isinstance(kolbo_async.__version__, str))
    """)
    assert out.splitlines() == ["[]", "[]", "[]", "True"]


def test_dir_lists_every_public_name_on_a_fresh_import() -> None:
    out = run("""
        import kolbo_async
        print(sorted(set(kolbo_async.__all__) - set(dir(kolbo_async))))
    """)
    assert out.strip() == "[]"


def test_help_documents_every_public_name_on_a_fresh_import() -> None:
    out = run("""
        import pydoc
        import kolbo_async
        doc = pydoc.render_doc(kolbo_async, renderer=pydoc.plaintext)
        print(sorted(n for n in kolbo_async.__all__ if n not in doc))
    """)
    assert out.strip() == "[]"


def test_isinstance_and_identity_across_lazily_loaded_names() -> None:
    """A model the SDK parsed itself is an instance of ``kolbo_async.X`` read afterwards, and of
    the private module's class; a route class read two ways is one class."""
    out = run("""
        import anyio
        import kolbo_async as k
        from kolbo_async.testing import Simulator, VirtualClock

        async def main():
            clock = VirtualClock()
            sim = Simulator(clock=clock)
            async with k.AsyncKolbo("kolbo_live_x", _transport=sim.transport(), _clock=clock) as c:
                models = await c.models.list()
                gen = await c.videos.generate("a fox")
                status = await gen.wait()
                return models, gen, status

        models, gen, status = anyio.run(main)
        from kolbo_async._models import Model, GenerationStatus
        from kolbo_async import _routes_video
        print(isinstance(models[0], k.Model), k.Model is Model, isinstance(status, GenerationStatus))
        print(isinstance(gen.submission, k.Submission), k.FramesToVideo is _routes_video.FramesToVideo)
        print(type(gen).__module__, type(status).__module__, repr(status).startswith("GenerationStatus("))
    """)
    assert out.splitlines() == ["True True True", "True True", "kolbo_async kolbo_async True"]


# --- signatures, hints, unwrap: what IDEs, pydoc, sphinx and IPython do ------------------------

ROUTES = [
    ("videos", "from_frames", "FramesToVideo"),
    ("videos", "from_elements", "ElementsToVideo"),
    ("videos", "lipsync", "Lipsync"),
    ("videos", "from_video", "VideoToVideo"),
    ("videos", "from_image", "ImageToVideo"),
    ("images", "generate", "TextToImage"),
    ("images", "edit", "ImageEdit"),
]


def test_route_signatures_are_the_route_classes_on_every_client() -> None:
    """Before any call, the async, blocking and raw-response route methods take exactly the
    parameters their route class declares; async ones are coroutine functions, blocking not."""
    out = run(f"""
        import inspect
        import kolbo_async as k

        bad = []
        client = k.AsyncKolbo("kolbo_live_x")
        with k.Kolbo("kolbo_live_x") as blocking:
            for ns, name, cls in {ROUTES!r}:
                want = list(inspect.signature(getattr(k, cls)).parameters.values())
                targets = [
                    ("async", getattr(getattr(client, ns), name), True),
                    ("sync", getattr(getattr(blocking, ns), name), False),
                    ("araw", getattr(getattr(client.with_raw_response, ns, None), name, None), True),
                    ("sraw", getattr(getattr(blocking.with_raw_response, ns, None), name, None),
                     False),
                ]
                for where, method, coro in targets:
                    if method is None:
                        continue
                    got = list(inspect.signature(method).parameters.values())
                    if got != want:
                        bad.append((where, ns, name))
                    if inspect.iscoroutinefunction(method) is not coro:
                        bad.append((where, ns, name, "coro"))
        print(bad)
    """)
    assert out.strip() == "[]"


def test_functools_wraps_of_a_route_method_keeps_its_signature() -> None:
    """A user's decorator (`functools.wraps`) on a route method shows the route's parameters,
    whether or not the method's signature was asked for before."""
    out = run("""
        import functools, inspect
        from kolbo_async._namespaces import AsyncVideos, AsyncImages

        def deco(f):
            @functools.wraps(f)
            async def wrapper(*args, **kwargs):
                return await f(*args, **kwargs)
            return wrapper

        first = deco(AsyncVideos.from_frames)                 # never asked before
        a = str(inspect.signature(first))
        b = str(inspect.signature(AsyncVideos.from_frames))
        inspect.signature(AsyncImages.edit)
        second = deco(AsyncImages.edit)                       # asked before
        print(a == b, "first_frame" in a, "images" in str(inspect.signature(second)))
        print(inspect.iscoroutinefunction(first), inspect.unwrap(second) is AsyncImages.edit)
    """)
    assert out.splitlines() == ["True True True", "True True"]


def test_getsource_and_unwrap_of_a_route_method_before_its_signature() -> None:
    out = run("""
        import inspect
        import kolbo_async as k
        client = k.AsyncKolbo("kolbo_live_x")
        print(inspect.unwrap(client.videos.from_frames) == client.videos.from_frames)
        print("def from_frames" in inspect.getsource(client.videos.from_frames))
    """)
    assert out.splitlines() == ["True", "True"]


def test_getfullargspec_and_unfollowed_signature_before_the_first_signature() -> None:
    out = run("""
        import inspect
        import kolbo_async as k
        client = k.AsyncKolbo("kolbo_live_x")
        spec = inspect.getfullargspec(client.videos.from_frames)
        print(spec.args, spec.kwonlyargs[:1])
        print(str(inspect.signature(client.images.edit, follow_wrapped=False))[:8])
    """)
    assert out.splitlines() == ["['self', 'first_frame', 'last_frame'] ['prompt']", "(images:"]


@pytest.mark.slow
def test_mock_autospec_of_namespaces_checks_route_parameters() -> None:
    """`mock.create_autospec` of a fresh client's namespaces (async and blocking) rejects a
    call missing a route's required parameter, and makes the async routes AsyncMocks."""
    out = run("""
        from unittest import mock
        import kolbo_async as k
        videos = mock.create_autospec(k.AsyncKolbo("kolbo_live_x").videos, instance=True)
        with k.Kolbo("kolbo_live_x") as blocking:
            images = mock.create_autospec(blocking.images, instance=True)
        for call in (lambda: videos.from_frames("a"), lambda: images.edit()):
            try:
                call()
                print("accepted")
            except TypeError as e:
                print(str(e))
        print(type(videos.from_frames).__name__)
    """)
    assert out.splitlines() == [
        "missing a required argument: 'last_frame'",
        "missing a required argument: 'images'",
        "AsyncMock",
    ]


def test_help_of_each_namespace_and_client_class_shows_route_parameters() -> None:
    """`help()` of every namespace (async, blocking, raw) and of both client classes, first
    thing in a fresh interpreter, shows each route's parameters: no ``*args, **kwargs``."""
    out = run("""
        import pydoc
        import kolbo_async as k
        c = k.AsyncKolbo("kolbo_live_x")
        with k.Kolbo("kolbo_live_x") as b:
            docs = [
                pydoc.render_doc(o, renderer=pydoc.plaintext)
                for o in (c.videos, c.images, c.models, c.media, b.videos, b.images,
                          b.with_raw_response.videos, c.with_raw_response.videos, k.Kolbo,
                          k.AsyncKolbo)
            ]
        print(sum("*args" in d for d in docs), "first_frame: 'Medium'" in docs[4])  # 3.13 breaks a signature into lines
    """)
    assert out.strip() == "0 True"


#: Methods whose `typing.get_type_hints` worked in the previous release.
HINTED = [
    "k.AsyncGeneration.result", "k.AsyncGeneration.status", "k.AsyncGeneration.wait",
    "k.AsyncGeneration.cancel", "k.AsyncGeneration.__init__", "k.Generation.result",
    "k.Generation.wait", "k.Generation.progress", "client.models.list", "client.account.credits",
    "client.media.upload", "blocking.models.list",
    "blocking.account.credits", "blocking.media.upload", "client.with_raw_response.models.list",
]  # fmt: skip


def test_get_type_hints_of_route_methods_before_and_after_their_signature() -> None:
    """Route methods resolve their hints through the stand-in (``__globals__``) and after
    (as before 5bc0a8a, the hints are the method's own ``*args, **kwargs``)."""
    out = run("""
        import inspect, typing
        import kolbo_async as k
        client = k.AsyncKolbo("kolbo_live_x")
        before = typing.get_type_hints(client.videos.from_frames)
        inspect.signature(client.videos.from_frames)
        after = typing.get_type_hints(client.videos.from_frames)
        print(before == after, "return" in after)
    """)
    assert out.strip() == "True True"


@pytest.mark.slow
def test_get_type_hints_of_public_methods_that_resolved_before() -> None:
    out = run(f"""
        import typing
        import kolbo_async as k
        client = k.AsyncKolbo("kolbo_live_x")
        blocking = k.Kolbo("kolbo_live_x")
        bad = []
        for name in {HINTED!r}:
            try:
                typing.get_type_hints(eval(name))
            except NameError as e:
                bad.append((name, str(e)))
        blocking.close()
        print(bad)
    """)
    assert out.strip() == "[]"


def test_signature_while_another_thread_completes_the_first_one() -> None:
    """The interleaving is forced: a trace function runs the other thread's first
    `inspect.signature` between unwrap's `stop` check and its read of ``__wrapped__``."""
    out = run("""
        import inspect, sys
        import kolbo_async
        from kolbo_async._namespaces import AsyncVideos
        method = AsyncVideos.from_frames
        done = []

        def tracer(frame, event, arg):
            # unwrap's `stop` (inspect.signature's lambda) said "no __signature__ yet" for
            # the method: unwrap reads its __wrapped__ next.
            code = frame.f_code
            if code.co_name != "<lambda>" or code.co_filename != inspect.__file__:
                return None
            def local(frame, event, arg):
                if event == "return" and not arg and frame.f_locals.get("f") is method:
                    if not done:
                        done.append(1)
                        sys.settrace(None)
                        inspect.signature(method)          # "the other thread"
                return local
            return local

        sys.settrace(tracer)
        try:
            print("first_frame" in str(inspect.signature(method)))
        except AttributeError as e:
            print("AttributeError", e)
        finally:
            sys.settrace(None)
    """)
    assert out.strip() == "True"


def test_signatures_and_hints_from_many_threads_at_once() -> None:
    """Every stand-in method asked at once by 12 threads (fast thread switches): the same
    signature each time, each made once asked."""
    out = run("""
        import inspect, sys, threading, typing
        sys.setswitchinterval(1e-6)
        import kolbo_async as k
        from kolbo_async import _namespaces, _raw, _sync, _sync_raw
        methods = {}
        for mod in (_namespaces, _sync, _raw, _sync_raw):
            for cls in list(vars(mod).values()):
                if isinstance(cls, type):
                    for v in vars(cls).values():
                        made = getattr(v, "__dict__", {}).get("__signature__")
                        if type(made).__name__ == "_Signature":  # made on first read
                            methods[id(v)] = v
        methods = list(methods.values())
        seen, errors = {}, []
        barrier = threading.Barrier(12)

        def ask():
            barrier.wait()
            for m in methods:
                try:
                    seen.setdefault(m.__qualname__, set()).add(str(inspect.signature(m)))
                    typing.get_type_hints(m)
                except NameError:
                    pass  # (see the get_type_hints test)
                except Exception as e:
                    errors.append(repr(e))

        threads = [threading.Thread(target=ask) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(len(methods) > 10, errors, [q for q, s in seen.items() if len(s) != 1])
        print([m.__qualname__ for m in methods if vars(m)["__signature__"]._made is None])
    """)
    assert out.splitlines() == ["True [] []", "[]"]


def test_a_wrong_first_call_raises_what_it_raised_before() -> None:
    """A route class first loaded by a wrong call (missing or unknown parameters, bad values,
    a missing file) raises what the previous release raised, async and blocking alike."""
    out = run("""
        import anyio
        import kolbo_async as k
        from kolbo_async.testing import Simulator, VirtualClock
        calls = [
            lambda c: c.videos.from_frames(),
            lambda c: c.videos.from_frames("https://a.test/a.png", "https://a.test/b.png", x=1),
            lambda c: c.images.edit([], "x"),
            lambda c: c.videos.generate("x", duration=-1),
            lambda c: c.videos.lipsync(None, None),
            lambda c: c.media.upload("/nonexistent/file.png"),
        ]

        async def first_async():
            clock = VirtualClock()
            sim = Simulator(clock=clock)
            async with k.AsyncKolbo("kolbo_live_x", _transport=sim.transport(), _clock=clock) as c:
                for call in calls:
                    try:
                        await call(c)
                    except Exception as e:
                        print(type(e).__name__, end=" ")
            print()

        anyio.run(first_async)
        clock = VirtualClock()
        sim = Simulator(clock=clock)
        with k.Kolbo("kolbo_live_x", _transport=sim.transport(), _clock=clock) as c:
            for call in calls:
                try:
                    call(c)
                except Exception as e:
                    print(type(e).__name__, end=" ")
        print()
    """)
    want = "TypeError TypeError " + "InvalidRequestError " * 4
    assert out.splitlines() == [want, want]


# --- first use from many threads, after fork ---------------------------------------------------

FIRST_USES = """
import os, sys, tempfile, threading
sys.setswitchinterval(1e-5)
import kolbo_async as k
from kolbo_async.testing import Simulator, VirtualClock

tmp = tempfile.mkdtemp()
png = os.path.join(tmp, "a.png")
with open(png, "wb") as f:
    f.write(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(64))

def blocking():
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    return k.Kolbo("kolbo_live_x", _transport=sim.transport(), _clock=clock, rate_limits=None)

USES = {
    "frames": lambda c: c.videos.from_frames(png, png, prompt="x").wait().state,
    "edit": lambda c: c.images.edit([png], "x").wait().state,
    "models": lambda c: type(c.models.list()[0]).__name__,
    "credits": lambda c: type(c.account.credits()).__name__,
    "download": lambda c: os.path.exists(
        c.videos.generate("a fox").download(os.path.join(tmp, f"{threading.get_ident()}.mp4"))),
    "raw": lambda c: type(c.with_raw_response.videos.generate("a fox").parse()).__name__,
    "lipsync": lambda c: c.videos.lipsync(png, png).wait().state,
    "image": lambda c: c.images.generate("a fox").wait().state,
    "copy": lambda c: type(c.with_options(max_retries=0).models.list()[0]).__name__,
}
"""


@pytest.mark.slow
def test_first_use_of_every_route_from_many_threads_at_once() -> None:
    """Two threads per first use (18 threads, each its own fresh `Kolbo`), released at once
    in a fresh interpreter: no deadlock, no half-initialised module, every answer right."""
    out = run(
        FIRST_USES
        + """
results, errors = {}, []
names = list(USES) * 2
barrier = threading.Barrier(len(names))

def use(name):
    try:
        with blocking() as c:
            barrier.wait()
            results.setdefault(name, set()).add(USES[name](c))
    except BaseException as e:
        errors.append(f"{name}: {e!r}")

threads = [threading.Thread(target=use, args=(n,)) for n in names]
for t in threads:
    t.start()
for t in threads:
    t.join(60)
print(errors, [t.is_alive() for t in threads].count(True))
print(sorted((n, sorted(map(str, v))) for n, v in results.items()))
""",
        timeout=150,
    )
    lines = out.splitlines()
    assert lines[0] == "[] 0"
    assert lines[1] == str(
        sorted(
            [
                ("copy", ["Model"]), ("credits", ["Credits"]), ("download", ["True"]),
                ("edit", ["completed"]), ("frames", ["completed"]), ("image", ["completed"]),
                ("lipsync", ["completed"]), ("models", ["Model"]), ("raw", ["Generation"]),
            ]
        )
    )  # fmt: skip


def test_first_read_of_every_lazy_name_from_many_threads_at_once() -> None:
    """Each lazily loaded name read by 3 threads at once (and a star import racing them):
    every thread gets the same object, the one the package then keeps."""
    out = run(f"""
        import sys, threading
        sys.setswitchinterval(1e-6)
        import kolbo_async
        names = {LAZY!r} * 3
        got, errors = [], []
        barrier = threading.Barrier(len(names) + 1)

        def read(name):
            barrier.wait()
            try:
                got.append((name, getattr(kolbo_async, name)))
            except BaseException as e:
                errors.append(repr(e))

        def star():
            barrier.wait()
            try:
                exec("from kolbo_async import *", {{}})
            except BaseException as e:
                errors.append(repr(e))

        threads = [threading.Thread(target=read, args=(n,)) for n in names]
        threads.append(threading.Thread(target=star))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(errors, len(got), [n for n, v in got if v is not getattr(kolbo_async, n)])
    """)
    assert out.strip() == f"[] {len(LAZY) * 3} []"


@pytest.mark.slow
def test_async_clients_first_use_in_many_threads_each_with_its_loop() -> None:
    """Eight threads each run their own event loop and a fresh `AsyncKolbo`'s first generation
    (models, handles, downloads loaded by whichever gets there first)."""
    out = run("""
        import os, sys, tempfile, threading
        sys.setswitchinterval(1e-5)
        import anyio
        import kolbo_async as k
        from kolbo_async.testing import Simulator, VirtualClock
        tmp = tempfile.mkdtemp()
        barrier = threading.Barrier(8)
        done, errors = [], []

        async def first(i):
            clock = VirtualClock()
            sim = Simulator(clock=clock)
            async with k.AsyncKolbo("kolbo_live_x", _transport=sim.transport(), _clock=clock) as c:
                barrier.wait()
                if i % 2:
                    gen = await c.videos.generate("a fox")
                    path = await gen.download(os.path.join(tmp, f"{i}.mp4"))
                    return os.path.exists(path)
                return isinstance((await c.models.list())[0], k.Model)

        def thread(i):
            try:
                done.append(anyio.run(first, i))
            except BaseException as e:
                errors.append(repr(e))

        threads = [threading.Thread(target=thread, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        print(errors, done.count(True))
    """)
    assert out.strip() == "[] 8"


@pytest.mark.slow
def test_first_batches_and_as_completed_from_many_threads_at_once() -> None:
    """Six threads' first batch (blocking `generate_many` with dicts and route objects, or
    `kolbo_async.as_completed`) at once: every outcome a `BatchOutcome` of a `Generation`."""
    out = run("""
        import sys, threading
        sys.setswitchinterval(1e-5)
        import kolbo_async as k
        from kolbo_async.testing import Simulator, VirtualClock
        errors, got = [], []
        barrier = threading.Barrier(6)

        def use(i):
            try:
                clock = VirtualClock()
                sim = Simulator(clock=clock)
                with k.Kolbo("kolbo_live_x", _transport=sim.transport(), _clock=clock,
                             rate_limits=None) as c:
                    barrier.wait()
                    if i % 2:
                        requests = [{"prompt": "a"}, k.TextToVideo("b"), k.TextToImage("c")]
                        outs = list(c.videos.generate_many(requests, concurrency=2))
                    else:
                        outs = list(k.as_completed([c.videos.generate("a"),
                                                    c.images.generate("b")]))
                    got.append([(type(o).__name__, o.error is None, type(o.generation).__name__)
                                for o in outs])
            except BaseException as e:
                errors.append(repr(e))

        threads = [threading.Thread(target=use, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        print(errors, sorted(len(g) for g in got))
        print({o for g in got for o in g})
    """)
    assert out.splitlines() == ["[] [2, 2, 2, 3, 3, 3]", "{('BatchOutcome', True, 'Generation')}"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_right_after_import_then_first_use_in_the_child() -> None:
    """Forked after `import kolbo_async` (nothing else loaded), the child's first use of the
    blocking client, a route and the models works, and so does the parent's afterwards."""
    out = run(
        FIRST_USES
        + """
pid = os.fork()
if pid == 0:
    try:
        with blocking() as c:
            ok = (USES["frames"](c), USES["models"](c), USES["download"](c))
        os._exit(0 if ok == ("completed", "Model", True) else 3)
    except BaseException:
        import traceback
        traceback.print_exc()
        os._exit(4)
_, status = os.waitpid(pid, 0)
with blocking() as c:
    print(os.waitstatus_to_exitcode(status), USES["edit"](c))
""",
    )
    assert out.strip() == "0 completed"


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.xfail(
    strict=True,
    reason="known hazard (CPython's, made reachable by loading on first use): a fork while "
    "another thread is inside an import leaves that module's import lock held in the child "
    "by a thread that does not exist there, so the child's first `kolbo_async.Kolbo` hangs "
    "(Python 3.12+ warns on fork() with threads for this reason). Not fixed: an at-fork hook "
    "that finishes the imports first would wait on the importing thread.",
)
def test_fork_while_another_thread_first_loads_the_blocking_client() -> None:
    """The other thread is held inside `_sync`'s import (a trace function) while the main
    thread forks; the child then reads `kolbo_async.Kolbo` (an alarm ends a hang)."""
    out = run("""
        import os, signal, sys, threading
        import kolbo_async
        inside, release = threading.Event(), threading.Event()

        def tracer(frame, event, arg):
            code = frame.f_code
            if code.co_name == "<module>" and code.co_filename.endswith("_sync.py"):
                if not inside.is_set():
                    inside.set()
                    release.wait(10)
            return None

        def first_use():
            sys.settrace(tracer)
            kolbo_async.Kolbo

        thread = threading.Thread(target=first_use)
        thread.start()
        inside.wait(10)
        pid = os.fork()
        if pid == 0:
            signal.alarm(2)
            from kolbo_async import Kolbo
            os._exit(0 if Kolbo.__name__ == "Kolbo" else 3)
        release.set()
        thread.join()
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
    """)
    assert out.strip() == "0"


# --- objects users hold: pickle, copy, reprs ---------------------------------------------------


def test_requests_and_models_pickle_into_a_process_that_only_imported_nothing() -> None:
    """Route requests and models from one process load in a fresh one (which never read the
    lazy names): pickles refer to ``kolbo_async.X``, found through the module's __getattr__.
    copy and deepcopy keep them equal."""
    blob = raw_output("""
            import copy, pickle, sys
            import anyio
            import kolbo_async as k
            from kolbo_async.testing import Simulator, VirtualClock

            async def main():
                clock = VirtualClock()
                sim = Simulator(clock=clock)
                async with k.AsyncKolbo("kolbo_live_x", _transport=sim.transport(),
                                        _clock=clock) as c:
                    gen = await c.videos.generate("a fox")
                    return [await gen.wait(), gen.submission, (await c.models.list())[0],
                            await c.account.credits()]

            objs = anyio.run(main) + [
                k.TextToVideo("a fox"), k.TextToImage("a fox"),
                k.ImageEdit(["https://example.com/a.png"], "x"),
                k.FramesToVideo("https://example.com/a.png", "https://example.com/b.png"),
                k.Lipsync("https://example.com/a.mp4", "https://example.com/b.mp3"),
                k.ImageToVideo("https://example.com/a.png", prompt="x"),
            ]
            assert all(copy.copy(o) == o and copy.deepcopy(o) == o for o in objs)
            sys.stdout.buffer.write(pickle.dumps(objs))
    """)
    out = run(
        """
        import pickle, sys
        objs = pickle.loads(sys.stdin.buffer.read())
        import kolbo_async as k
        print([type(o).__module__ + "." + type(o).__name__ for o in objs])
        print(all(isinstance(o, getattr(k, type(o).__name__)) for o in objs))
        """,
        stdin=blob,
    )
    assert out.splitlines() == [
        str([f"kolbo_async.{n}" for n in (
            "GenerationStatus", "Submission", "Model", "Credits", "TextToVideo", "TextToImage",
            "ImageEdit", "FramesToVideo", "Lipsync", "ImageToVideo",
        )]),
        "True",
    ]  # fmt: skip


def test_errors_pickle_across_processes() -> None:
    blob = raw_output("""
            import pickle, sys
            import anyio
            import kolbo_async as k
            from kolbo_async.testing import Simulator, VirtualClock

            async def main():
                clock = VirtualClock()
                sim = Simulator(clock=clock)
                sim.plan(outcome="failed")
                async with k.AsyncKolbo("kolbo_live_x", _transport=sim.transport(),
                                        _clock=clock) as c:
                    gen = await c.videos.generate("a fox")
                    try:
                        await gen.result()
                    except k.GenerationFailedError as e:
                        return e

            import httpx
            answer = httpx.Response(404, request=httpx.Request("GET", "https://x.test"), json={})
            errors = [anyio.run(main), k.InvalidRequestError("prompt", "is empty"),
                      k.NotFoundError("gone", response=answer, body={}, code=None)]
            sys.stdout.buffer.write(pickle.dumps(errors))
    """)
    out = run(
        """
        import pickle, sys
        import kolbo_async as k
        errors = pickle.loads(sys.stdin.buffer.read())
        print([type(e).__name__ for e in errors], errors[0].status.state, errors[1].field)
        print(errors[2].status_code)
        """,
        stdin=blob,
    )
    assert out.splitlines() == [
        "['GenerationFailedError', 'InvalidRequestError', 'NotFoundError'] failed prompt",
        "404",
    ]


# --- the blocking client, raw responses, option copies, the CLI -------------------------------


def test_blocking_raw_response_and_with_options_copies_on_first_use() -> None:
    """A fresh process's first call is a raw-response one, on a `with_options` copy of a
    blocking client: its signature, its answer and the parsed handle are right."""
    out = run("""
        import inspect
        import kolbo_async as k
        from kolbo_async.testing import Simulator, VirtualClock
        clock = VirtualClock()
        sim = Simulator(clock=clock)
        with k.Kolbo("kolbo_live_x", _transport=sim.transport(), _clock=clock) as c:
            copy = c.with_options(max_retries=0, timeout=5)
            raw = copy.with_raw_response.videos.generate("a fox", duration=5)
            print(type(raw).__name__, raw.status_code, type(raw.parse()).__name__)
            print(raw.parse().wait().state, type(copy.with_raw_response.models.list().parse()))
            print(str(inspect.signature(copy.with_raw_response.videos.generate)).endswith(
                "-> 'RawResponse[Generation]'"))
    """)
    assert out.splitlines() == [
        "RawResponse 200 Generation",
        "completed <class 'list'>",
        "True",
    ]


@pytest.mark.slow
def test_cli_help_and_a_sandbox_command_in_a_fresh_process() -> None:
    """`kolbo --help` and `kolbo --sandbox models` (python -m kolbo_async) in new processes."""
    env = {"PATH": "/usr/bin:/bin", **PYTHONPATH}
    helped = subprocess.run(
        [sys.executable, "-m", "kolbo_async", "--help"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert helped.returncode == 0, helped.stderr
    assert "frames" in helped.stdout and "lipsync" in helped.stdout
    models = subprocess.run(
        [sys.executable, "-m", "kolbo_async", "--sandbox", "models"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert models.returncode == 0, models.stderr
    assert "model(s)" in models.stdout
