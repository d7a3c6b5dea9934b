"""Stopping every platform: graceful within a deadline, forced after it (pure scheduling logic)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from adapters.launch import run_until_stopped
from bot.admin import AdminActions
from bot.manager import ConversationManager
from bot.settings import Settings


async def stuck_starting(
    manager: ConversationManager, settings: Settings, admin: AdminActions, stop: asyncio.Event
) -> None:
    """A platform whose start-up hangs on a server that never answers."""
    await asyncio.Event().wait()


async def well_behaved(
    manager: ConversationManager, settings: Settings, admin: AdminActions, stop: asyncio.Event
) -> None:
    await stop.wait()


async def failing(manager: ConversationManager, settings: Settings, admin: AdminActions, stop: asyncio.Event) -> None:
    raise RuntimeError("rejected token")


async def run(servers: dict, deadline_s: float = 0.5) -> asyncio.Task[None]:  # type: ignore[type-arg]
    task = asyncio.create_task(run_until_stopped(servers, None, None, None, deadline_s))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    return task


async def test_sigterm_stops_even_a_platform_stuck_in_start_up() -> None:
    task = await run({"A": well_behaved, "B": stuck_starting}, deadline_s=0.5)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, timeout=5)  # graceful for A, cancelled after the deadline for B


async def test_a_second_signal_does_not_wait_for_the_deadline() -> None:
    task = await run({"B": stuck_starting}, deadline_s=60)
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.sleep(0.1)
    assert not task.done()
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.wait_for(task, timeout=5)


async def test_one_failing_platform_stops_the_others_and_is_reported() -> None:
    task = await run({"A": well_behaved, "B": failing})
    with pytest.raises(RuntimeError, match="rejected token"):
        await asyncio.wait_for(task, timeout=5)
