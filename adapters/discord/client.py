"""The Discord connection: log in, pick intents, register commands, answer messages, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import aiohttp
import discord

from adapters.discord.commands import SlashCommands
from adapters.discord.endpoints import Endpoints, attach_gateway, attach_rest, webhooks_pointed_at
from adapters.discord.replies import Answering, ChannelSink
from adapters.discord.translate import (
    FAILED,
    MESSAGE_LIMIT,
    NO_MENTIONS,
    TriggerPolicy,
    conversation_key,
    incoming,
    invite_url,
    prompt_text,
    trigger,
)
from adapters.launch import PlatformStartupError
from bot.admin import AdminActions
from bot.commands import dispatch
from bot.manager import ConversationManager
from bot.settings import Settings
from bot.streaming import EditBudget
from bot.types import ConversationKey

log = logging.getLogger(__name__)

MIN_MESSAGE_LIMIT = 32  # split_message needs room for a reopened code fence


@dataclass(frozen=True)
class DiscordOptions:
    """Tunables of the adapter; the defaults are Discord's limits and sensible pacing."""

    message_limit: int = MESSAGE_LIMIT
    stop_grace_s: float = 10.0
    edit_interval_s: float = 1.0
    edits_per_second: float = 4.0
    guild_ready_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if not MIN_MESSAGE_LIMIT <= self.message_limit <= MESSAGE_LIMIT:
            raise ValueError(f"message_limit must be between {MIN_MESSAGE_LIMIT} and {MESSAGE_LIMIT} characters")
        if self.stop_grace_s < 0 or self.edit_interval_s < 0 or self.edits_per_second <= 0:
            raise ValueError("stop_grace_s and edit_interval_s must be >= 0 and edits_per_second > 0")


class DiscordStartError(PlatformStartupError):
    """The bot could not log in, reach the configured Discord server or keep its gateway session."""


def gateway_intents(message_content: bool) -> discord.Intents:
    """The gateway events the bot needs; message_content only where the application may have it."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = message_content
    return intents


def content_intent_allowed(flags: discord.ApplicationFlags) -> bool:
    """Whether the application is allowed the privileged message_content intent."""
    return flags.gateway_message_content or flags.gateway_message_content_limited


class DiscordBot:
    """Translates between one discord.py client and the conversation core."""

    def __init__(
        self, manager: ConversationManager, settings: Settings, admin: AdminActions, options: DiscordOptions
    ) -> None:
        self._manager = manager
        self._settings = settings
        self._options = options
        self.endpoints = Endpoints(settings.discord_api_base)
        budget = EditBudget(options.edit_interval_s, options.edits_per_second)
        self._answering = Answering(budget, options.message_limit)
        self._slash = SlashCommands(manager, admin, settings.discord_admin_ids, self._answering)
        self._policy: TriggerPolicy | None = None

    async def start(self, token: str) -> discord.Client:
        """Log in, choose intents, point the gateway, register slash commands; return the client."""
        client = await self._logged_in(token, message_content=True)
        try:
            content_intent = content_intent_allowed(client.application_flags)
            if not content_intent:
                await client.close()
                client = await self._logged_in(token, message_content=False)
            self._log_intent(content_intent)
            assert client.user is not None  # login fetched it
            self._policy = TriggerPolicy(client.user.id, frozenset(self._settings.discord_channels), content_intent)
            attach_gateway(client.http, await self._gateway_url(client))
            await self._sync_commands(client)
        except BaseException:
            await client.close()
            raise
        log.info("Invite the bot to a server with %s", invite_url(client.application_id or client.user.id))
        return client

    async def run(self, client: discord.Client, stop: asyncio.Event) -> None:
        """Stay connected until ``stop`` is set, then finish or cancel replies and disconnect."""
        connection = asyncio.create_task(client.connect(reconnect=True), name="discord-gateway")
        stopping = asyncio.create_task(stop.wait(), name="discord-stop")
        try:
            await asyncio.wait({connection, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            await self._shut_down(client, connection)
        if not connection.cancelled():
            _raise_fatal(connection)

    async def on_ready(self) -> None:
        """Log once the gateway session is ready."""
        log.info("Connected to Discord")

    async def on_message(self, message: discord.Message) -> None:
        """Answer ``message`` if it is for the bot; everything else is ignored."""
        if self._answering.stopping or self._policy is None:
            return
        received = incoming(message)
        why = trigger(received, self._policy)
        text = prompt_text(received.content, self._policy.bot_id, received.mention_names) if why else ""
        if why is None or not text:
            return
        key = conversation_key(received.channel_id, received.parent_id)
        log.info("Answering a %s in %s", why.value, key)
        with self._answering.inflight.track():
            try:
                await self._answer(message, key, text)
            except Exception:  # the event's boundary: whatever failed, log it and tell the user
                log.exception("Could not answer message %s in %s", message.id, key)
                await self._tell_failure(message)

    async def _answer(self, message: discord.Message, key: ConversationKey, text: str) -> None:
        result = await dispatch(self._manager, key, text)
        sink = ChannelSink(message.channel, reply_to=message)
        if isinstance(result, str):
            await sink.send(result)
            return
        await self._answering.stream(result, sink, waiting=message.channel.typing)

    async def _tell_failure(self, message: discord.Message) -> None:
        try:
            await message.channel.send(FAILED, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException:
            log.warning("Could not tell the user about the failure either")

    def _new_client(self, message_content: bool) -> discord.Client:
        client = discord.Client(
            intents=gateway_intents(message_content),
            allowed_mentions=NO_MENTIONS,
            guild_ready_timeout=self._options.guild_ready_timeout_s,
        )
        attach_rest(client.http, self.endpoints)
        client.event(self.on_message)
        client.event(self.on_ready)
        return client

    async def _logged_in(self, token: str, *, message_content: bool) -> discord.Client:
        client = self._new_client(message_content)
        try:
            await client.login(token)
        except BaseException as error:
            await client.close()
            if isinstance(error, discord.LoginFailure):
                raise DiscordStartError(f"DISCORD_TOKEN was rejected by {self.endpoints.api_base}") from None
            if isinstance(error, aiohttp.ClientError | discord.HTTPException | OSError):
                raise DiscordStartError(f"Cannot log in at {self.endpoints.api_base}: {error}") from None
            raise
        return client

    async def _gateway_url(self, client: discord.Client) -> str:
        if self._settings.discord_gateway_url:
            return self._settings.discord_gateway_url
        try:
            _, url, _ = await client.http.get_bot_gateway()
        except discord.GatewayNotFound:
            raise DiscordStartError(f"{self.endpoints.api_base}/gateway/bot did not name a gateway") from None
        log.debug("Gateway reported by the API: %s", url)
        return url

    async def _sync_commands(self, client: discord.Client) -> None:
        tree = self._slash.tree(client)
        try:
            synced = await tree.sync()
        except discord.HTTPException as error:
            # Messages still work without slash commands, so this is not fatal.
            log.warning("Could not register slash commands: %s", error)
            return
        log.info("Registered slash commands: %s", ", ".join(f"/{command.name}" for command in synced))

    def _log_intent(self, content_intent: bool) -> None:
        if content_intent:
            log.info("message_content intent on: answering mentions, DMs, replies to the bot and DISCORD_CHANNELS")
            return
        log.warning(
            "message_content intent is not enabled for this application: answering mentions and DMs only "
            "(enable 'Message Content Intent' in the Developer Portal for replies and DISCORD_CHANNELS)"
        )

    async def _settle_startup(self, client: discord.Client) -> None:
        """Let discord.py finish its post-READY start-up, which would otherwise dispatch into a closed client."""
        session_started = client.ws is not None and client.ws.session_id is not None
        if session_started and not client.is_ready():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(client.wait_until_ready(), self._options.guild_ready_timeout_s + 1.0)

    async def _shut_down(self, client: discord.Client, connection: asyncio.Task[None]) -> None:
        self._answering.stopping = True
        in_flight = len(self._answering.inflight)
        if in_flight:
            log.info("Stopping: letting %d replies finish (up to %.0f s)", in_flight, self._options.stop_grace_s)
        cancelled = await self._answering.inflight.drain(self._options.stop_grace_s)
        if cancelled:
            log.warning("Stopping: cancelled %d replies still being written", cancelled)
        await self._settle_startup(client)
        # Stop reading the gateway first: discord.py closes a socket it is reading with code 4000
        # (a resumable drop), while an idle one is closed with 1000, which ends the session.
        connection.cancel()
        await asyncio.wait({connection})
        await client.close()
        log.info("Disconnected from Discord")


def _raise_fatal(connection: asyncio.Task[None]) -> None:
    """Re-raise why the gateway connection ended by itself, in the words of the setting to fix."""
    try:
        connection.result()
    except discord.PrivilegedIntentsRequired:
        raise DiscordStartError(
            "Discord refused the message_content intent: enable 'Message Content Intent' in the Developer Portal"
        ) from None
    except discord.ConnectionClosed as error:
        raise DiscordStartError(f"Discord closed the gateway connection (code {error.code}: {error.reason})") from None


async def serve(
    manager: ConversationManager,
    settings: Settings,
    admin: AdminActions,
    stop: asyncio.Event,
    *,
    options: DiscordOptions | None = None,
) -> None:
    """Run the Discord bot until ``stop`` is set; then stop taking messages and disconnect.

    Replies in flight get ``options.stop_grace_s`` to finish before they are cancelled.
    Raises ``DiscordStartError`` when the token is missing or rejected or the server
    cannot be reached.
    """
    if settings.discord_token is None:
        raise DiscordStartError("DISCORD_TOKEN is not set")
    bot = DiscordBot(manager, settings, admin, options or DiscordOptions())
    with webhooks_pointed_at(bot.endpoints):
        client = await bot.start(settings.discord_token.get_secret_value())
        await bot.run(client, stop)
