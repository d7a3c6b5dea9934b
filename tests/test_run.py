"""`bot run` as an operator runs it: platforms chosen from the tokens set, SIGTERM exits 0."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from tests.discord import payloads
from tests.discord.standin import DiscordStandIn
from tests.slack.conftest import CHANNEL, USER
from tests.slack.standin import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, SlackStandIn, message_event
from tests.test_console import bot_env, run_bot

pytestmark = pytest.mark.model


async def test_run_serves_slack_and_stops_cleanly_on_sigterm(bundled_model: Path, tmp_path: Path) -> None:
    async with SlackStandIn() as slack:
        env = bot_env(bundled_model, tmp_path, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN=APP_TOKEN)
        env.update(SLACK_API_URL=slack.api_url, BOT_LOG_LEVEL="DEBUG")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "entry",
            "run",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await slack.wait_for(lambda: slack.socket_open or None, limit_s=60)
            ts = slack.next_ts()
            question = f"<@{BOT_USER_ID}> What is the capital of France?"
            await slack.send_event(message_event(question, channel=CHANNEL, user=USER, ts=ts, kind="app_mention"))
            replies = await slack.wait_replies(CHANNEL, ts, limit_s=60)
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        finally:
            if process.returncode is None:
                process.kill()
    assert process.returncode == 0, stderr.decode()
    assert replies
    log = stderr.decode()
    assert "Stopped" in log
    assert BOT_TOKEN not in log and APP_TOKEN not in log


async def test_run_serves_discord_and_slack_together(bundled_model: Path, tmp_path: Path) -> None:
    discord = DiscordStandIn()
    await discord.start()
    try:
        async with SlackStandIn() as slack:
            env = bot_env(bundled_model, tmp_path, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN=APP_TOKEN)
            env.update(SLACK_API_URL=slack.api_url, DISCORD_TOKEN=payloads.TOKEN, DISCORD_API_BASE=discord.api_base)
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "entry", "run", env=env, stderr=asyncio.subprocess.PIPE
            )
            try:
                await discord.connected()
                await slack.wait_for(lambda: slack.socket_open or None, limit_s=60)
                question = payloads.message_create(
                    f"{payloads.mention()} What is the capital of France?", mentions=(payloads.bot_user(),)
                )
                await discord.dispatch("MESSAGE_CREATE", question)
                answer = await discord.wait_for(lambda: discord.replies_to(question["id"]) or None)
                process.send_signal(signal.SIGINT)  # Ctrl-C
                _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
            finally:
                if process.returncode is None:
                    process.kill()
    finally:
        await discord.close()
    assert process.returncode == 0, stderr.decode()
    assert answer
    assert payloads.TOKEN not in stderr.decode() and BOT_TOKEN not in stderr.decode()


def test_run_without_tokens_is_the_console_chat(bundled_model: Path, tmp_path: Path) -> None:
    result = run_bot(["run"], bot_env(bundled_model, tmp_path), stdin="/quit\n")
    assert result.returncode == 0, result.stderr
    assert "Chatting with SmolLM2" in result.stdout


async def test_run_with_a_rejected_slack_token_explains_and_exits_1(bundled_model: Path, tmp_path: Path) -> None:
    async with SlackStandIn() as slack:
        env = bot_env(bundled_model, tmp_path, SLACK_BOT_TOKEN="xoxb-wrong", SLACK_APP_TOKEN=APP_TOKEN)
        env["SLACK_API_URL"] = slack.api_url
        result = await asyncio.to_thread(run_bot, ["run"], env)
    assert result.returncode == 1
    assert "SLACK_BOT_TOKEN" in result.stderr and "xoxb-wrong" not in result.stderr
