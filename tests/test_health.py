"""Readiness (``Health``) and the operations endpoint serving ``/metrics`` and ``/healthz`` on 127.0.0.1.

The endpoint tests run a real core over the bundled model, and the real Discord and Slack
adapters against their local stand-ins, which report their connections themselves.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.base import PlatformStartupError
from adapters.discord import DiscordAdapter, DiscordConfig
from bot.core import Core
from bot.health import Health
from entry.llama_server import free_port
from entry.observability import bound_port, serve_observability
from tests.discord.payloads import TOKEN
from tests.discord.standin import DiscordStandIn
from tests.slack.conftest import running_slack, slack_config
from tests.slack.standin import APP_TOKEN, BOT_TOKEN, SlackStandIn
from tests.test_console import bot_env

# --- Health alone (pure logic) ---


def test_ready_needs_the_model_and_every_expected_platform() -> None:
    health = Health()
    health.expect("discord")
    health.expect("slack")
    assert not health.ready
    health.model_loaded(True)
    health.connected("discord", True)
    assert not health.ready  # Slack still down
    health.connected("slack", True)
    assert health.ready
    health.connected("discord", False)
    assert not health.ready
    health.connected("discord", True)
    health.model_loaded(False)
    assert not health.ready


def test_an_unexpected_platform_does_not_hold_readiness_back() -> None:
    health = Health()
    health.model_loaded(True)
    health.connected("slack", False)  # reported, but not configured as needed
    assert health.ready


def test_report_names_every_platform_and_the_model() -> None:
    health = Health()
    health.expect("slack")
    health.connected("discord", True)
    assert health.report() == {"ready": False, "model_loaded": False, "platforms": {"discord": True, "slack": False}}


# --- the endpoint ---


@dataclass
class Endpoint:
    """The running endpoint and a client for it."""

    url: str
    http: aiohttp.ClientSession

    async def get(self, path: str) -> tuple[int, str, Any]:
        """Status, content type and body (JSON for /healthz, text otherwise)."""
        async with self.http.get(self.url + path) as response:
            body = await response.json() if path == "/healthz" else await response.text()
            return response.status, response.headers["Content-Type"], body

    async def health_status(self) -> int:
        return (await self.get("/healthz"))[0]


@pytest.fixture
async def endpoint(core: Core) -> AsyncIterator[Endpoint]:
    async with serve_observability(core, "127.0.0.1", 0) as runner, aiohttp.ClientSession() as http:
        yield Endpoint(f"http://127.0.0.1:{bound_port(runner)}", http)


async def until(check: Callable[[], bool], limit_s: float = 30.0) -> None:
    """Wait until ``check()`` holds (an event in another task: a reconnect, a READY)."""

    async def poll() -> None:
        while not check():  # noqa: ASYNC110  # the change happens in an adapter callback, with no event to await
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), limit_s)


@pytest.mark.model
async def test_metrics_are_served_in_the_prometheus_format(core: Core, endpoint: Endpoint) -> None:
    core.metrics.message("discord", "answered")
    status, content_type, body = await endpoint.get("/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert 'bot_messages_total{outcome="answered",platform="discord"} 1.0' in body
    assert (await endpoint.get("/nothing-here"))[0] == 404


@pytest.mark.model
async def test_healthz_is_ready_only_with_the_model_and_every_platform_connected(
    core: Core, endpoint: Endpoint
) -> None:
    core.health.expect("discord")
    core.health.expect("slack")
    core.health.model_loaded(True)
    status, _, report = await endpoint.get("/healthz")
    assert (status, report["platforms"]) == (503, {"discord": False, "slack": False})
    async with SlackStandIn() as slack_standin, running_slack(core, slack_config(slack_standin)):
        assert await endpoint.health_status() == 503  # Discord still down
        discord_standin = DiscordStandIn()
        await discord_standin.start()
        stop = asyncio.Event()
        config = DiscordConfig(token=TOKEN, api_base=discord_standin.api_base, guild_ready_timeout_s=0.1)
        discord = asyncio.create_task(DiscordAdapter(config).serve(core, stop))
        try:
            await until(lambda: core.health.ready)
            status, _, report = await endpoint.get("/healthz")
            assert (status, report) == (
                200,
                {"ready": True, "model_loaded": True, "platforms": {"discord": True, "slack": True}},
            )
        finally:
            stop.set()
            await asyncio.wait_for(discord, 30)
            await discord_standin.close()
        status, _, report = await endpoint.get("/healthz")
        assert (status, report["platforms"]) == (503, {"discord": False, "slack": True})
    assert await endpoint.health_status() == 503  # Slack stopped too
    assert core.health.report()["platforms"] == {"discord": False, "slack": False}


class RecordingHealth(Health):
    """Health that remembers every connection change, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.changes: list[tuple[str, bool]] = []

    def connected(self, platform: str, up: bool) -> None:
        self.changes.append((platform, up))
        super().connected(platform, up)

    def transitions(self) -> list[tuple[str, bool]]:
        """The changes without repeats of the same state."""
        return [change for i, change in enumerate(self.changes) if i == 0 or self.changes[i - 1] != change]


@pytest.mark.model
async def test_a_dropped_discord_gateway_is_down_until_the_bot_reconnects(core: Core) -> None:
    core.health = health = RecordingHealth()
    standin = DiscordStandIn()
    await standin.start()
    stop = asyncio.Event()
    config = DiscordConfig(token=TOKEN, api_base=standin.api_base, guild_ready_timeout_s=0.1)
    serving = asyncio.create_task(DiscordAdapter(config).serve(core, stop))
    try:
        await until(lambda: health.changes == [("discord", True)])
        await (await standin.connected()).ws.close(code=4000, message=b"stand-in dropped the session")
        # discord.py may report one drop more than once; what matters is down, then up again.
        await until(lambda: len(health.transitions()) >= 3)
        assert health.transitions()[:3] == [("discord", True), ("discord", False), ("discord", True)]
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)
        await standin.close()
    assert health.changes[-1] == ("discord", False)


@pytest.mark.model
async def test_a_port_in_use_is_a_clear_startup_error(core: Core) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PlatformStartupError, match=f"127.0.0.1:{port}.*BOT_METRICS_PORT"):
            async with serve_observability(core, "127.0.0.1", port):
                pass


async def healthz_once_ready(url: str, limit_s: float = 90.0) -> list[tuple[int, Any]]:
    """Every /healthz answer of a starting bot until the first 200 (refused connections while it loads)."""
    answers: list[tuple[int, Any]] = []

    async def until_ready() -> None:
        async with aiohttp.ClientSession() as http:
            while not answers or answers[-1][0] != 200:
                try:
                    async with http.get(url) as response:
                        answers.append((response.status, await response.json()))
                except aiohttp.ClientConnectionError:  # not listening yet: the model is still loading
                    pass
                await asyncio.sleep(0.05)

    await asyncio.wait_for(until_ready(), limit_s)
    return answers


@pytest.mark.model
async def test_bot_run_serves_the_endpoint_and_json_logs_when_configured(bundled_model: Path, tmp_path: Path) -> None:
    port = free_port()
    async with SlackStandIn() as slack:
        env = bot_env(bundled_model, tmp_path, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN=APP_TOKEN)
        env.update(SLACK_API_URL=slack.api_url, BOT_METRICS_PORT=str(port), BOT_LOG_FORMAT="json")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "entry", "run", env=env, stderr=asyncio.subprocess.PIPE
        )
        try:
            answers = await healthz_once_ready(f"http://127.0.0.1:{port}/healthz")
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
                metrics_status, metrics = response.status, await response.text()
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        finally:
            if process.returncode is None:
                process.kill()
    assert process.returncode == 0, stderr.decode()
    # Served only once the model is loaded; not ready while Slack connects (if a probe caught that moment).
    assert all(status == 503 and not report["platforms"]["slack"] for status, report in answers[:-1]), answers
    assert answers[-1] == (200, {"ready": True, "model_loaded": True, "platforms": {"slack": True}})
    assert metrics_status == 200 and "# TYPE bot_messages_total counter" in metrics
    lines = stderr.decode().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert not [line for line in lines if " INFO " in line and not line.startswith("{")], "a text log line"
    assert any(record["message"] == "Stopped" and record["level"] == "INFO" for record in records), lines
    assert BOT_TOKEN not in stderr.decode() and APP_TOKEN not in stderr.decode()
