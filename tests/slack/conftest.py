"""Fixtures for the Slack adapter: the local Slack stand-in and the real Bolt app running against it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from adapters.slack import SlackAdapter, SlackConfig
from bot.admin import AdminActions
from bot.core import Core
from bot.manager import ConversationManager
from tests.conftest import make_core
from tests.slack.standin import APP_TOKEN, BOT_TOKEN, SlackStandIn

ADMIN = "UADMIN001"
USER = "UUSER0001"
CHANNEL = "CGENERAL1"
WATCHED = "CWATCHED1"
DM = "DUSERBOT1"
SIGNING_SECRET = "standin-signing-secret"


def slack_config(standin: SlackStandIn, **overrides: Any) -> SlackConfig:
    """A config pointing the adapter at the stand-in, with fast edits so a short reply shows several updates."""
    values: dict[str, Any] = {
        "bot_token": BOT_TOKEN,
        "app_token": APP_TOKEN,
        "signing_secret": SIGNING_SECRET,
        "api_url": standin.api_url,
        "channels": frozenset({WATCHED}),
        "edit_interval_s": 0.05,
        "edits_per_minute": 6000,
        "http_host": "127.0.0.1",
    }
    values.update(overrides)
    return SlackConfig(**values)


def slack_core(manager: ConversationManager, actions: AdminActions | None = None, stop_grace_s: float = 10.0) -> Core:
    """The core over ``manager`` with ``ADMIN`` as Slack's admin."""
    return make_core(manager, admin_ids={"slack": [ADMIN]}, actions=actions, stop_grace_s=stop_grace_s)


@dataclasses.dataclass
class RunningSlack:
    """The adapter running in a task over ``core``, and the event that stops it."""

    task: asyncio.Task[None]
    stop: asyncio.Event
    core: Core


async def start_slack(core: Core, config: SlackConfig) -> RunningSlack:
    """Start ``serve`` and wait until it takes events (raising what made it fail to start)."""
    adapter, stop = SlackAdapter(config), asyncio.Event()
    task = asyncio.create_task(adapter.serve(core, stop))
    waiting = asyncio.create_task(adapter.ready.wait())
    await asyncio.wait({task, waiting}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if task.done():
        task.result()
    assert adapter.ready.is_set(), "the Slack adapter did not start in time"
    return RunningSlack(task, stop, core)


@asynccontextmanager
async def running_slack(core: Core, config: SlackConfig) -> AsyncIterator[RunningSlack]:
    """Run the adapter until the block ends, then stop it and check it returned cleanly."""
    running = await start_slack(core, config)
    try:
        yield running
    finally:
        running.stop.set()
        await asyncio.wait_for(running.task, timeout=30)


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    """A fresh Slack stand-in on 127.0.0.1."""
    async with SlackStandIn() as server:
        yield server


@pytest.fixture
async def slack(manager: ConversationManager, standin: SlackStandIn) -> AsyncIterator[SlackStandIn]:
    """The real Bolt app on the real model, connected to the stand-in over Socket Mode."""
    async with running_slack(slack_core(manager), slack_config(standin)):
        yield standin
