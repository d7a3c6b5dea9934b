"""Slack's assistant view (Bolt's ``AsyncAssistant``): greeting, suggested prompts, a title, and feedback clicks.

Translation only: a user's message in an assistant thread becomes one ``Core.submit`` answered
through an ``AssistantSurface``; a click on a feedback button becomes one ``Core.record_feedback``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.say.async_say import AsyncSay
from slack_bolt.context.set_suggested_prompts.async_set_suggested_prompts import AsyncSetSuggestedPrompts
from slack_bolt.context.set_title.async_set_title import AsyncSetTitle
from slack_bolt.middleware.assistant.async_assistant import AsyncAssistant
from slack_sdk.web.async_client import AsyncWebClient

from adapters.handover import HandOver
from adapters.slack.assistant_surface import FEEDBACK_ACTION, HELPFUL, AssistantSurface, NativeStreaming
from adapters.slack.connection import SlackConfig
from adapters.slack.mrkdwn import escape
from adapters.slack.state import BoundedMap
from adapters.slack.translate import PLATFORM, thread_of
from bot.attribution import UNKNOWN
from bot.commands import shortened
from bot.core import Core
from bot.surface import Pacing
from bot.types import ConversationKey, Identity, Incoming

log = logging.getLogger(__name__)

# Slack shows at most four suggested prompts.
MAX_PROMPTS = 4
# A thread's title is its first question, cut to what fits in Slack's history list.
TITLE_LIMIT = 60

Translate = Callable[[dict[str, Any]], Awaitable[Incoming | None]]


def title_of(text: str) -> str:
    """A thread's title from its first question: one line, at most ``TITLE_LIMIT`` characters."""
    return shortened(text, TITLE_LIMIT)


class SlackAssistant:
    """The listeners of the assistant view and of the feedback buttons under its answers."""

    def __init__(
        self,
        core: Core,
        client: AsyncWebClient,
        pacing: Pacing,
        config: SlackConfig,
        translate: Translate,
        order: HandOver,
    ) -> None:
        """``translate`` makes a message event the core's ``Incoming``; ``order`` is the adapter's hand-over."""
        self._core = core
        self._client = client
        self._pacing = pacing
        self._config = config
        self._translate = translate
        self._native = NativeStreaming()
        self._titled: BoundedMap[tuple[str, str], bool] = BoundedMap()
        # Looking names up awaits; messages of one thread still reach the core in the order they arrived,
        # and a slow lookup in one thread never holds up another's (Slack wants each event acknowledged in 3 s).
        self._order = order

    def register(self, app: AsyncApp) -> None:
        """Add the assistant middleware (it takes its threads' messages before the app's listeners) and the buttons."""
        assistant = AsyncAssistant(logger=logging.getLogger("adapters.slack.bolt"))
        assistant.thread_started(self._on_thread_started)
        assistant.thread_context_changed(self._on_context_changed)
        assistant.user_message(self._on_user_message)
        app.assistant(assistant)
        app.action(FEEDBACK_ACTION)(self._on_feedback)

    async def _on_thread_started(self, say: AsyncSay, set_suggested_prompts: AsyncSetSuggestedPrompts) -> None:
        greeting = self._config.assistant_greeting.strip()
        if greeting:
            await say(text=escape(greeting))
        prompts = list(self._config.suggested_prompts[:MAX_PROMPTS])
        if prompts:
            await set_suggested_prompts(prompts=prompts)

    async def _on_context_changed(self) -> None:
        """Nothing: which channel the user looks at does not change the answers (Bolt would store it otherwise)."""

    async def _on_user_message(
        self, event: dict[str, Any], context: AsyncBoltContext, set_title: AsyncSetTitle
    ) -> None:
        def submit(incoming: Incoming | None) -> tuple[Incoming, AssistantSurface] | None:
            if incoming is None:
                return None
            channel, thread_ts = incoming.key.channel, incoming.key.thread or str(event.get("thread_ts"))
            surface = AssistantSurface(
                self._client,
                channel,
                thread_ts,
                self._pacing,
                recipient=(context.team_id, incoming.author.user_id),
                native=self._native,
            )
            # Recorded before the listener returns (process_before_response): the inbox answers it once, and resumes it.
            self._core.submit(incoming, surface, reply_to=f"{channel} {thread_ts}")
            return incoming, surface

        # The key the message will have (its thread's conversation), known before its names are.
        key = ConversationKey(PLATFORM, *thread_of(event))
        submitted = await self._order.hand_over(key, self._translate(event), submit)
        if submitted is None:
            return
        incoming, surface = submitted
        # Shown after the submit, which must not wait; the surface never lets it follow the answer's first post.
        await surface.thinking()
        await self._title(surface.channel, surface.thread_ts, incoming.text, set_title)

    async def _title(self, channel: str, thread_ts: str, text: str, set_title: AsyncSetTitle) -> None:
        # The first question names the thread; a command says nothing about what it is about.
        if (channel, thread_ts) in self._titled or not text.strip() or text.lstrip().startswith("/"):
            return
        self._titled[channel, thread_ts] = True
        try:
            await set_title(title_of(text))
        except Exception as error:  # cosmetic: the answer matters, not its title
            log.warning("Could not set an assistant thread's title: %s", error)

    async def _on_feedback(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """A click on a feedback button under an answer: kept with that reply, counted in /stats."""
        container, action = body.get("container") or {}, (body.get("actions") or [{}])[0]
        message = body.get("message") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
        message_ts = container.get("message_ts") or message.get("ts")
        thread_ts = container.get("thread_ts") or message.get("thread_ts") or message_ts
        user = body.get("user") or {}
        if channel and message_ts and user.get("id"):
            who = Identity(PLATFORM, str(user["id"]), name=str(user.get("name") or UNKNOWN))
            key = ConversationKey(PLATFORM, str(channel), str(thread_ts))
            await self._core.record_feedback(key, str(message_ts), who, helpful=action.get("value") == HELPFUL)
        else:
            log.warning("A feedback click without its message or user was ignored")
        await ack()
