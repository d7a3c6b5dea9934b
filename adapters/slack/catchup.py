"""Catch-up on a Slack thread: "Summarize this thread" and "Ask about this" message shortcuts, and a typed "summarize".

The thread is read through ``conversations.replies`` with its authors' display names (the bot's own
messages included) and handed to the core in one ``submit``; the core fits it into the context and
answers in the thread, which the bot then follows.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import InputBlock, PlainTextInputElement
from slack_sdk.models.views import View
from slack_sdk.web.async_client import AsyncWebClient

from adapters.handover import HandOver
from adapters.slack.people import People, api_error
from adapters.slack.state import SharedThreads
from adapters.slack.surfaces import ThreadSurface
from adapters.slack.translate import PLATFORM, clean_text, mentioned_users
from bot.attribution import UNKNOWN, with_files
from bot.core import Core
from bot.surface import Pacing
from bot.threads import ThreadMapError
from bot.types import ConversationKey, Identity, Incoming, Said

log = logging.getLogger(__name__)

SUMMARIZE = "summarize_thread"
ASK = "ask_about_this"
QUESTION = "question"  # the modal's input block and element
PAGE_SIZE = 200  # messages per conversations.replies call (Slack's most is 1000; it suggests no more than 200)
PAGES_READ = 50  # a thread longer than this many pages is read up to here: its oldest part, then cut
CANNOT_READ = ("not_in_channel", "channel_not_found")
INVITE_ME = "I can't read that thread: I'm not a member of the channel. Invite me with `/invite @{bot}` and try again."
FAILED_READ = "I couldn't read that thread ({error}). Please try again later."


class CannotRead(Exception):
    """Slack refused the thread; ``error`` is its error code."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


async def read_thread(
    client: AsyncWebClient,
    people: People,
    channel: str,
    thread_ts: str,
    *,
    limit: int,
    bot_user_id: str,
    before: str | None = None,
) -> tuple[Said, ...]:
    """The thread's newest ``limit`` messages, oldest first, by display name; raises ``CannotRead``.

    ``before``: only messages older than this ts (the typed request that asked for the catch-up is no part of it).
    """
    kept: deque[dict[str, Any]] = deque(maxlen=limit)
    seen: set[str] = set()
    try:
        pages = 0
        # latest=None is left out of the call; with a ts, Slack stops before it (checked here again by _older).
        replies = await client.conversations_replies(
            channel=channel, ts=thread_ts, limit=PAGE_SIZE, latest=before, inclusive=False
        )
        async for page in replies:
            for message in page.get("messages") or ():
                # Slack repeats the thread's first message at the top of each page.
                if isinstance(message, dict) and message.get("ts") not in seen and _older(message, before):
                    seen.add(str(message.get("ts")))
                    kept.append(message)
            pages += 1
            if pages >= PAGES_READ:
                break
    except SlackApiError as error:
        raise CannotRead(api_error(error)) from None
    users = {str(m["user"]) for m in kept if m.get("user")}
    for message in kept:
        users |= mentioned_users(str(message.get("text") or ""), bot_user_id)
    names = await people.names(users)
    return tuple(said for message in kept if (said := to_said(message, names, bot_user_id)) is not None)


def _older(message: Mapping[str, Any], before: str | None) -> bool:
    """Whether ``message`` came before the ts ``before`` (always, without one); Slack's ts are decimal seconds."""
    try:
        return before is None or float(str(message.get("ts"))) < float(before)
    except ValueError:
        return True  # a ts Slack never sends: kept, as without ``before``


def to_said(message: Mapping[str, Any], names: Mapping[str, str], bot_user_id: str) -> Said | None:
    """One message of a thread as the model reads it (its files named), or ``None`` if it says nothing."""
    text = clean_text(str(message.get("text") or ""), bot_user_id, names)
    shared = [str(f.get("name") or "a file") for f in message.get("files") or () if isinstance(f, Mapping)]
    text = with_files(text, shared)
    if not text:
        return None
    user = message.get("user")
    profile = message.get("bot_profile") or {}
    author = names.get(str(user)) if user else message.get("username") or profile.get("name")
    return Said(str(author or UNKNOWN), text)


def question_modal(channel: str, thread_ts: str) -> View:
    """The "Ask about this" dialog; which thread it asks about travels in its private metadata."""
    return View(
        type="modal",
        callback_id=ASK,
        title="Ask about this",
        submit="Ask",
        close="Cancel",
        private_metadata=json.dumps({"channel": channel, "thread_ts": thread_ts}),
        blocks=[
            InputBlock(
                block_id=QUESTION,
                label="What do you want to know about this thread?",
                element=PlainTextInputElement(action_id=QUESTION, multiline=True, max_length=2000),
            )
        ],
    )


def shortcut_thread(body: Mapping[str, Any]) -> tuple[str, str]:
    """(channel, thread ts) of a message shortcut: the message's thread, or the thread it starts."""
    message = body.get("message") or {}
    channel = str((body.get("channel") or {}).get("id") or "")
    return channel, str(message.get("thread_ts") or message.get("ts") or body.get("message_ts") or "")


def submitted_question(view: Mapping[str, Any]) -> tuple[str, str, str]:
    """(channel, thread ts, question) of an "Ask about this" submission."""
    try:
        where = json.loads(str(view.get("private_metadata") or "{}"))
    except json.JSONDecodeError:
        where = {}
    value = (((view.get("state") or {}).get("values") or {}).get(QUESTION) or {}).get(QUESTION) or {}
    return str(where.get("channel") or ""), str(where.get("thread_ts") or ""), str(value.get("value") or "").strip()


class CatchUp:
    """The catch-up listeners; Slack's 3 s acknowledgement comes first, the thread is read after it (Bolt's lazy)."""

    def __init__(
        self,
        core: Core,
        client: AsyncWebClient,
        people: People,
        order: HandOver,
        threads: SharedThreads,
        pacing: Pacing,
        *,
        bot_user_id: str,
        max_messages: int,
    ) -> None:
        self._core, self._client, self._people, self._order = core, client, people, order
        self._threads, self._pacing = threads, pacing
        self._bot_user_id, self._limit = bot_user_id, max_messages

    def register(self, app: AsyncApp) -> None:
        """Add the shortcut and modal listeners to ``app``."""
        app.message_shortcut(SUMMARIZE)(ack=_acknowledge, lazy=[self._on_summarize])
        app.message_shortcut(ASK)(self._on_ask)
        app.view_submission(ASK)(ack=_acknowledge, lazy=[self._on_question])

    async def _on_summarize(self, body: dict[str, Any]) -> None:
        channel, thread_ts = shortcut_thread(body)
        await self.catch_up(channel, thread_ts, str(body["user"]["id"]), "")

    async def _on_ask(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        # The trigger id expires 3 s after the click: the modal opens before anything else.
        await ack()
        channel, thread_ts = shortcut_thread(body)
        await self._client.views_open(trigger_id=body["trigger_id"], view=question_modal(channel, thread_ts))

    async def _on_question(self, body: dict[str, Any], view: dict[str, Any]) -> None:
        channel, thread_ts, question = submitted_question(view)
        if channel and thread_ts and question:
            await self.catch_up(channel, thread_ts, str(body["user"]["id"]), question)

    async def catch_up(
        self,
        channel: str,
        thread_ts: str,
        user: str,
        question: str,
        message_id: str | None = None,
        *,
        before: str | None = None,
    ) -> None:
        """Read the thread and hand it to the core with ``question`` (empty: a summary); answer in the thread.

        ``before``: the ts of a typed request, read only up to it. A thread the bot cannot read gets the
        asker a message only they see, saying what to do.
        """
        key = await self._conversation(channel, thread_ts)

        async def prepare() -> Incoming | CannotRead:
            try:
                said = await read_thread(
                    self._client,
                    self._people,
                    channel,
                    thread_ts,
                    limit=self._limit,
                    bot_user_id=self._bot_user_id,
                    before=before,
                )
            except CannotRead as error:
                return error
            who = Identity(PLATFORM, user, name=await self._people.name(user))
            command = None if question else "summarize"
            return Incoming(key, who, question, command=command, message_id=message_id, context=said)

        def submit(prepared: Incoming | CannotRead) -> CannotRead | None:
            if isinstance(prepared, CannotRead):
                return prepared
            self._core.submit(prepared, ThreadSurface(self._client, channel, thread_ts, self._pacing))
            self._threads.remember(channel, thread_ts, key)  # replies in the thread go on with this conversation
            return None

        refused = await self._order.hand_over(key, prepare(), submit)
        if refused is not None:
            await self._tell(channel, user, refused.error)
        else:
            await self._threads.follow(channel, thread_ts, key)  # and so do those other processes receive

    async def _conversation(self, channel: str, thread_ts: str) -> ConversationKey:
        """The conversation a followed thread continues (perhaps followed by another process), else its own."""
        try:
            followed = await self._threads.lookup(channel, thread_ts)
        except ThreadMapError as error:  # the catch-up is acknowledged already: answered in the thread's own
            log.warning("Cannot tell whether thread %s in %s is followed: %s", thread_ts, channel, error)
            followed = None
        return followed or ConversationKey(PLATFORM, channel, thread_ts)

    async def _tell(self, channel: str, user: str, error: str) -> None:
        log.info("Could not read a thread in %s for a catch-up: %s", channel, error)
        bot = await self._people.name(self._bot_user_id)
        text = INVITE_ME.format(bot=bot) if error in CANNOT_READ else FAILED_READ.format(error=error)
        try:
            await self._client.chat_postEphemeral(channel=channel, user=user, text=text)
        except SlackApiError:
            # Not even an ephemeral message may reach a channel the bot is not in: a direct message does.
            try:
                await self._client.chat_postMessage(channel=user, text=text)
            except SlackApiError as error:
                log.warning("Could not tell %s why a catch-up failed: %s", user, api_error(error))


async def _acknowledge(ack: AsyncAck) -> None:
    await ack()
