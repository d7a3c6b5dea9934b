"""Slack payloads to the core's neutral types, and the adapter's memory of events and threads."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.slack.state import BoundedMap, FollowedThreads
from adapters.slack.translate import (
    SlackMessage,
    channel_key,
    clean_text,
    is_addressed,
    to_command,
    to_message,
)
from bot.types import ConversationKey, Identity, Incoming

BOT = "UBOT0001"


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "message", "user": "U1", "text": "hi", "ts": "1.000100", "channel": "C1"}
    base.update(fields)
    return base


def never(channel: str, thread_ts: str) -> bool:
    return False


@pytest.mark.parametrize(
    ("slack", "plain"),
    [
        (f"<@{BOT}> what is 2 + 2?", "what is 2 + 2?"),
        (f"hey <@{BOT}|bot>  there", "hey there"),
        ("ask <@U2> or <@U3|alice>", "ask @U2 or @alice"),
        ("in <#C9|random> now", "in #random now"),
        ("<!here> and <!channel> and <!everyone>", "@here and @channel and @everyone"),
        ("<!subteam^S1|@devs> help", "@devs help"),
        ("see <https://example.com|the docs> or <https://x.y>", "see the docs (https://example.com) or https://x.y"),
        ("mail <mailto:a@b.c|a@b.c>", "mail a@b.c (mailto:a@b.c)"),
        ("a &lt; b &amp;&amp; c &gt; d", "a < b && c > d"),
        ("literal &amp;lt; stays", "literal &lt; stays"),
    ],
)
def test_clean_text(slack: str, plain: str) -> None:
    assert clean_text(slack, BOT) == plain


def test_a_top_level_message_is_answered_in_its_own_thread() -> None:
    message = to_message(event(text=f"<@{BOT}> hi"), BOT)
    assert message == SlackMessage(channel="C1", ts="1.000100", thread_ts="1.000100", user="U1", text="hi")
    assert message.key == ConversationKey("slack", "C1", "1.000100")
    assert message.message_id == "C1:1.000100"


def test_a_thread_reply_belongs_to_its_thread() -> None:
    message = to_message(event(ts="2.000200", thread_ts="1.000100"), BOT)
    assert message is not None
    assert message.thread_ts == "1.000100"
    assert message.key == ConversationKey("slack", "C1", "1.000100")


@pytest.mark.parametrize(
    "fields",
    [
        {"bot_id": "B2"},
        {"user": BOT},
        {"subtype": "bot_message"},
        {"subtype": "message_changed"},
        {"subtype": "message_deleted"},
        {"subtype": "channel_join"},
        {"user": None},
        {"ts": None},
    ],
)
def test_messages_that_are_not_new_human_messages_are_ignored(fields: dict[str, Any]) -> None:
    assert to_message(event(**fields), BOT) is None


@pytest.mark.parametrize("subtype", ["file_share", "thread_broadcast"])
def test_messages_with_files_or_broadcast_are_answered(subtype: str) -> None:
    assert to_message(event(subtype=subtype), BOT) is not None


def test_addressed_by_mention_dm_watched_channel_or_followed_thread() -> None:
    assert is_addressed(event(), mentioned=True, watched_channels=(), follows_thread=never)
    assert is_addressed(event(channel_type="im"), mentioned=False, watched_channels=(), follows_thread=never)
    assert is_addressed(event(), mentioned=False, watched_channels={"C1"}, follows_thread=never)
    followed = event(thread_ts="1.000000")
    assert is_addressed(
        followed, mentioned=False, watched_channels=(), follows_thread=lambda c, t: (c, t) == ("C1", "1.000000")
    )


def test_other_channel_messages_are_not_addressed() -> None:
    assert not is_addressed(event(), mentioned=False, watched_channels={"C2"}, follows_thread=never)
    in_thread = event(thread_ts="1.000000")
    assert not is_addressed(in_thread, mentioned=False, watched_channels=(), follows_thread=never)


def test_slash_command_payload() -> None:
    body = {"command": "/ASK", "text": "  is 1 &lt; 2? <!channel> ", "user_id": "U1", "channel_id": "C1"}
    assert to_command(body, BOT) == Incoming(
        ConversationKey("slack", "C1"), Identity("slack", "U1"), "is 1 < 2? @channel", command="ask"
    )
    assert channel_key("C1") == ConversationKey("slack", "C1")


def test_bounded_map_forgets_the_least_recently_used() -> None:
    recent: BoundedMap[str, int] = BoundedMap(capacity=2)
    recent["a"] = 1
    recent["b"] = 2
    assert recent.recall("a") == 1  # "a" is now the most recent
    assert recent.recall("z") is None
    recent["c"] = 3
    assert "b" not in recent and "a" in recent and "c" in recent
    assert len(recent) == 2
    with pytest.raises(ValueError, match="capacity"):
        BoundedMap(capacity=0)


def test_followed_threads_keep_the_conversation_they_continue() -> None:
    threads = FollowedThreads()
    key = channel_key("C1")
    threads["C1", "5.0"] = key
    assert threads.follows("C1", "5.0")
    assert threads.recall(("C1", "5.0")) == key
    assert not threads.follows("C2", "5.0")
    assert threads.recall(("C1", "6.0")) is None
