"""Ctrl-C on trio, kept out of the work that must run to its end (a paid POST and its record).

asyncio's runner turns Ctrl-C into a cancellation, which the SDK's shields hold off, and the
blocking client defers it until the call is out of the loop. trio does neither: it raises
`KeyboardInterrupt` at once inside whatever code runs when the signal lands, unless that code
is protected, and it delivers it to the run's main task at that task's next wait, however
shielded. A POST interrupted either way is a generation Kolbo charged for whose id nobody
learns. So on trio the POST runs in a system task (never the main task, and protected), and
the code that records its answer is protected; the interrupt then comes out of the caller's
wait, or of the main task's next one, and the POST lands on its own.

trio is imported by whoever runs it, never by this module.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

__all__ = ["beyond_ctrl_c", "protect_from_ctrl_c"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_protected: set[Any] = set()


def protect_from_ctrl_c(function: F) -> F:
    """`function` (when it runs in a task other than trio's main one) gets Ctrl-C only as
    the main task's `KeyboardInterrupt`, never inside itself or what it calls.

    Idempotent and cheap; without trio loaded it does nothing, and asyncio never asks.
    """
    trio = sys.modules.get("trio")
    if trio is not None and function not in _protected:
        trio.lowlevel.enable_ki_protection(function)
        _protected.add(function)
    return function


async def beyond_ctrl_c(
    work: Callable[[], Awaitable[T]], *, left: Callable[[T | None], None]
) -> T:
    """Run `work` to its end in a trio system task, shielded and protected from Ctrl-C.

    The caller waits for it; a Ctrl-C (or any exception) that ends the caller's wait calls
    `left` with the result if it is already there, or None (`work` then finds out by
    itself that nobody waits, see `_pipeline._land`), and is raised.
    """
    trio = sys.modules["trio"]  # anyio runs on trio here
    done = trio.Event()
    box: list[T] = []
    failed: list[BaseException] = []

    async def run() -> None:
        try:
            # trio cancels the system tasks when the main task ends (by Ctrl-C, say).
            with anyio.CancelScope(shield=True):
                box.append(await work())
        except BaseException as exc:  # the caller's to raise: from a system task, it ends the run
            failed.append(exc)
        finally:
            done.set()

    # Hooks (OpenTelemetry spans) read the caller's context variables.
    trio.lowlevel.spawn_system_task(run, context=contextvars.copy_context())
    try:
        await done.wait()
    except BaseException:
        left(box[0] if box else None)
        raise
    if failed:
        raise failed[0]
    return box[0]
