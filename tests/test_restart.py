"""`kill -9` of `bot run` with messages waiting and one mid-reply: the next start answers each of them once."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from adapters.slack.mrkdwn import escape
from bot.commands import RESTARTED_NOTE, RESTARTING
from bot.streaming import INTERRUPTED_MARK
from tests.slack.conftest import USER
from tests.slack.standin import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, SlackStandIn, message_event
from tests.test_console import bot_env

pytestmark = pytest.mark.model

CHANNELS = ("C0RESTART1", "C0RESTART2", "C0RESTART3", "C0RESTART4")
NOTE = f"_{escape(RESTARTED_NOTE)}_"


async def start_bot(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "entry", "run", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )


async def ask_everyone(slack: SlackStandIn) -> list[tuple[str, str, dict[str, object]]]:
    """One question per channel, each acknowledged by the bot; returns (channel, ts, event)."""
    asked = []
    for number, channel in enumerate(CHANNELS):
        ts = slack.next_ts()
        text = f"<@{BOT_USER_ID}> Tell me a long story about the number {number}."
        event = message_event(text, channel=channel, user=USER, ts=ts, kind="app_mention")
        await slack.wait_ack(await slack.send_event(event))  # accepted: recorded before this ack
        asked.append((channel, ts, event))
    return asked


async def test_kill_9_with_messages_waiting_and_one_mid_reply_loses_none(bundled_model: Path, tmp_path: Path) -> None:
    async with SlackStandIn() as slack:
        env = bot_env(bundled_model, tmp_path, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN=APP_TOKEN)
        # One reply at a time and long ones: when the first is mid-reply the others are still waiting.
        env.update(SLACK_API_URL=slack.api_url, BOT_MAX_GENERATING="1", BOT_MAX_NEW_TOKENS="400")
        first_run = await start_bot(env)
        try:
            await slack.wait_for(lambda: slack.socket_open or None, limit_s=90)
            asked = await ask_everyone(slack)
            channel, ts, _ = asked[0]
            await slack.wait_for(
                lambda: any(m.text.strip() and "In line" not in m.text for m in slack.thread(channel, ts)) or None,
                limit_s=60,
            )
            first_run.send_signal(signal.SIGKILL)
            await first_run.wait()
            unanswered = await asyncio.to_thread(unfinished_rows, tmp_path / "data" / "history.sqlite3")
            assert unanswered == len(CHANNELS)

            env["BOT_MAX_GENERATING"] = "8"
            env["BOT_MAX_NEW_TOKENS"] = "24"
            second_run = await start_bot(env)
            try:
                for channel, ts, _ in asked:
                    await slack.wait_for(lambda c=channel, t=ts: answered_after_note(slack, c, t), limit_s=120)
                # Slack delivering the first message again (a retry after the restart) changes nothing.
                await slack.wait_ack(await slack.send_event(asked[0][2], retry_attempt=1))
                await asyncio.sleep(1.0)
                second_run.send_signal(signal.SIGTERM)
                _, stderr = await asyncio.wait_for(second_run.communicate(), timeout=60)
            finally:
                if second_run.returncode is None:
                    second_run.kill()
        finally:
            if first_run.returncode is None:
                first_run.kill()
                _, first_log = await first_run.communicate()
                print(first_log.decode()[-5000:])
        assert second_run.returncode == 0, stderr.decode()
        for channel, ts, _ in asked:
            texts = [message.text for message in slack.thread(channel, ts)]
            assert texts.count(NOTE) == 1, texts
            after = texts[texts.index(NOTE) + 1 :]
            assert len(after) == 1 and after[0].strip(), texts  # one answer, once
            assert INTERRUPTED_MARK.strip() not in after[0] and escape(RESTARTING) not in " ".join(texts)
    assert await asyncio.to_thread(unfinished_rows, tmp_path / "data" / "history.sqlite3") == 0


def answered_after_note(slack: SlackStandIn, channel: str, ts: str) -> bool | None:
    texts = [message.text for message in slack.thread(channel, ts)]
    return True if NOTE in texts and texts[-1] != NOTE else None


def unfinished_rows(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        (count,) = connection.execute("SELECT count(*) FROM inbox WHERE state != 'done'").fetchone()
    return int(count)
