"""Slash commands: /ask, /reset, /stats and the admin-only /export.

Slack wants an acknowledgement within 3 seconds, so every handler acks first and
does anything slow in the background.  Slack does not tell a slash command which
thread it was typed in, so these commands share one conversation per channel.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError

from adapters.slack.mrkdwn import escape
from adapters.slack.replies import InFlight, Replier, queued_lines
from adapters.slack.state import FollowedThreads
from adapters.slack.translate import PLATFORM, SlashCommand, channel_key, to_command
from bot.admin import AdminActions, audit_refusal
from bot.commands import run_command
from bot.manager import ConversationManager, Reply

log = logging.getLogger(__name__)

COMMANDS = ("/ask", "/reset", "/stats", "/export")
ASK_USAGE = "Usage: `/ask your question`"
ADMIN_ONLY = "Only the bot's admins can use {command}."
EXPORT_STARTED = "Export started; progress follows in a thread."
CANNOT_POST = "I can't post in this channel ({error}). Invite me to it, or message me directly."

_USER_ID = re.compile(r"[UW][A-Z0-9]+")

Handler = Callable[[SlashCommand, AsyncAck, AsyncRespond], Awaitable[None]]


def mention(user_id: str) -> str:
    """A mention of a user, or the escaped id when it does not look like one."""
    return f"<@{user_id}>" if _USER_ID.fullmatch(user_id) else escape(user_id)


class SlashCommands:
    """Handles the bot's slash commands (registered with Bolt's ``app.command``)."""

    def __init__(
        self,
        *,
        manager: ConversationManager,
        admin: AdminActions,
        admin_ids: Collection[str],
        replier: Replier,
        threads: FollowedThreads,
        in_flight: InFlight,
        bot_user_id: str,
    ) -> None:
        self._manager = manager
        self._admin = admin
        self._admin_ids = frozenset(admin_ids)
        self._replier = replier
        self._threads = threads
        self._in_flight = in_flight
        self._bot_user_id = bot_user_id
        self._handlers: dict[str, Handler] = {
            "/ask": self._ask,
            "/reset": self._reset,
            "/stats": self._stats,
            "/export": self._export,
        }

    async def on_command(self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        """Bolt listener for every slash command of the app."""
        request = to_command(command, self._bot_user_id)
        handler = self._handlers.get(request.name)
        if handler is None:
            await ack(f"Unknown command {escape(request.name)}.")
            return
        await handler(request, ack, respond)

    async def _ask(self, request: SlashCommand, ack: AsyncAck, respond: AsyncRespond) -> None:
        if not request.text:
            await ack(ASK_USAGE)
            return
        # The question's place in the conversation's line is taken now, before any network call.
        reply = self._manager.reply(channel_key(request.channel), request.text)
        await ack()
        self._in_flight.spawn(self._run_ask(request, respond, reply))

    async def _run_ask(self, request: SlashCommand, respond: AsyncRespond, reply: Reply) -> None:
        # The invocation is invisible to the channel: show the question, answer in its thread.
        question = f"{mention(request.user)} asked: {escape(request.text)}"
        try:
            thread_ts = await self._replier.post(request.channel, None, question)
        except SlackApiError as error:
            await reply.aclose()
            await respond(CANNOT_POST.format(error=escape(str(error.response.get("error")))))
            return
        self._threads.follow(request.channel, thread_ts, channel_key(request.channel))
        await self._replier.deliver(request.channel, thread_ts, reply)

    async def _reset(self, request: SlashCommand, ack: AsyncAck, respond: AsyncRespond) -> None:
        # Started before the ack so that it queues behind earlier messages only, not later ones.
        resetting = asyncio.ensure_future(run_command(self._manager, channel_key(request.channel), "/reset"))
        await ack()
        self._in_flight.spawn(self._run_reset(resetting, respond))

    async def _run_reset(self, resetting: asyncio.Future[str | None], respond: AsyncRespond) -> None:
        answer = await resetting
        await respond(escape(answer or ""))

    async def _stats(self, request: SlashCommand, ack: AsyncAck, respond: AsyncRespond) -> None:
        # Instant (no lock, no I/O), so the answer rides on the acknowledgement.
        answer = await run_command(self._manager, channel_key(request.channel), "/stats")
        await ack(escape(answer or ""))

    async def _export(self, request: SlashCommand, ack: AsyncAck, respond: AsyncRespond) -> None:
        if request.user not in self._admin_ids:
            audit_refusal(PLATFORM, request.user, "export")
            await ack(ADMIN_ONLY.format(command="/export"))
            return
        await ack(EXPORT_STARTED)
        self._in_flight.spawn(self._run_export(request, respond))

    async def _run_export(self, request: SlashCommand, respond: AsyncRespond) -> None:
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        shown = await self._progress_thread(request, lines)

        async def progress(line: str) -> None:
            await lines.put(line)

        try:
            final = await self._admin.export(request.user, request.text, progress)
        except Exception as error:
            log.exception("Export requested by %s failed", request.user)
            final = f"Export failed: {error}"
        await lines.put(final)
        await lines.put(None)
        if shown is not None:
            await shown
        else:
            await respond(escape(final))

    async def _progress_thread(
        self, request: SlashCommand, lines: asyncio.Queue[str | None]
    ) -> asyncio.Task[None] | None:
        """Start showing export progress in a thread; ``None`` when the bot cannot post here."""
        argument = escape(request.text) if request.text else "default settings"
        try:
            thread_ts = await self._replier.post(
                request.channel, None, f"{mention(request.user)} started a model export ({argument})."
            )
        except SlackApiError as error:
            log.info("Export progress not shown in %s: %s", request.channel, error.response.get("error"))
            return None
        return self._in_flight.spawn(self._replier.show_lines(request.channel, thread_ts, queued_lines(lines)))
