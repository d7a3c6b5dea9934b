"""After a restart, the Discord adapter answers what an earlier run accepted and never answered, once.

The earlier run is simulated by writing its inbox rows straight into the SQLite file,
as ``Core.submit`` would have before the bot died; then the real adapter starts against
the stand-in with a core over that file, and the real bundled model answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from adapters.discord import DiscordAdapter, DiscordConfig
from bot.admin import AdminPolicy, NoAdminActions
from bot.admission import Admission, AdmissionLimits
from bot.commands import ASK_AGAIN, HELP_TEXT, RESTARTED_NOTE
from bot.core import Core
from bot.inbox import SQLiteInbox
from bot.manager import ConversationManager
from bot.store import MemoryHistoryStore
from bot.streaming import split_message
from bot.types import ConversationKey, Identity, Incoming
from tests.discord import payloads
from tests.discord.conftest import FAST, RunningBot, answer_in, answered
from tests.discord.payloads import CHANNEL_ID, TOKEN, USER_ID, mention
from tests.discord.standin import API, DiscordStandIn, Posted

pytestmark = pytest.mark.model

CHANNEL_KEY = ConversationKey("discord", str(CHANNEL_ID))
UNKNOWN_CHANNEL_ID = 1300000000000000077  # a channel deleted while the bot was down
QUESTION = "What is the capital of France?"
StartRun = Callable[..., Awaitable[RunningBot]]


class ChannelsStandIn(DiscordStandIn):
    """The stand-in with ``GET /channels/{id}``, which the adapter needs to find a channel before the gateway is up."""

    def _add_routes(self, app: web.Application) -> None:
        # Before the stand-in's own routes: its catch-all answers 404 to anything registered after it.
        app.router.add_get(f"{API}/channels/{{channel}}", self._get_channel, name="get_channel")
        super()._add_routes(app)

    async def _get_channel(self, request: web.Request) -> web.StreamResponse:
        guild = payloads.guild_create(self.extra_channels)
        known = [*guild["channels"], *guild["threads"], payloads.dm_channel()]
        found = [channel for channel in known if channel["id"] == request.match_info["channel"]]
        body = found[0] if found else {"message": "Unknown Channel", "code": 10003}
        # discord.py parses JSON only under exactly this Content-Type (no charset), as Discord sends it.
        return web.Response(
            body=json.dumps(body).encode(), status=200 if found else 404, content_type="application/json"
        )


@pytest.fixture
async def standin() -> AsyncIterator[DiscordStandIn]:
    """The stand-in that also answers ``GET /channels/{id}`` (overrides the conftest fixture)."""
    server = ChannelsStandIn()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """The history database file the inbox lives in, shared by every run of the bot in a test."""
    return tmp_path / "data" / "history.sqlite3"


def left_unanswered(database: Path, text: str, *, channel_id: int = CHANNEL_ID, age_s: float = 0.0) -> str:
    """Record a mention as an earlier run's ``submit`` did just before that run died; return its message id."""
    message_id = str(payloads.new_id())
    key = ConversationKey("discord", str(channel_id))
    message = Incoming(key, Identity("discord", str(USER_ID)), text, message_id=message_id)
    inbox = SQLiteInbox.open(database, clock=lambda: time.time() - age_s)
    try:
        assert inbox.accept(message, reply_to=f"{channel_id} {message_id}") is not None
    finally:
        inbox.close()
    return message_id


def unfinished(database: Path) -> list[str]:
    """The message ids of Discord rows still waiting in the inbox."""
    inbox = SQLiteInbox.open(database)
    try:
        return [str(left.message.message_id) for left in inbox.unfinished("discord")]
    finally:
        inbox.close()


@pytest.fixture
async def start(standin: DiscordStandIn, chat_manager: ConversationManager, database: Path) -> AsyncIterator[StartRun]:
    """``await start(window_s=...)``: the real adapter over a fresh core whose inbox is ``database``.

    Each call is a new run of the bot (a restart); the earlier runs are stopped first.
    """
    running: list[RunningBot] = []
    inboxes: list[SQLiteInbox] = []

    async def run(window_s: float = 900.0) -> RunningBot:
        for bot in running:
            if not bot.task.done():
                await bot.stopped()
        inboxes.append(SQLiteInbox.open(database))
        admission = Admission(AdmissionLimits(user_rate=None))
        core = Core(
            chat_manager,
            AdminPolicy({}),
            NoAdminActions(),
            10.0,
            admission,
            inbox=inboxes[-1],
            restart_window_s=window_s,
        )
        earlier = list(standin.sessions)  # a stopped run's session may linger until its socket ends
        config = DiscordConfig(**({"token": TOKEN, "api_base": standin.api_base} | FAST))
        stop = asyncio.Event()
        task = asyncio.create_task(DiscordAdapter(config).serve(core, stop))
        connected = asyncio.create_task(
            standin.wait_for(lambda: next((s for s in standin.sessions if s not in earlier), None))
        )
        await asyncio.wait({task, connected}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            connected.cancel()
            task.result()  # raises why the bot did not start
            raise AssertionError("serve returned before connecting")
        running.append(RunningBot(task, stop, connected.result(), core))
        return running[-1]

    yield run
    for bot in running:
        await bot.stopped()  # also re-raises anything that ended serve early
    for inbox in inboxes:
        inbox.close()
    pinging = [body for body in standin.message_bodies() if body.get("allowed_mentions") != {"parse": []}]
    assert not pinging, f"messages sent without AllowedMentions.none(): {pinging}"


def _mention(content: str, channel_id: int = CHANNEL_ID) -> payloads.Payload:
    return payloads.message_create(f"{mention()} {content}", channel_id=channel_id, mentions=(payloads.bot_user(),))


def _referencing(standin: DiscordStandIn, message_id: str) -> list[Posted]:
    """Every message the bot posted as a reply to ``message_id`` (an answer has one; a duplicate would add one)."""
    return [message for message in standin.posted if message.replying_to == message_id]


async def _idle(standin: DiscordStandIn, bot: RunningBot) -> None:
    """Wait until the core has nothing in flight."""
    await standin.wait_for(lambda: bot.core.in_flight == 0)


async def test_a_message_left_by_a_dead_run_is_answered_once_after_the_restart(
    standin: DiscordStandIn,
    start: StartRun,
    chat_manager: ConversationManager,
    history: MemoryHistoryStore,
    database: Path,
) -> None:
    question_id = left_unanswered(database, QUESTION)
    bot = await start()

    answer = await answer_in(standin, chat_manager, history, CHANNEL_KEY)
    notice, *reply = await answered(standin, question_id, [f"-# {RESTARTED_NOTE}", *split_message(answer, 2000)])
    await _idle(standin, bot)

    # The notice comes first and is what replies to the original message; nothing else was posted.
    assert standin.posted[0] is notice and notice.replying_to == question_id
    assert [message.id for message in standin.posted] == [notice.id, *(message.id for message in reply)]
    # The original may have been deleted meanwhile: the reference must not make the post fail.
    assert notice.bodies[0]["message_reference"].get("fail_if_not_exists") is False
    # Found over REST: the gateway (and its channel cache) is not up yet when resuming.
    assert len(standin.matching("GET", f"/channels/{CHANNEL_ID}")) == 1
    turns = await history.history(CHANNEL_KEY, 100)
    assert [(turn.role, turn.content) for turn in turns] == [("user", QUESTION), ("assistant", answer)]
    assert unfinished(database) == []

    # A second start finds nothing left: it looks nothing up and posts nothing.
    posted, lookups = len(standin.posted), len(standin.matching("GET", "/channels/"))
    again = await start()
    assert again.core.in_flight == 0  # resume runs before the gateway connects
    assert len(standin.posted) == posted and len(standin.matching("GET", "/channels/")) == lookups


async def test_a_message_past_the_restart_window_is_told_to_ask_again(
    standin: DiscordStandIn, start: StartRun, history: MemoryHistoryStore, database: Path
) -> None:
    question_id = left_unanswered(database, QUESTION, age_s=120.0)
    bot = await start(window_s=60.0)

    await standin.wait_for(lambda: standin.posted)
    await _idle(standin, bot)

    assert [(message.content, message.replying_to) for message in standin.posted] == [(f"-# {ASK_AGAIN}", question_id)]
    assert await history.history(CHANNEL_KEY, 100) == []  # the model was never asked
    assert unfinished(database) == []


async def test_a_message_in_a_vanished_channel_is_dropped_and_the_bot_keeps_serving(
    standin: DiscordStandIn,
    start: StartRun,
    chat_manager: ConversationManager,
    history: MemoryHistoryStore,
    database: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    left_unanswered(database, QUESTION, channel_id=UNKNOWN_CHANNEL_ID)
    bot = await start()

    # The lookup got Discord's 404, and the row is finished rather than retried at every start.
    assert len(standin.matching("GET", f"/channels/{UNKNOWN_CHANNEL_ID}")) == 1
    assert f"channel {UNKNOWN_CHANNEL_ID} is gone" in caplog.text
    assert unfinished(database) == []
    assert bot.core.in_flight == 0

    question = _mention(QUESTION)
    await standin.dispatch("MESSAGE_CREATE", question)
    answer = await answer_in(standin, chat_manager, history, CHANNEL_KEY)
    await answered(standin, question["id"], split_message(answer, 2000))
    await _idle(standin, bot)

    assert {message.channel_id for message in standin.posted} == {str(CHANNEL_ID)}
    assert await history.history(ConversationKey("discord", str(UNKNOWN_CHANNEL_ID)), 100) == []
    assert not bot.task.done()


async def test_a_redelivered_message_is_answered_once_also_after_a_restart(
    standin: DiscordStandIn, start: StartRun, chat_manager: ConversationManager, history: MemoryHistoryStore
) -> None:
    bot = await start()
    question = _mention(QUESTION)
    await standin.dispatch("MESSAGE_CREATE", question)
    await standin.dispatch("MESSAGE_CREATE", question)  # Discord delivers a message again, e.g. after a resume
    # A bare mention is answered at once, after the events before it were handled (discord.py keeps their order).
    bare = _mention("")
    await standin.dispatch("MESSAGE_CREATE", bare)

    answer = await answer_in(standin, chat_manager, history, CHANNEL_KEY)
    await answered(standin, question["id"], split_message(answer, 2000))
    await answered(standin, bare["id"], [HELP_TEXT])
    await _idle(standin, bot)
    assert len(_referencing(standin, question["id"])) == 1

    # The record is on disk: a run that never saw the message still answers it no more.
    bot = await start()
    await standin.dispatch("MESSAGE_CREATE", question)
    bare = _mention("")
    await standin.dispatch("MESSAGE_CREATE", bare)
    await answered(standin, bare["id"], [HELP_TEXT])
    await _idle(standin, bot)

    assert len(_referencing(standin, question["id"])) == 1
    turns = await history.history(CHANNEL_KEY, 100)
    assert [turn.role for turn in turns] == ["user", "assistant"]
