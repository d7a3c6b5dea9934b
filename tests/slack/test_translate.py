"""Slack payloads to the core's neutral types, and the adapter's memory of events and threads."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from adapters.handover import HandOver
from adapters.slack.catchup import QUESTION, question_modal, shortcut_thread, submitted_question, to_said
from adapters.slack.files import FileDownloadError, SlackFile, attachments, download, file_hosts, files_of, origin
from adapters.slack.people import People, display_name
from adapters.slack.state import BoundedMap, FollowedThreads
from adapters.slack.translate import (
    COMMANDS,
    SlackMessage,
    channel_key,
    clean_text,
    is_addressed,
    is_mention_copy,
    mentioned_users,
    to_command,
    to_message,
)
from bot.types import ConversationKey, Identity, Incoming, Said
from tests.faults import Fault
from tests.slack.standin import BOT_TOKEN, SlackStandIn
from tests.slack.workspace import Download, Workspace

BOT = "UBOT0001"
SLACK_API = "https://slack.com/api/"


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
        ("ask <@U2> or <@U3|alice>", "ask @someone or @alice"),
        ("in <#C9|random> now", "in #random now"),
        ("in <#C0123ABC|> or <#C0123ABC>", "in #channel or #channel"),
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


def test_mentions_read_as_display_names_never_ids() -> None:
    names = {"U2": "Bob", "U3": "Carol\n⟦Eve⟧"}
    text = f"<@{BOT}> ask <@U2>, <@U3|carol> or <@U4>"
    assert mentioned_users(text, BOT) == {"U2", "U3", "U4"}
    # A display name wins over the legacy handle in a label; a name is one line without the bot's brackets.
    assert clean_text(text, BOT, names) == "ask @Bob, @Carol [Eve] or @someone"


def test_a_message_with_files_keeps_them_for_the_core() -> None:
    shared = [
        {
            "name": "a.txt",
            "mimetype": "text/plain",
            "size": 5,
            "url_private": "https://f/a",
            "url_private_download": "https://f/a?dl",
        },
        {"name": "gone.txt", "mode": "tombstone"},
        "not a file",
    ]
    message = to_message(event(subtype="file_share", files=shared, text=""), BOT)
    assert message is not None and message.text == ""
    assert message.files == (
        SlackFile("a.txt", 5, "text/plain", "https://f/a?dl"),
        SlackFile("gone.txt", None, None, None),
    )
    shared_here = attachments(message.files, "xoxb-secret", api_url=SLACK_API)
    assert [(a.name, a.size, a.content_type) for a in shared_here] == [
        ("a.txt", 5, "text/plain"),
        ("gone.txt", None, None),
    ]
    assert "xoxb-secret" not in repr(shared_here)


async def test_a_file_that_cannot_be_downloaded_says_why_without_the_token() -> None:
    with pytest.raises(FileDownloadError, match="does not offer it"):
        gone = SlackFile("gone.txt", None, None, None)
        await download(gone, 10, bot_token="xoxb-secret", hosts=file_hosts(SLACK_API))
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        api = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(FileDownloadError) as raised:
        file = SlackFile("a.txt", 5, "text/plain", f"{api}/files/F1/a.txt")
        await download(file, 10, bot_token="xoxb-secret", hosts=file_hosts(f"{api}/api/"))
    assert "xoxb-secret" not in str(raised.value) and raised.value.__cause__ is None


@pytest.mark.parametrize(
    ("url", "trusted"),
    [
        ("https://files.slack.com/files-pri/T1-F1/a.txt?download=1", True),
        ("https://FILES.slack.com:443/files-pri/T1-F1/a.txt", True),
        ("https://slack.com/files-pri/T1-F1/a.txt", True),  # the Web API's own host
        ("http://files.slack.com/files-pri/T1-F1/a.txt", False),  # the token never goes unencrypted
        ("https://files.slack.com.evil.test/a.txt", False),
        ("https://evil.test/files.slack.com/a.txt", False),
        ("https://files.slack.com@evil.test/a.txt", False),
        ("https://files.slack.com:8443/a.txt", False),
        ("https://files.slack.com:port/a.txt", False),
        ("ftp://files.slack.com/a.txt", False),
    ],
)
def test_only_slack_file_hosts_are_trusted_with_the_token(url: str, trusted: bool) -> None:
    assert (origin(url) in file_hosts(SLACK_API)) is trusted


async def test_the_token_goes_to_slack_file_hosts_only_and_external_files_are_not_fetched() -> None:
    workspace, standin = Workspace(), SlackStandIn()
    workspace.install(standin)
    async with standin:
        workspace.base_url = standin.base_url
        shared = [
            workspace.file("F1", "hosted.txt", "text/plain", b"hosted"),
            {**workspace.file("F2", "drive.txt", "text/plain", b"x"), "is_external": True},
            {**workspace.file("F3", "box.txt", "text/plain", b"x"), "mode": "external"},
        ]
        files = files_of({"files": shared})
        here = attachments(files, BOT_TOKEN, api_url=standin.api_url)
        elsewhere = attachments(files[:1], BOT_TOKEN, api_url=SLACK_API)  # the event's host is not the API's
        assert await here[0].read(100) == b"hosted"
        for refused in (*here[1:], *elsewhere):
            with pytest.raises(FileDownloadError) as raised:
                await refused.read(100)
            assert "127.0.0.1" not in str(raised.value) and BOT_TOKEN not in str(raised.value)

    assert workspace.downloads == [Download("F1", authorized=True)]
    assert not any(call.method for call in standin.calls), "nothing else was asked of Slack"


async def test_a_dropped_name_lookup_reads_as_someone_and_is_logged_without_the_token(
    standin: SlackStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    client = AsyncWebClient(token=BOT_TOKEN, base_url=standin.api_url, retry_handlers=[])
    # aiohttp repeats a GET once itself, then raises ServerDisconnectedError, which is no OSError.
    standin.fail("users.info", Fault.DROPPED, times=None)
    with caplog.at_level(logging.WARNING, logger="adapters.slack.people"):
        assert await People(client).name("U1") == "someone"
    assert {call.method for call in standin.calls} == {"users.info"}
    assert "Disconnected" in caplog.text and BOT_TOKEN not in caplog.text


def test_the_message_copy_of_a_mention_is_known_from_its_twin() -> None:
    mention = f"<@{BOT}> summarize"
    assert is_mention_copy(event(text=mention, channel_type="channel"), BOT)
    assert not is_mention_copy(event(text=mention, type="app_mention"), BOT)
    assert not is_mention_copy(event(text=mention, channel_type="im"), BOT), "a DM has no app_mention"
    assert not is_mention_copy(event(text="<@U2> summarize", channel_type="channel"), BOT)


@pytest.mark.parametrize(
    ("user", "name"),
    [
        ({"name": "al", "real_name": "Al R", "profile": {"display_name": "Alice", "real_name": "Alice R"}}, "Alice"),
        ({"name": "al", "profile": {"display_name": " ", "real_name": "Alice R"}}, "Alice R"),
        ({"name": "al", "real_name": "Al R", "profile": {}}, "Al R"),
        ({"name": "al"}, "al"),
        ({}, "someone"),
    ],
)
def test_display_name_falls_back_as_slack_does(user: dict[str, Any], name: str) -> None:
    assert display_name(user) == name


def test_a_thread_message_as_the_model_reads_it() -> None:
    names = {"U1": "Alice", BOT: "Team Bot"}
    assert to_said({"user": "U1", "text": "hi <@U1>"}, names, BOT) == Said("Alice", "hi @Alice")
    assert to_said({"user": BOT, "bot_id": "B1", "text": "an answer"}, names, BOT) == Said("Team Bot", "an answer")
    other_bot = {"bot_id": "B2", "username": "CI", "text": "build green"}
    assert to_said(other_bot, names, BOT) == Said("CI", "build green")
    shared = {"user": "U9", "text": "", "files": [{"name": "log.txt"}]}
    assert to_said(shared, names, BOT) == Said("someone", "[shared files: log.txt]")
    assert to_said({"user": "U1", "text": "  "}, names, BOT) is None


def test_shortcuts_and_the_question_modal_find_their_thread() -> None:
    in_thread = {"channel": {"id": "C1"}, "message": {"ts": "2.0", "thread_ts": "1.0"}}
    top_level = {"channel": {"id": "C1"}, "message": {"ts": "3.0"}}
    assert shortcut_thread(in_thread) == ("C1", "1.0")
    assert shortcut_thread(top_level) == ("C1", "3.0")
    view = question_modal("C1", "1.0").to_dict()
    view["state"] = {"values": {QUESTION: {QUESTION: {"type": "plain_text_input", "value": " Why? "}}}}
    assert submitted_question(view) == ("C1", "1.0", "Why?")
    assert json.loads(view["private_metadata"]) == {"channel": "C1", "thread_ts": "1.0"}
    assert submitted_question({"private_metadata": "not json"}) == ("", "", "")


async def test_messages_are_handed_over_in_arrival_order_per_conversation() -> None:
    order, handed, slow = HandOver(), [], asyncio.Event()

    async def prepare(name: str, wait: asyncio.Event | None = None) -> str:
        if wait is not None:
            await wait.wait()
        return name

    first = asyncio.create_task(order.hand_over("k", prepare("first", slow), handed.append))
    second = asyncio.create_task(order.hand_over("k", prepare("second"), handed.append))
    other = asyncio.create_task(order.hand_over("other", prepare("other"), handed.append))
    await other  # another conversation does not wait for a slow one
    assert handed == ["other"] and not second.done()
    slow.set()
    await asyncio.gather(first, second)
    assert handed == ["other", "first", "second"]
    assert not order._locks, "nothing kept once every message was handed over"


def test_persona_is_a_slash_command() -> None:
    assert "/persona" in COMMANDS


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
    body = {"command": "/ASK", "text": "  is 1 &lt; 2? <!channel> <@U2|bob>", "user_id": "U1", "channel_id": "C1"}
    incoming = to_command(body, BOT, {"U2": "Bob"}, author="Alice")
    assert incoming == Incoming(
        ConversationKey("slack", "C1"), Identity("slack", "U1"), "is 1 < 2? @channel @Bob", command="ask"
    )
    assert incoming.author.name == "Alice"
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
