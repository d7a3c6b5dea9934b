"""The Discord connection: log in, pick intents, register commands, hand events to the core, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import aiohttp
import discord

from adapters.base import PlatformStartupError
from adapters.discord.catchup import CatchUp
from adapters.discord.commands import command_tree
from adapters.discord.endpoints import Endpoints, attach_gateway, attach_rest, webhooks_pointed_at
from adapters.discord.surfaces import ChannelSurface, Interaction, InteractionSurface
from adapters.discord.translate import NO_MENTIONS, PLATFORM, TriggerPolicy, command_incoming, invite_url, to_incoming
from adapters.handover import HandOver
from bot.attribution import is_summary_request
from bot.core import Core
from bot.inbox import Unfinished
from bot.streaming import EditBudget
from bot.surface import Pacing
from bot.types import Incoming

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000
MIN_MESSAGE_LIMIT = 32  # split_message needs room for a reopened code fence
MAX_CATCHUP_MESSAGES = 1000
NO_CONTENT_INTENT = (
    "message_content intent is not enabled for this application: answering mentions and DMs only "
    "(enable 'Message Content Intent' in the Developer Portal for replies and DISCORD_CHANNELS)"
)


@dataclass(frozen=True)
class DiscordConfig:
    """The adapter's settings: the token, channels answered without a mention, addresses, limits and pacing.

    ``catchup_max_messages`` is the most messages a catch-up reads (the newest are kept).
    """

    token: str = field(repr=False)
    channels: frozenset[str] = frozenset()
    api_base: str = "https://discord.com/api/v10"
    gateway_url: str | None = None  # None: the address GET /gateway/bot names
    message_limit: int = MESSAGE_LIMIT
    edit_interval_s: float = 1.0
    edits_per_second: float = 4.0
    guild_ready_timeout_s: float = 2.0
    catchup_max_messages: int = 200
    shard_count: int | None = None  # None: one gateway connection, no sharding
    shard_ids: tuple[int, ...] = ()  # the shards of shard_count this process runs; empty: all of them

    def __post_init__(self) -> None:
        if not MIN_MESSAGE_LIMIT <= self.message_limit <= MESSAGE_LIMIT:
            raise ValueError(f"message_limit must be between {MIN_MESSAGE_LIMIT} and {MESSAGE_LIMIT} characters")
        if not 1 <= self.catchup_max_messages <= MAX_CATCHUP_MESSAGES:
            raise ValueError(f"catchup_max_messages must be between 1 and {MAX_CATCHUP_MESSAGES}")
        if self.edit_interval_s < 0 or self.edits_per_second <= 0 or self.guild_ready_timeout_s < 0:
            raise ValueError("edit_interval_s and guild_ready_timeout_s must be >= 0 and edits_per_second > 0")
        check_shards(self.shard_count, self.shard_ids)

    @property
    def shards(self) -> tuple[int, ...]:
        """The shard ids this process runs: ``shard_ids``, all of ``shard_count`` without them, none unsharded."""
        if self.shard_count is None:
            return ()
        return self.shard_ids or tuple(range(self.shard_count))


def check_shards(count: int | None, ids: tuple[int, ...]) -> None:
    """Raise ``ValueError`` naming the variable to fix unless ``ids`` are distinct shards of ``count``."""
    if count is None:
        if ids:
            raise ValueError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT, the number of shards of all processes")
        return
    if count < 1:
        raise ValueError("DISCORD_SHARD_COUNT must be at least 1")
    if any(not 0 <= shard < count for shard in ids):
        raise ValueError(f"DISCORD_SHARD_IDS must be between 0 and {count - 1} (DISCORD_SHARD_COUNT - 1)")
    if len(set(ids)) != len(ids):
        raise ValueError("DISCORD_SHARD_IDS names a shard twice")


class DiscordStartError(PlatformStartupError):
    """The bot could not log in, reach the configured Discord server or keep its gateway session."""


def gateway_intents(message_content: bool) -> discord.Intents:
    """The gateway events the bot needs; message_content only where the application may have it."""
    return discord.Intents(guilds=True, guild_messages=True, dm_messages=True, message_content=message_content)


def content_intent_allowed(flags: discord.ApplicationFlags) -> bool:
    """Whether the application is allowed the privileged message_content intent."""
    return flags.gateway_message_content or flags.gateway_message_content_limited


class DiscordAdapter:
    """Translates between one discord.py client and the core: messages and slash commands in, surfaces out."""

    platform = PLATFORM
    _core: Core  # set by serve, before any event can arrive
    _policy: TriggerPolicy  # set once logged in, before the gateway connects
    _catch_up: CatchUp  # likewise

    def __init__(self, config: DiscordConfig) -> None:
        self.config = config
        self._endpoints = Endpoints(config.api_base)
        # One budget for every answer on the connection: Discord rate-limits the bot as a whole.
        self._pacing = Pacing(EditBudget(config.edit_interval_s, config.edits_per_second), config.message_limit)
        # discord.py runs each event in its own task: this keeps a conversation's messages in arrival order.
        self._order = HandOver()
        self._shards_seen: set[int] = set()  # shards that got READY since the start
        self._shards_up: set[int] = set()  # shards ready or resumed, not dropped since

    async def serve(self, core: Core, stop: asyncio.Event) -> None:
        """Answer on Discord until ``stop`` is set, then drain the core and disconnect.

        Raises ``DiscordStartError`` when the token is missing or rejected, or Discord cannot be reached.
        """
        if not self.config.token:
            raise DiscordStartError("DISCORD_TOKEN is not set")
        self._core = core
        with webhooks_pointed_at(self._endpoints):
            client = await self._start()
            # Messages an earlier run accepted but never answered go first, before the gateway delivers new ones.
            await core.resume(PLATFORM, partial(self._surface_for, client))
            await self._run(client, core, stop)

    async def on_message(self, message: discord.Message) -> None:
        """Hand ``message`` to the core if it is for the bot; everything else is ignored."""
        found = to_incoming(message, self._policy)
        if found is None:
            return
        why, incoming = found
        log.info("Answering a %s in %s", why.value, incoming.key)
        incoming = replace(incoming, message_id=str(message.id))
        surface = ChannelSurface(message.channel, message, self._pacing)

        def submit(prepared: Incoming | None) -> None:
            if prepared is not None:
                self._core.submit(prepared, surface, reply_to=f"{message.channel.id} {message.id}")

        # A summarize reads its thread first: a later message of the conversation waits for it, not overtakes it.
        await self._order.hand_over(incoming.key, self._prepared(message, incoming, surface), submit)

    async def _prepared(self, message: discord.Message, incoming: Incoming, surface: ChannelSurface) -> Incoming | None:
        """``incoming`` as the core gets it; ``None`` (the asker told why) for a thread that cannot be read."""
        if not (isinstance(message.channel, discord.Thread) and is_summary_request(incoming.text)):
            return incoming
        # "@bot summarize" in a thread: the thread (which the bot may not have followed) is what is asked about.
        context = await self._catch_up.thread_before(message, surface)
        return None if context is None else replace(incoming, text="", command="summarize", context=context)

    async def on_ready(self) -> None:
        """The gateway session is up: the bot counts as connected for ``/healthz``."""
        self._core.health.connected(PLATFORM, True)

    async def on_resumed(self) -> None:
        """A dropped gateway session resumed."""
        self._core.health.connected(PLATFORM, True)

    async def on_disconnect(self) -> None:
        """The gateway dropped (discord.py reconnects): not ready until ready or resumed again."""
        self._core.health.connected(PLATFORM, False)

    async def on_shard_connect(self, shard_id: int) -> None:
        """A shard's session is up (READY); it counts once its servers have arrived (``on_shard_ready``)."""
        self._shards_seen.add(shard_id)
        log.info("Discord shard %d of %s connected", shard_id, self.config.shard_count)

    async def on_shard_ready(self, shard_id: int) -> None:
        """A shard has its servers: the bot counts as connected once every shard of this process has."""
        self._shard_up(shard_id, "ready")

    async def on_shard_resumed(self, shard_id: int) -> None:
        """A shard's dropped session resumed."""
        self._shard_up(shard_id, "resumed")

    async def on_shard_disconnect(self, shard_id: int) -> None:
        """A shard dropped (discord.py reconnects it): not ready until it is ready or resumed again."""
        self._shards_up.discard(shard_id)
        log.warning("Discord shard %d of %s disconnected", shard_id, self.config.shard_count)
        self._core.health.connected(PLATFORM, False)

    def _shard_up(self, shard_id: int, how: str) -> None:
        self._shards_up.add(shard_id)
        mine = set(self.config.shards)
        count, up = self.config.shard_count, len(self._shards_up & mine)
        log.info("Discord shard %d of %s %s (%d of this process's %d up)", shard_id, count, how, up, len(mine))
        self._core.health.connected(PLATFORM, mine <= self._shards_up)

    async def _surface_for(self, client: discord.Client, left: Unfinished) -> ChannelSurface | None:
        """Where to answer a message an earlier run accepted: its channel, as a reply to it."""
        channel_id, _, message_id = (left.reply_to or "").partition(" ")
        if not channel_id.isdigit() or not message_id.isdigit():
            return None
        try:
            channel = client.get_channel(int(channel_id)) or await client.fetch_channel(int(channel_id))
        except discord.HTTPException as error:
            log.warning(
                "Cannot answer %s after the restart: channel %s is gone (%s)", left.message.key, channel_id, error
            )
            return None
        if not isinstance(channel, discord.TextChannel | discord.Thread | discord.DMChannel):
            return None
        return ChannelSurface(channel, channel.get_partial_message(int(message_id)), self._pacing)

    def on_command(self, interaction: Interaction, name: str, argument: str) -> None:
        """Hand a slash command to the core; it defers the response itself, after taking its place."""
        self._core.submit(command_incoming(interaction, name, argument), InteractionSurface(interaction, self._pacing))

    async def _start(self) -> discord.Client:
        # Log in asking for message_content; without the portal's permission, log in again without it.
        client = await self._logged_in(message_content=True)
        try:
            content_intent = content_intent_allowed(client.application_flags)
            if not content_intent:
                await client.close()
                client = await self._logged_in(message_content=False)
                log.warning(NO_CONTENT_INTENT)
            else:
                log.info("message_content intent on: answering mentions, DMs, replies and DISCORD_CHANNELS")
            assert client.user is not None  # login fetched it
            self._policy = TriggerPolicy(client.user.id, self.config.channels, content_intent)
            self._catch_up = CatchUp(
                self._core, self._pacing, self.config.catchup_max_messages, content_intent=content_intent
            )
            attach_gateway(client.http, await self._gateway_url(client))
            await self._sync_commands(client)
        except BaseException:
            await client.close()
            raise
        log.info("Invite the bot to a server with %s", invite_url(client.application_id or client.user.id))
        if self.config.shard_count is not None:
            shards = ", ".join(map(str, self.config.shards))
            log.info("Running Discord shards %s of %d in this process", shards, self.config.shard_count)
        return client

    async def _run(self, client: discord.Client, core: Core, stop: asyncio.Event) -> None:
        connection = asyncio.create_task(client.connect(reconnect=True), name="discord-gateway")
        stopping = asyncio.create_task(stop.wait(), name="discord-stop")
        try:
            await asyncio.wait({connection, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            await self._shut_down(client, core, connection)
        if not connection.cancelled():
            _raise_fatal(connection)

    def _new_client(self, intents: discord.Intents) -> discord.Client:
        """One gateway connection unsharded (as before sharding); this process's shards of ``shard_count`` otherwise."""
        timeout = self.config.guild_ready_timeout_s
        if self.config.shard_count is None:
            return discord.Client(intents=intents, allowed_mentions=NO_MENTIONS, guild_ready_timeout=timeout)
        # One client for all of this process's shards: they share one core, one REST client and its rate limits.
        return discord.AutoShardedClient(
            intents=intents,
            allowed_mentions=NO_MENTIONS,
            guild_ready_timeout=timeout,
            shard_count=self.config.shard_count,
            shard_ids=list(self.config.shards),
        )

    def _listeners(self) -> tuple[Callable[..., Coroutine[Any, Any, None]], ...]:
        if self.config.shard_count is None:
            return (self.on_ready, self.on_resumed, self.on_disconnect)
        # A sharded client fires ready, resumed and disconnect for any one shard: readiness is counted per shard.
        return (self.on_shard_connect, self.on_shard_ready, self.on_shard_resumed, self.on_shard_disconnect)

    async def _logged_in(self, *, message_content: bool) -> discord.Client:
        client = self._new_client(gateway_intents(message_content))
        attach_rest(client.http, self._endpoints)
        client.event(self.on_message)
        for listener in self._listeners():
            client.event(listener)
        try:
            await client.login(self.config.token)
        except BaseException as error:
            await client.close()
            if isinstance(error, discord.LoginFailure):
                raise DiscordStartError(f"DISCORD_TOKEN was rejected by {self._endpoints.api_base}") from None
            if isinstance(error, aiohttp.ClientError | discord.HTTPException | OSError):
                raise DiscordStartError(f"Cannot log in at {self._endpoints.api_base}: {error}") from None
            raise
        return client

    async def _gateway_url(self, client: discord.Client) -> str:
        if self.config.gateway_url:
            return self.config.gateway_url
        try:
            _, url, _ = await client.http.get_bot_gateway()
        except discord.GatewayNotFound:
            raise DiscordStartError(f"{self._endpoints.api_base}/gateway/bot did not name a gateway") from None
        log.debug("Gateway reported by the API: %s", url)
        return url

    async def _sync_commands(self, client: discord.Client) -> None:
        try:
            synced = await command_tree(client, self.on_command, self._catch_up).sync()
            log.info("Registered commands: %s", ", ".join(command.name for command in synced))
        except discord.HTTPException as error:  # not fatal: messages still work without slash commands
            log.warning("Could not register slash commands: %s", error)

    async def _shut_down(self, client: discord.Client, core: Core, connection: asyncio.Task[None]) -> None:
        try:
            await core.drain()  # the gateway stays open meanwhile, so answers can still be posted
            # Let discord.py finish its post-READY start-up, which would otherwise dispatch into a closed client.
            started = self._shards_seen or (client.ws is not None and client.ws.session_id is not None)
            if started and not client.is_ready():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(client.wait_until_ready(), self.config.guild_ready_timeout_s + 1.0)
        finally:  # also when a forced stop cancels the drain: the connection must not outlive serve
            # Stop reading the gateway first: discord.py closes a socket it is reading with code 4000
            # (a resumable drop), while an idle one is closed with 1000, which ends the session.
            connection.cancel()
            await asyncio.wait({connection})
            await client.close()
            core.health.connected(PLATFORM, False)
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
