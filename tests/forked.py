"""Child Python processes forked from a warm interpreter, for the tests that need many.

A fresh interpreter spends 0.3-0.5 s of CPU importing httpx, anyio, the package, redis and
psycopg before its first line runs; the process tests start hundreds of them, and on two
cores that import is most of the suite's CPU. `Popen` and `run` here take the same arguments
as `subprocess`'s for ``[sys.executable, "-c", code, ...]``, ``[sys.executable, "-m", module,
...]`` and ``[sys.executable, script, ...]``, and fork the child from a server process
(one per test process) that imported those libraries once.

What the child gets is what a fresh interpreter would give it: its own pid (signals, kill -9,
SIGSTOP reach it), the stdin/stdout/stderr, cwd and environment asked for, ``sys.argv`` and
``sys.path[0]`` as ``python`` sets them, Python's own Ctrl-C handler, and the interpreter's
normal exit (threads joined, atexit, finalizers; an uncaught KeyboardInterrupt ends it by
SIGINT; a traceback gives 1). Two differences, which no test started this way depends on:
the libraries above are already imported, and the children of one server share its hash
seed. Tests of what a fresh interpreter imports keep `subprocess`.

Environment variables read at interpreter start-up (``PYTHON*``: path, warnings, hash seed,
dev mode, ...) are honoured by keeping one server per distinct set of them.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any

# Imported by the server before it forks: what the process tests' children import.
PRELOAD = (
    "anyio",
    "trio",
    "httpx",
    "kolbo_async",
    "kolbo_async._cli",
    "kolbo_async._journal_pg",
    "kolbo_async._rate_redis",
    "kolbo_async._rate_store",
    "kolbo_async.testing",
    "redis",
    "redis.asyncio",
    "psycopg",
    "rich",
)

# Start-up variables the child's environment may differ in: each applied after the fork.
_APPLIED_AFTER_FORK = {"PYTHONUNBUFFERED", "PYTHONIOENCODING", "PYTHONDONTWRITEBYTECODE"}

# A child's pid, then its return code (negative: the signal that ended it).
_CODE = struct.Struct("!q")


class Popen(subprocess.Popen[Any]):
    """`subprocess.Popen` for ``[sys.executable, ...]``, the child forked by a warm server.

    Pipes, `communicate`, `wait`, `poll`, `send_signal`, `kill` and `returncode` (negative for
    a signal) behave as `subprocess`'s. Options a forked child cannot honour (a shell,
    ``preexec_fn``, ``pass_fds``, a new session, another user) raise `ValueError`.
    """

    _status: socket.socket | None

    def __init__(self, args: Sequence[str], **kwargs: Any) -> None:
        unsupported = {"shell", "preexec_fn", "pass_fds", "start_new_session", "process_group",
                       "user", "group", "extra_groups", "umask", "executable"} & {
            k for k, v in kwargs.items() if v not in (None, False, (), -1)}  # fmt: skip
        if unsupported or not args or args[0] != sys.executable:
            raise ValueError(f"forked.Popen cannot start {args!r} with {sorted(unsupported)}")
        self._status = None
        self._status_lock = threading.Lock()
        super().__init__(list(args), **kwargs)

    def _execute_child(  # type: ignore[override]
        self,
        args: list[str],
        executable: Any,
        preexec_fn: Any,
        close_fds: bool,
        pass_fds: Any,
        cwd: Any,
        env: Mapping[str, str] | None,
        startupinfo: Any,
        creationflags: Any,
        shell: bool,
        p2cread: int,
        p2cwrite: int,
        c2pread: int,
        c2pwrite: int,
        errread: int,
        errwrite: int,
        *rest: Any,
    ) -> None:
        environ = dict(os.environ if env is None else env)
        request = {"argv": args[1:], "cwd": os.fspath(cwd or os.getcwd()), "env": environ}
        fds = [p2cread if p2cread != -1 else 0, c2pwrite if c2pwrite != -1 else 1,
               errwrite if errwrite != -1 else 2]  # fmt: skip
        try:
            self._status, self.pid = _server(environ).spawn(request, fds)
        finally:
            self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)  # type: ignore[attr-defined]

    def _exited(self, timeout: float | None) -> int | None:
        # The server writes the child's wait status on this socket when it reaps it.
        status = self._status
        if status is None:
            return self.returncode
        status.settimeout(timeout)
        try:
            data = _recv_exactly(status, _CODE.size)
        except (TimeoutError, BlockingIOError):
            return None
        status.close()
        self._status = None
        self.returncode = _CODE.unpack(data)[0]
        return self.returncode

    def _internal_poll(self, _deadstate: int | None = None, **_: Any) -> int | None:
        if self.returncode is None and self._status_lock.acquire(False):
            try:
                self._exited(0.0)
            except OSError:
                if _deadstate is not None:
                    self.returncode = _deadstate
            finally:
                self._status_lock.release()
        return self.returncode

    def _wait(self, timeout: float | None) -> int:
        with self._status_lock:
            if self.returncode is None and self._exited(timeout) is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode


def run(
    args: Sequence[str],
    *,
    input: str | bytes | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run` with the child forked by the warm server (see `Popen`)."""
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    with Popen(args, **kwargs) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check:
        done.check_returncode()
    return done


# -- the client's side of the server --------------------------------------------------------


class _Server:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._dir = tempfile.mkdtemp(prefix="kolbo-forked-")
        self.path = os.path.join(self._dir, "s")
        # Its stdin is a pipe from this process: at our exit it reads EOF and ends.
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, __file__, self.path, json.dumps(PRELOAD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=dict(environ),
            cwd=self._dir,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline() != b"ready\n":
            raise RuntimeError("the fork server did not start")
        atexit.register(self.close)

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def spawn(self, request: dict[str, Any], fds: list[int]) -> tuple[socket.socket, int]:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.path)
            payload = json.dumps(request).encode()
            socket.send_fds(conn, [struct.pack("!I", len(payload)) + payload], fds)
            data = _recv_exactly(conn, _CODE.size)
        except BaseException:
            conn.close()
            raise
        return conn, _CODE.unpack(data)[0]


_servers: dict[tuple[tuple[str, str], ...], _Server] = {}
_servers_lock = threading.Lock()


def _server(environ: Mapping[str, str]) -> _Server:
    key = tuple(sorted((k, v) for k, v in environ.items()
                       if k.startswith("PYTHON") and k not in _APPLIED_AFTER_FORK))  # fmt: skip
    with _servers_lock:
        server = _servers.get(key)
        if server is None or server.proc.poll() is not None:
            server = _servers[key] = _Server(environ)
        return server


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the fork server went away")
        data += chunk
    return data


# -- the server (runs in its own process, see _BOOT) ----------------------------------------

# The server's first lines: run this file under another name than __main__, so that the
# child's __main__ is its own. An exception out of the child's code ends it as it would end
# ``python -c``: a traceback and 1, or death by SIGINT for a KeyboardInterrupt.
_BOOT = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__forkserver__')"


def _serve(path: str, preload: Sequence[str]) -> dict[str, Any]:
    """Fork a child per request; return (in the child only) what it is to run."""
    import gc
    import importlib

    for name in preload:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    # The preloaded objects stay out of the children's collections: a collection that
    # walked them would copy every page they sit on into the child.
    gc.freeze()
    # Ctrl-C at a terminal reaches the whole process group: the server outlives it, as the
    # test process does; children get Python's own handler back.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "reap")
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "parent")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    # A child's connection, from its fork until its exit is reported and its client hangs up.
    # Like a subprocess's, a child that has ended stays a zombie (its pid still takes
    # signals) until its client has read how it ended.
    conns: dict[int, socket.socket] = {}
    running: set[int] = set()
    while True:
        for key, _ in selector.select():
            if key.data == "parent":
                if not os.read(sys.stdin.fileno(), 4096):
                    os._exit(0)
            elif key.data == "reap":
                os.read(wake_r, 4096)
                for pid in list(running):
                    ended = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                    if ended is None or ended.si_pid == 0:
                        continue
                    running.discard(pid)
                    code = ended.si_status
                    with contextlib.suppress(OSError):
                        conns[pid].sendall(_CODE.pack(code if ended.si_code == os.CLD_EXITED
                                                      else -code))  # fmt: skip
                    selector.register(conns[pid], selectors.EVENT_READ, pid)
            elif isinstance(key.data, int):
                pid = key.data
                selector.unregister(conns[pid])
                conns.pop(pid).close()
                os.waitpid(pid, 0)
            else:
                conn, _ = listener.accept()
                head, fds, _flags, _addr = socket.recv_fds(conn, 4, 3)
                (size,) = struct.unpack("!I", head)
                request = json.loads(_recv_exactly(conn, size))
                pid = os.fork()
                if pid == 0:
                    # Let go of the server's objects before their fds are closed, so that
                    # none of them, collected later, closes a file the child opened.
                    selector.close()
                    for held in (listener, conn, *conns.values()):
                        held.detach()
                    _become_child(request, fds)
                    return request
                for fd in fds:
                    os.close(fd)
                conns[pid] = conn
                running.add(pid)
                conn.sendall(_CODE.pack(pid))


def _become_child(request: dict[str, Any], fds: list[int]) -> None:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    os.closerange(3, 1 << 16)  # the server's sockets, pipes and other children's fds
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    encoding = os.environ.get("PYTHONIOENCODING") or sys.stdout.encoding
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    sys.stdin = sys.__stdin__ = open(0, encoding=encoding, closefd=False)  # noqa: SIM115
    sys.stdout = sys.__stdout__ = _stdio(1, encoding, "strict", unbuffered=unbuffered)
    sys.stderr = sys.__stderr__ = _stdio(2, encoding, "backslashreplace", unbuffered=unbuffered)


def _stdio(fd: int, encoding: str, errors: str, *, unbuffered: bool) -> io.TextIOWrapper:
    # As the interpreter opens them: written through with PYTHONUNBUFFERED; otherwise
    # stdout line-buffered only on a terminal, stderr always.
    raw = io.FileIO(fd, "w", closefd=False)
    if unbuffered:
        return io.TextIOWrapper(raw, encoding=encoding, errors=errors, write_through=True)
    line = fd == 2 or os.isatty(fd)
    buffer = io.BufferedWriter(raw)
    return io.TextIOWrapper(buffer, encoding=encoding, errors=errors, line_buffering=line)


def _run_child(request: dict[str, Any]) -> None:
    import runpy
    import types

    argv: list[str] = request["argv"]
    if argv[:1] == ["-c"]:
        sys.argv = ["-c", *argv[2:]]
        sys.path[0] = ""
        main = types.ModuleType("__main__")
        sys.modules["__main__"] = main
        exec(compile(argv[1], "<string>", "exec"), main.__dict__)
    elif argv[:1] == ["-m"]:
        sys.argv = [argv[1], *argv[2:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        script = os.path.abspath(argv[0])
        sys.argv = [argv[0], *argv[1:]]
        sys.path[0] = os.path.dirname(os.path.realpath(script))
        runpy.run_path(script, run_name="__main__")


if __name__ == "__forkserver__":
    _run_child(_serve(sys.argv[2], json.loads(sys.argv[3])))
