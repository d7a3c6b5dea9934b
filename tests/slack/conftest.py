"""Fixtures for the Slack adapter: the local Slack stand-in and the real Bolt app running against it."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from adapters.slack import SlackOptions, serve
from bot.admin import AdminActions, NoAdminActions
from bot.manager import ConversationManager
from bot.settings import Settings
from tests.slack.standin import APP_TOKEN, BOT_TOKEN, SlackStandIn

ADMIN = "UADMIN001"
USER = "UUSER0001"
CHANNEL = "CGENERAL1"
WATCHED = "CWATCHED1"
DM = "DUSERBOT1"
SIGNING_SECRET = "standin-signing-secret"

# Fast edits so a short reply shows several updates; everything else as in production.
TEST_OPTIONS = SlackOptions(edit_interval_s=0.05, edits_per_minute=6000, stop_grace_s=10, http_host="127.0.0.1")


def slack_settings(standin: SlackStandIn, **overrides: Any) -> Settings:
    """Settings pointing the adapter at the stand-in."""
    values: dict[str, Any] = {
        "slack_bot_token": BOT_TOKEN,
        "slack_app_token": APP_TOKEN,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_api_url": standin.api_url,
        "slack_admin_ids": [ADMIN],
        "slack_channels": [WATCHED],
    }
    values.update(overrides)
    return Settings(**values)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclasses.dataclass
class RunningSlack:
    """The adapter running in a task, and the event that stops it."""

    task: asyncio.Task[None]
    stop: asyncio.Event


async def start_slack(
    manager: ConversationManager, settings: Settings, admin: AdminActions | None = None, **options: Any
) -> RunningSlack:
    """Start ``serve`` and wait until it takes events (raising what made it fail to start)."""
    ready, stop = asyncio.Event(), asyncio.Event()
    config = dataclasses.replace(TEST_OPTIONS, ready=ready, **options)
    task = asyncio.create_task(serve(manager, settings, admin or NoAdminActions(), stop, config))
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiting}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if task.done():
        task.result()
    assert ready.is_set(), "the Slack adapter did not start in time"
    return RunningSlack(task, stop)


@asynccontextmanager
async def running_slack(
    manager: ConversationManager, settings: Settings, admin: AdminActions | None = None, **options: Any
) -> AsyncIterator[RunningSlack]:
    """Run the adapter until the block ends, then stop it and check it returned cleanly."""
    running = await start_slack(manager, settings, admin, **options)
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
    async with running_slack(manager, slack_settings(standin)):
        yield standin
