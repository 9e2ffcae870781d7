"""Promises of the CDN side (`Transfers`) that its third mutation run found untested (issue 18).

A free download slot is taken on the fast path: no trip through the event loop, so a
download that does not have to wait for the cap lets no other task run before it is on its
way (the hot path of 5a877f1), while one past the cap still waits for a slot.
"""

from __future__ import annotations

import anyio
import pytest

from kolbo_async._transfers import Transfers

pytestmark = pytest.mark.anyio


async def test_a_free_download_slot_is_taken_without_letting_another_task_run() -> None:
    transfers = Transfers(limit=2)
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)  # ready to run at the next trip through the event loop
        async with transfers.limiter:
            ran.append("slot")
        assert ran == ["slot"]
    assert ran == ["slot", "other"]


async def test_a_download_past_the_cap_waits_for_a_slot() -> None:
    """The fast path is for free slots only: with every slot held, the next one waits until
    a slot is given back."""
    transfers = Transfers(limit=1)
    order: list[str] = []
    holding = anyio.Event()
    give_back = anyio.Event()

    async def holder() -> None:
        async with transfers.limiter:
            holding.set()
            await give_back.wait()
            order.append("given back")

    async def waiter() -> None:
        async with transfers.limiter:
            order.append("second slot")

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await holding.wait()
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert order == []
        give_back.set()
    assert order == ["given back", "second slot"]
