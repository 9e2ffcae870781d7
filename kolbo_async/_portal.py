"""The blocking client's event loop, and how a blocking call gets onto it.

Each `Kolbo` owns one asyncio loop, and its `AsyncKolbo` belongs to that loop for life (the
core refuses any other). The loop is run by whoever needs it, one thread at a time:

- A call from a thread that runs no event loop, while nobody else is running the client's
  loop, runs the loop itself, in the calling thread, until its own task is done: no thread
  hand-off at all. This is the common case (a script, a worker thread, one call at a time).
- A call made while the loop is busy (another thread's call), or from inside a running event
  loop (a notebook cell, trio), queues its task on the loop and waits on a lock; whoever runs
  the loop runs it.
- When the thread that runs the loop is done with its own call and work is still queued (an
  overlapping call, or a call whose caller left: a paid POST shielded until its answer), the
  loop passes to the client's daemon thread, which runs it until nothing is queued and parks
  (a caller arriving before the daemon has started takes the loop back).

Why not an anyio blocking portal for everything: every call then pays two thread hand-offs,
which cost most when the machine is busy (issue 17: the portal 2-3.5x a raw ``httpx.Client``
call, a ``call_soon_threadsafe`` + lock wake-up 1.2-3x, the loop in the caller 0.95-1.7x).

No request, retry, pacing, polling or validation logic lives here: only who runs the loop.
"""

from __future__ import annotations

import contextvars
import socket
import threading
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from ._exceptions import KolboError
from ._runtime import current_loop, forks

if TYPE_CHECKING:
    import asyncio
    import signal as _fast_signal
else:
    try:  # the C module: `signal.getsignal` costs ~5 µs a call converting to enums
        import _signal as _fast_signal
    except ImportError:  # pragma: no cover - not CPython
        import signal as _fast_signal

__all__ = ["Portal"]

T = TypeVar("T")

_SIGINT = int(_fast_signal.SIGINT)
_MAIN_THREAD = threading.main_thread().ident
_CANCELLED: Any = object()  # what a call's guard returns when its scope swallowed a cancel
#: Seconds the daemon thread keeps running an idle loop before handing it back to callers.
LINGER = 0.002

CLOSED = "This Kolbo client is closed; create a new one to make requests."
_CLOSED_UNDER = "The Kolbo client was closed while this call was running."
_FORKED = (
    "This Kolbo client was created before os.fork() and cannot run in the child process "
    "(its event loop thread stayed in the parent); nothing was sent. Create the client in the "
    "child: gunicorn's post_fork hook, Celery's worker_process_init, or after the fork."
)
_REENTERED = "The blocking client cannot be called from its own callbacks (on_progress)."


class _Call:
    """One blocking call: its task on the loop, how its caller waits, and how it ended."""

    __slots__ = ("cancelled", "driving", "interrupt", "scope", "task", "waiter")

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.scope: anyio.CancelScope | None = None
        #: The caller itself runs the loop for this call (and stops it when the task ends).
        self.driving = False
        #: What the caller's Ctrl-C raised while it ran the loop, re-raised outside it.
        self.interrupt: BaseException | None = None
        self.cancelled = False  # asked to stop before its scope existed
        self.waiter: Any = None  # a held threading.Lock, released when the task ends


class Portal:
    """One asyncio loop, run in the calling thread when free, else by a daemon thread.

    State that decides who runs the loop is guarded by one mutex: `_busy` (some thread runs,
    or is about to run, the loop), `_queued` (calls whose callers do not run the loop for
    them: the loop must keep running until they end), `_turn` (the daemon thread is asked
    to run the loop), `_exited` (closing: no new call is taken).
    """

    __slots__ = ("_busy", "_calls", "_cond", "_exited", "_forks", "_loop", "_mutex", "_queued",
                 "_scope", "_thread", "_thread_id", "_turn", "_wakeup", "stopped")  # fmt: skip

    def __init__(self) -> None:
        # Imported here: asyncio costs ~15 ms that `import kolbo_async` should not pay.
        import asyncio

        self._loop = asyncio.new_event_loop()
        self._scope: Callable[[], anyio.CancelScope] | None = None
        # A signal may be taken by any thread; the main thread asleep in the loop's select()
        # would not notice it. While it runs the loop, the signal also writes a byte here.
        self._wakeup = socket.socketpair()
        for end in self._wakeup:
            end.setblocking(False)
        self._loop.add_reader(self._wakeup[0].fileno(), self._drain)
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._busy = False
        self._queued = 0
        self._turn = False
        self._exited = False
        self._forks = forks()
        self._calls: set[_Call] = set()  # touched on the loop only
        self.stopped = threading.Event()
        # A daemon thread, never a thread-pool worker: the interpreter joins those before
        # atexit hooks run, so a client the caller forgot to close would hang exit.
        self._thread = threading.Thread(target=self._serve, name="kolbo-blocking", daemon=True)
        self._thread_id: int | None = None
        self._thread.start()

    # -- calls -----------------------------------------------------------------------------

    def call(self, func: Callable[..., Awaitable[T]], /, *args: Any) -> T:
        """Run ``func(*args)`` on the loop and return its result; Ctrl-C cancels it there.

        Works from any thread, including one that runs its own event loop (the call is then
        queued for the client's loop, never run on the caller's).
        """
        if self.stopped.is_set():
            raise KolboError(CLOSED)
        if self._forks != forks():
            # The loop's thread did not survive fork(): waiting for it would hang forever.
            raise KolboError(_FORKED)
        return self._run(func, args)

    def _run(self, func: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        running = current_loop()
        if running is self._loop:
            # Waiting here for the loop this very thread is running would deadlock it.
            raise KolboError(_REENTERED)
        call = _Call()
        with self._mutex:
            if self._exited:
                raise KolboError(CLOSED)
            drive = running is None and (not self._busy or self._turn)
            if drive:
                # A loop handed to a daemon that has not started yet is taken back: a thread
                # that keeps calling keeps the loop, running the queued calls with its own.
                self._busy = True
                self._turn = False
            else:
                self._queued += 1
                if not self._busy:  # idle, but this thread cannot run it: wake the thread
                    self._busy = self._turn = True
                    self._cond.notify_all()
        if drive:
            return self._drive(call, func, args)
        return self._wait(call, func, args)

    def _drive(self, call: _Call, func: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        """Run the loop in this thread until `call` is done (or the caller is interrupted)."""
        loop = self._loop
        call.driving = True
        previous = None
        if threading.get_ident() == _MAIN_THREAD:
            # SIGINT's handler must not raise inside the loop's own code (a half-read
            # socket, a task killed mid-step): it is deferred to outside the loop instead.
            previous = _fast_signal.getsignal(_SIGINT)
            if callable(previous):
                _fast_signal.signal(_SIGINT, _Deferred(self, call, previous))
                wakeup = _fast_signal.set_wakeup_fd(
                    self._wakeup[1].fileno(), warn_on_full_buffer=False
                )
            else:
                previous = None
        try:
            task = self._start(call, func, args)
            while call.driving and call.interrupt is None and not task.done():
                loop.run_forever()  # stopped by the task's end (or a stale stop: run again)
        finally:
            if previous is not None:
                _fast_signal.set_wakeup_fd(wakeup)
                _fast_signal.signal(_SIGINT, previous)
            self._let_go(call)
        return self._outcome(call)  # type: ignore[no-any-return]

    def _wait(self, call: _Call, func: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        """Queue `call` for whoever runs the loop and wait for its end."""
        call.waiter = waiter = threading.Lock()
        waiter.acquire()
        loop = self._loop
        try:
            # Inside: a Ctrl-C that lands as soon as the call is handed over abandons it too.
            loop.call_soon_threadsafe(self._start, call, func, args)
            waiter.acquire()  # a plain lock: on the main thread, SIGINT interrupts it
        except BaseException:
            # Ctrl-C (or any interruption of the wait): cancel the task on the loop too, so
            # nothing keeps polling behind the caller's back. The loop is still open: it
            # runs until every queued call, this one included, has ended.
            with suppress(RuntimeError):  # it ended meanwhile and the client closed
                loop.call_soon_threadsafe(self._abandon, call)
            raise
        result: T = self._outcome(call)
        return result

    def _outcome(self, call: _Call) -> Any:
        if call.interrupt is not None:
            raise call.interrupt
        task = call.task
        if task is None or not task.done() or task.cancelled():  # pragma: no cover - defensive
            raise KolboError(_CLOSED_UNDER if self.stopped.is_set() else "The call was cancelled.")
        result = task.result()
        if result is _CANCELLED:
            if self.stopped.is_set():  # another thread closed the client under this call
                raise KolboError(_CLOSED_UNDER)
            raise KolboError("The call was cancelled.")  # pragma: no cover - defensive
        return result

    # -- on the loop -----------------------------------------------------------------------

    def _start(
        self, call: _Call, func: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> asyncio.Task[Any]:
        # A fresh context, as a portal task had: the caller's context variables (sniffio's
        # among them) must not leak into the SDK's tasks.
        task = contextvars.Context().run(self._loop.create_task, self._guard(call, func, args))
        call.task = task
        if not call.driving:
            self._watch(call, task)
        return task

    def _watch(self, call: _Call, task: asyncio.Task[Any]) -> None:
        task.add_done_callback(lambda _: self._finished(call))

    async def _guard(
        self, call: _Call, func: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> Any:
        try:
            # An anyio scope, not Task.cancel(): a native cancel would cut through the
            # core's shields (a paid POST must run to its answer).
            scope_class = self._scope
            if scope_class is None:  # `anyio.CancelScope()` finds the backend every time
                scope_class = self._scope = type(anyio.CancelScope())
            with scope_class() as scope:
                call.scope = scope
                if call.cancelled:
                    scope.cancel()
                self._calls.add(call)
                try:
                    return await func(*args)
                finally:
                    self._calls.discard(call)
            return _CANCELLED
        finally:
            if call.driving:
                # Stopped from the task's last step, not a done callback: the caller's
                # loop run then ends in this very iteration instead of the next.
                self._loop.stop()

    def _abandon(self, call: _Call) -> None:
        """The caller left (Ctrl-C): cancel its call, and tell of a result it still ends with."""
        if call.task is not None:
            call.task.add_done_callback(_dropped)
        self._cancel(call)

    def _cancel(self, call: _Call) -> None:
        call.cancelled = True
        if call.scope is not None:
            call.scope.cancel()

    def _finished(self, call: _Call) -> None:
        task = call.task
        if task is not None and not task.cancelled():
            task.exception()  # retrieved: an abandoned call's error is not "never retrieved"
        with self._mutex:
            self._queued -= 1
            park = not self._queued and threading.get_ident() == self._thread_id
        if call.waiter is not None:
            call.waiter.release()
        if park:
            # The daemon thread has nothing left to run: it frees the loop for callers,
            # after a moment in case calls are overlapping (waking it again costs more).
            self._loop.call_later(LINGER, self._park)

    def _park(self) -> None:
        with self._mutex:
            idle = not self._queued
        if idle:
            self._loop.stop()

    def _drain(self) -> None:
        with suppress(OSError):
            self._wakeup[0].recv(4096)

    def _interrupted(self, call: _Call) -> None:
        if call.driving:
            self._loop.stop()

    # -- who runs the loop -----------------------------------------------------------------

    def _let_go(self, call: _Call) -> None:
        """The calling thread stops running the loop: unfinished work goes to the thread."""
        task = call.task
        with self._mutex:
            call.driving = False
            if task is not None and not task.done():
                # The caller leaves before its call ended (Ctrl-C): the call is cancelled
                # like any abandoned one, and the daemon thread runs it to its end.
                self._queued += 1
                self._watch(call, task)
                self._loop.call_soon(self._abandon, call)
            elif task is not None and call.interrupt is not None:
                _dropped(task)  # it ended as Ctrl-C came: its result never reaches the caller
            if self._queued or self._exited:
                self._turn = True
                self._cond.notify_all()
            else:
                self._busy = False

    def _serve(self) -> None:
        """The daemon thread: runs the loop whenever it is handed over, closes it at the end."""
        self._thread_id = threading.get_ident()
        loop = self._loop
        while True:
            with self._mutex:
                while not self._turn:
                    self._cond.wait()
                self._turn = False
                if self._exited and not self._queued:
                    break
            loop.run_forever()  # until no call is queued (`_finished` stops it)
            with self._mutex:
                if self._queued or self._exited:
                    self._turn = True  # more came in meanwhile, or closing: go round again
                else:
                    self._busy = False
                    self._cond.notify_all()
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.remove_reader(self._wakeup[0].fileno())
            loop.close()
            for end in self._wakeup:
                end.close()

    # -- closing ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether `shutdown` has begun: new calls raise `KolboError`."""
        return self.stopped.is_set()

    def shutdown(self, aclose: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run `aclose` on the loop, cancel the calls still running, close the loop."""
        if self._forks != forks():
            # A forked child closing (or exiting with) its parent's client: the loop thread
            # is not here to answer, and the parent still uses the pool. Nothing to do.
            self.stopped.set()
            return
        if current_loop() is self._loop:
            # Closed from inside the loop (an on_progress callback, or the last reference
            # dropped there): it cannot wait for itself, so another thread does the closing.
            threading.Thread(target=self.shutdown, args=(aclose,), name="kolbo-close").start()
            return
        try:
            if aclose is not None:
                self._run(aclose, ())
        finally:
            self.stopped.set()  # first, so calls cut short below report "closed"
            try:
                self._run(self._cancel_all, ())
            finally:
                with self._mutex:
                    self._exited = True
                    if not self._busy:
                        self._busy = self._turn = True
                        self._cond.notify_all()
                self._thread.join(timeout=10)

    async def _cancel_all(self) -> None:
        import asyncio

        me = asyncio.current_task()
        for call in list(self._calls):
            if call.task is not me:
                self._cancel(call)


def _dropped(task: asyncio.Task[Any]) -> None:
    """A call whose caller left (Ctrl-C) ended with a result nobody receives: a handle on a
    generation just charged for says so (its id is all that is left to give)."""
    if not task.cancelled() and task.exception() is None:
        dropped = getattr(task.result(), "_dropped_by_ctrl_c", None)
        if dropped is not None:
            dropped()


class _Deferred:
    """SIGINT's handler while a caller runs the loop: the user's handler runs at once, and
    what it raises (KeyboardInterrupt) is re-raised once the caller is out of the loop."""

    __slots__ = ("call", "portal", "previous")

    def __init__(self, portal: Portal, call: _Call, previous: Callable[..., Any]) -> None:
        self.portal = portal
        self.call = call
        self.previous = previous

    def __call__(self, signum: int, frame: Any) -> None:
        try:
            self.previous(signum, frame)
        except BaseException as exc:  # re-raised by the caller, outside the loop
            if self.call.interrupt is None:
                self.call.interrupt = exc
            # Threadsafe: it also wakes a selector that would sleep until the next poll.
            self.portal._loop.call_soon_threadsafe(self.portal._interrupted, self.call)
