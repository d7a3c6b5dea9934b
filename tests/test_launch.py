"""Stopping every platform: graceful within a deadline, forced after it (pure scheduling logic)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from bot.core import Core
from bot.settings import Settings, SettingsError
from entry.platforms import load_adapters, run_until_stopped


class Platform:
    """A stand-in adapter whose ``serve`` behaves as ``behaviour`` says."""

    def __init__(self, platform: str, behaviour: str) -> None:
        self.platform = platform
        self.behaviour = behaviour

    async def serve(self, core: Core, stop: asyncio.Event) -> None:
        if self.behaviour == "failing":
            raise RuntimeError("rejected token")
        if self.behaviour == "stuck_starting":  # start-up hangs on a server that never answers
            await asyncio.Event().wait()
        await stop.wait()


stuck_starting, well_behaved, failing = "stuck_starting", "well_behaved", "failing"


async def run(servers: dict[str, str], deadline_s: float = 0.5) -> asyncio.Task[None]:
    adapters = [Platform(name, behaviour) for name, behaviour in servers.items()]
    task = asyncio.create_task(run_until_stopped(adapters, None, deadline_s))  # type: ignore[arg-type]
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


def test_a_slack_mode_without_its_token_names_the_missing_variables() -> None:
    socket = Settings(slack_bot_token="xoxb-1", slack_mode="socket")
    with pytest.raises(SettingsError, match="SLACK_APP_TOKEN: required in Slack socket mode"):
        load_adapters(socket)
    http = Settings(slack_bot_token="xoxb-1", slack_mode="http")
    with pytest.raises(SettingsError, match="SLACK_SIGNING_SECRET: required in Slack http mode"):
        load_adapters(http)


def test_each_adapter_gets_only_its_own_platforms_secrets() -> None:
    pytest.importorskip("discord")
    pytest.importorskip("slack_bolt")
    settings = Settings(discord_token="discord-secret", slack_bot_token="xoxb-secret", slack_app_token="xapp-secret")
    adapters = {adapter.platform: adapter for adapter in load_adapters(settings)}
    assert set(adapters) == {"discord", "slack"}
    discord_config, slack_config = (adapters[name].config for name in ("discord", "slack"))  # type: ignore[attr-defined]
    assert "xoxb-secret" not in repr(vars(discord_config)) and "xapp-secret" not in repr(vars(discord_config))
    assert "discord-secret" not in repr(vars(slack_config))
    assert discord_config.token == "discord-secret" and slack_config.bot_token == "xoxb-secret"
