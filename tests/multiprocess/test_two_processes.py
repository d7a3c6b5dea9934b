"""Two `bot run` processes of one Slack app, one PostgreSQL and one llama.cpp server (the issue's must-show).

The stand-in spreads 200 messages of 20 conversations over both Socket Mode connections (consecutive
messages of a conversation reach different processes) and delivers some of them again, to either process.
Every message is answered once, each conversation in order, and its history in PostgreSQL is the
conversation as sent, each message followed by the answer Slack shows.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import psycopg
import pytest

from adapters.slack.mrkdwn import to_mrkdwn
from entry.llama_server import llama_server
from tests.multiprocess.conversations import Conversation, Sender, all_answered, answer_started_at, people, send_all
from tests.multiprocess.processes import BotProcess, base_env, bots, while_running
from tests.slack.standin import APP_TOKEN, BOT_TOKEN, SlackStandIn

pytestmark = pytest.mark.model

CONVERSATIONS = 20
MESSAGES = 10
ANSWER_LIMIT_S = 300.0


def bot_settings(
    model: Path, slack: SlackStandIn, channels: list[str], database_url: str, engine_url: str
) -> dict[str, str]:
    """What both processes share: the stand-in, one database, one model server; short replies, no rate limit."""
    return base_env(
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_APP_TOKEN=APP_TOKEN,
        SLACK_API_URL=slack.api_url,
        SLACK_CHANNELS=",".join(channels),
        BOT_DATABASE_URL=database_url,
        BOT_ENGINE_URL=engine_url,
        BOT_MODEL_PATH=str(model),
        BOT_CONTEXT_SIZE="1024",
        BOT_MAX_NEW_TOKENS="8",
        BOT_USER_RATE="",
        # Every conversation has messages waiting behind its current one: none may get a busy answer.
        BOT_MAX_WAITING=str(CONVERSATIONS * MESSAGES),
        # Slack's pace is not what this test is about (the stand-in has no limit): posts and edits go out at once.
        SLACK_EDITS_PER_MINUTE="1200",
    )


def history(database_url: str, conversation: Conversation) -> list[tuple[str, str]]:
    """The conversation's stored turns (role, content), oldest first, read straight from PostgreSQL."""
    query = "SELECT role, content FROM messages WHERE platform = 'slack' AND channel = %s AND thread = %s ORDER BY id"
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(query, (conversation.channel, conversation.thread_ts)).fetchall()
    return [(str(role), str(content)) for role, content in rows]


def unfinished(database_url: str) -> tuple[int, int]:
    """(messages recorded in the inbox, of which not done)."""
    with psycopg.connect(database_url) as connection:
        row = connection.execute("SELECT count(*), count(*) FILTER (WHERE state <> 'done') FROM inbox").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def diagnostics(processes: list[BotProcess]) -> str:
    """Each process's stderr tail."""
    return "\n".join(process.tail() for process in processes)


# About 3 minutes on 2 cores: the model server answers one request at a time (SLACK_EDITS_PER_MINUTE is raised
# above Slack's own pace, which the stand-in does not impose).
@pytest.mark.timeout(480)
async def test_two_processes_answer_200_messages_once_each_in_order(
    bundled_model: Path, postgres_url: str, tmp_path: Path
) -> None:
    await two_processes(bundled_model, postgres_url, tmp_path, CONVERSATIONS, MESSAGES)


async def two_processes(model: Path, database_url: str, workdir: Path, count: int, messages: int) -> None:
    """``count`` conversations of ``messages`` each over two `bot run` processes, checked as the module says."""
    conversations = [Conversation(number) for number in range(count)]
    repeated = frozenset((number, min(messages - 1, 3 + number % 5)) for number in range(0, count, 4))
    slack = SlackStandIn()
    people(conversations).install(slack)
    async with slack, llama_server(model, n_ctx=1024) as server:
        channels = [conversation.channel for conversation in conversations]
        env = bot_settings(model, slack, channels, database_url, server.url)
        async with bots(["bot-a", "bot-b"], env, workdir) as processes:
            try:
                for process in processes:
                    await process.wait_ready()
                sender = Sender(slack, await slack.wait_connections(2), repeated)
                await while_running(processes, send_all(sender, conversations, messages))
                answers = slack.wait_for(lambda: all_answered(slack, conversations, messages), ANSWER_LIMIT_S)
                await while_running(processes, answers)
                answered = await accounted(processes, count * messages)
                exits = [await process.stop() for process in processes]
            except BaseException:
                print(diagnostics(processes), "\nWeb API calls:", dict(slack.call_counts()))
                raise
            logs = diagnostics(processes)

    assert exits == [0, 0], logs
    # Each process answered its own share (its /metrics counts only what it answered), together every message.
    assert all(counts.get("answered", 0) > 0 for counts in answered), (answered, logs)
    assert sum(counts.get("answered", 0) for counts in answered) == count * messages, (answered, logs)
    assert sender.repeats_sent == 2 * len(repeated)
    assert await asyncio.to_thread(unfinished, database_url) == (count * messages, 0)
    for conversation in conversations:
        await asyncio.to_thread(check_conversation, slack, database_url, conversation, messages)


async def accounted(processes: list[BotProcess], expected: int, limit_s: float = 10.0) -> list[dict[str, float]]:
    """Each process's answered counts once they add up to ``expected`` (a reply is counted just after it shows)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while True:
        answered = [await process.answered() for process in processes]
        if sum(counts.get("answered", 0) for counts in answered) >= expected or loop.time() > deadline:
            return answered
        await asyncio.sleep(0.2)


def check_conversation(slack: SlackStandIn, database_url: str, conversation: Conversation, messages: int) -> None:
    """One answer per message, none repeated; history = each message in send order, then its answer as shown."""
    shown = conversation.answers(slack)
    everything = slack.thread(conversation.channel, conversation.thread_ts)
    assert len(shown) == len(everything) == messages, [m.texts for m in everything]
    # In order: an answer starts only once the previous one is complete.
    for earlier, later in itertools.pairwise(shown):
        assert earlier.shown_at[-1] <= answer_started_at(later), (earlier.texts, later.texts)
    turns = history(database_url, conversation)
    assert [role for role, _ in turns] == ["user", "assistant"] * messages, turns
    assert [content for _, content in turns[::2]] == [text for _, text in conversation.sent], turns
    assert [to_mrkdwn(content) for _, content in turns[1::2]] == [m.text for m in shown], turns
