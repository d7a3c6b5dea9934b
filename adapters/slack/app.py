"""The Slack adapter: a translator from Slack events and slash commands to ``Core.submit`` calls.

The core's output reaches Slack through the surfaces in ``surfaces.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from adapters.handover import HandOver
from adapters.slack.assistant import SlackAssistant
from adapters.slack.catchup import CatchUp
from adapters.slack.connection import SlackConfig, connect, identify, web_client
from adapters.slack.files import attachments
from adapters.slack.people import People
from adapters.slack.state import SharedThreads
from adapters.slack.surfaces import CommandSurface, ThreadSurface
from adapters.slack.translate import (
    COMMANDS,
    PLATFORM,
    SlackMessage,
    channel_key,
    clean_text,
    is_addressed,
    is_mention_copy,
    mentioned_users,
    to_command,
    to_message,
)
from bot.attribution import is_summary_request
from bot.core import Core
from bot.inbox import Unfinished
from bot.streaming import EditBudget
from bot.surface import Pacing
from bot.threads import ThreadMapError
from bot.types import ConversationKey, Identity, Incoming

log = logging.getLogger(__name__)


class SlackAdapter:
    """Answers on Slack through a core until told to stop."""

    platform = PLATFORM

    def __init__(self, config: SlackConfig) -> None:
        self.config = config
        # Set once the adapter takes events (tests and supervisors wait on it).
        self.ready = asyncio.Event()

    async def serve(self, core: Core, stop: asyncio.Event) -> None:
        """Answer until ``stop`` is set; then stop taking events, disconnect and ``core.drain()``.

        Raises ``SlackStartupError`` when Slack rejects a token.
        """
        config = self.config
        assert config.app_token if config.mode == "socket" else config.signing_secret, "the entry point checks tokens"
        client = web_client(config)
        bot_user_id = await identify(client)
        listeners = Listeners(core, client, bot_user_id, config)
        # Messages an earlier run accepted but never answered go first, before new events arrive.
        await core.resume(PLATFORM, listeners.surface_for)
        close = await connect(listeners.build_app(), client, config)
        log.info("Slack adapter ready (%s mode) as %s", config.mode, bot_user_id)
        core.health.connected(PLATFORM, True)  # the socket is open or the HTTP server listens
        self.ready.set()
        try:
            await stop.wait()
        finally:
            listeners.stopping = True
            try:
                # Closing before the answers finish lets Slack hand new events to other connections at once.
                await close()
            finally:
                core.health.connected(PLATFORM, False)
                await core.drain()
                log.info("Slack adapter stopped")


class Listeners:
    """The Bolt listeners: which events and commands reach the core, each exactly once."""

    def __init__(self, core: Core, client: AsyncWebClient, bot_user_id: str, config: SlackConfig) -> None:
        self.stopping = False
        self._core = core
        self._client = client
        self._bot_user_id = bot_user_id
        self._config = config
        # Followed threads are shared with this app's other processes through the history database.
        self._threads = SharedThreads(core.threads)
        budget = EditBudget(config.edit_interval_s, config.edits_per_minute / 60)
        self._pacing = Pacing(budget, config.message_limit)
        self._people = People(client)
        self._order = HandOver()
        self._catchup = CatchUp(
            core,
            client,
            self._people,
            self._order,
            self._threads,
            self._pacing,
            bot_user_id=bot_user_id,
            max_messages=config.catchup_max_messages,
        )

    def build_app(self) -> AsyncApp:
        """The Bolt app with this adapter's middleware, event and command listeners."""
        app = AsyncApp(
            client=self._client,
            signing_secret=self._config.signing_secret or "",
            # Socket Mode has no request signature; HTTP mode always verifies it.
            request_verification_enabled=self._config.mode == "http",
            # Acknowledge an event only after its listener ran: by then the core has recorded the message.
            process_before_response=True,
            logger=logging.getLogger("adapters.slack.bolt"),
        )
        app.use(self._refuse_when_stopping)
        # The assistant view's threads and feedback buttons (its middleware takes those messages before _on_event).
        SlackAssistant(self._core, self._client, self._pacing, self._config, self.translate, self._order).register(app)
        app.event("app_mention")(self._on_event)
        app.event("message")(self._on_event)
        for name in COMMANDS:
            app.command(name)(self._on_command)
        self._catchup.register(app)
        return app

    async def _refuse_when_stopping(
        self, body: dict[str, Any], next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        # An event not acknowledged is delivered again once a running bot can take it; a slash command
        # never is, so it reaches the core, which tells the user the bot is stopping.
        if (self.stopping or not self._core.accepting) and "command" not in body:
            return BoltResponse(status=503, body="stopping")
        return await next()

    async def _on_event(self, event: dict[str, Any]) -> None:
        message = to_message(event, self._bot_user_id)
        if message is None:
            return
        # A thread another process answered (a shared map's ThreadMapError leaves the event for Slack to retry,
        # unless the message is for the bot anyway).
        followed = await self._followed(message, event)
        addressed = followed is not None or self._addressed(event)
        personal = event.get("type") == "app_mention" or event.get("channel_type") == "im"
        # A file without a caption in a watched channel or thread is no question; a bare mention or DM gets help.
        if not addressed or not (message.text or personal):
            return
        if message.thread_ts != message.ts and is_summary_request(message.text):
            # "@bot summarize" in a thread: as the "Summarize this thread" shortcut, once. Its app_mention
            # reads the thread; the message copy would read it again only for the inbox to drop it at submit.
            if not is_mention_copy(event, self._bot_user_id):
                await self._catchup.catch_up(
                    message.channel, message.thread_ts, message.user, "", message.message_id, before=message.ts
                )
            return
        # A followed thread goes on with its conversation (a /ask thread: the channel's); follow this one from now on.
        key = followed or message.key
        share = self._threads.remember(message.channel, message.thread_ts, key)
        surface = ThreadSurface(self._client, message.channel, message.thread_ts, self._pacing)
        # Recorded before this listener returns, so before Bolt acknowledges the event (process_before_response);
        # the core's inbox answers the message once, whether a retry or app_mention + message repeat it.
        # Names are looked up first, yet messages of one conversation reach the core in the order they came.
        await self._order.hand_over(
            key,
            self._prepared(event, message, key, share=share),
            lambda incoming: self._core.submit(incoming, surface, reply_to=f"{message.channel} {message.thread_ts}"),
        )

    def _addressed(self, event: dict[str, Any]) -> bool:
        """For the bot whatever threads it follows: a mention, a DM, a watched channel."""
        mentioned = event.get("type") == "app_mention"
        channels = self._config.channels
        return is_addressed(event, mentioned=mentioned, watched_channels=channels, follows_thread=lambda *_: False)

    async def _followed(self, message: SlackMessage, event: dict[str, Any]) -> ConversationKey | None:
        """The conversation a reply's thread continues, if followed; a top-level message starts its own thread."""
        if message.thread_ts == message.ts:
            return self._threads.recall(message.channel, message.thread_ts)
        try:
            return await self._threads.lookup(message.channel, message.thread_ts)
        except ThreadMapError as error:
            if not self._addressed(event):
                raise  # following the thread is the only reason to answer: Slack delivers it again
            log.warning("Answering in %s without the shared thread map: %s", message.channel, error)
            return self._threads.recall(message.channel, message.thread_ts)

    async def _prepared(
        self, event: dict[str, Any], message: SlackMessage, key: ConversationKey, *, share: bool
    ) -> Incoming:
        """The message for the core, once the other processes know its thread (when ``share``: new here)."""
        if share:  # a ThreadMapError leaves the event unacknowledged, for Slack to deliver again
            try:
                await self._threads.share(message.channel, message.thread_ts, key)
            except ThreadMapError as error:
                if not self._addressed(event):
                    raise
                log.warning("Answering in %s; other processes will not follow its thread: %s", message.channel, error)
        return await self._named(event, message, key)

    async def translate(self, event: dict[str, Any]) -> Incoming | None:
        """A message event as the core's ``Incoming``, with display names and files (also for the assistant view)."""
        message = to_message(event, self._bot_user_id)
        return None if message is None else await self._named(event, message, message.key)

    async def _named(self, event: dict[str, Any], message: SlackMessage, key: ConversationKey) -> Incoming:
        """The message for the core with its author's and mentioned people's display names, never their ids."""
        mentioned = mentioned_users(str(event.get("text") or ""), self._bot_user_id)
        names = await self._people.names({message.user, *mentioned})
        text = clean_text(str(event.get("text") or ""), self._bot_user_id, names)
        files = attachments(message.files, self._config.bot_token, api_url=self._config.api_url)
        who = Identity(PLATFORM, message.user, name=names[message.user])
        return Incoming(key, who, text, message_id=message.message_id, attachments=files)

    async def surface_for(self, left: Unfinished) -> ThreadSurface | None:
        """Where to answer a message an earlier run accepted: the thread it was answered in."""
        channel, _, thread_ts = (left.reply_to or "").partition(" ")
        if not channel or not thread_ts:
            return None
        await self._threads.follow(channel, thread_ts, left.message.key)
        return ThreadSurface(self._client, channel, thread_ts, self._pacing)

    async def _on_command(self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        user, text = str(command.get("user_id") or ""), str(command.get("text") or "")

        async def named() -> Incoming:
            names = await self._people.names({user, *mentioned_users(text, self._bot_user_id)})
            return to_command(command, self._bot_user_id, names, author=names[user])

        # Submitted before the ack, so a message Slack sends after it cannot take its place in line.
        await self._order.hand_over(
            channel_key(str(command.get("channel_id") or "")),
            named(),
            lambda incoming: self._core.submit(
                incoming, CommandSurface(self._client, incoming, respond, self._pacing, self._threads)
            ),
        )
        await ack()
