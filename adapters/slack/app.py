"""The Slack adapter: a slack-bolt ``AsyncApp`` over Socket Mode (default) or HTTP.

``serve`` is the entry point ``bot run`` starts; everything Slack-specific is
translated to the core's neutral calls here and in the sibling modules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.launch import PlatformStartupError
from adapters.slack.commands import COMMANDS, SlashCommands
from adapters.slack.connection import HttpConnection, SocketConnection
from adapters.slack.replies import InFlight, Replier
from adapters.slack.state import FollowedThreads, SeenEvents
from adapters.slack.translate import SlackMessage, is_addressed, to_message
from bot.admin import AdminActions
from bot.manager import ConversationManager
from bot.settings import Settings, SettingsError
from bot.streaming import EditBudget

log = logging.getLogger(__name__)


class SlackStartupError(PlatformStartupError):
    """Slack refused the configured credentials; the message says which and why."""


@dataclass(frozen=True)
class SlackOptions:
    """Tuning the adapter; the defaults suit a real workspace."""

    # chat.update is a Tier 3 method (about 50 calls a minute per workspace); one budget for all replies.
    edit_interval_s: float = 1.0
    edits_per_minute: float = 50.0
    # Slack truncates long messages and readability suffers well before its hard limit.
    message_limit: int = 3500
    rate_limit_retries: int = 3
    stop_grace_s: float = 10.0
    http_host: str = "0.0.0.0"  # Slack must reach the HTTP endpoint from outside
    http_path: str = "/slack/events"
    # Set once the adapter takes events (tests and supervisors wait on it).
    ready: asyncio.Event | None = None


class Connection(Protocol):
    """How events reach the app: a Socket Mode WebSocket or an HTTP endpoint."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...


async def serve(
    manager: ConversationManager,
    settings: Settings,
    admin: AdminActions,
    stop: asyncio.Event,
    options: SlackOptions | None = None,
) -> None:
    """Answer on Slack until ``stop`` is set, then stop taking events, finish replies and disconnect.

    Raises ``SettingsError`` when a required Slack setting is missing and
    ``SlackStartupError`` when Slack rejects a token.
    """
    options = options or SlackOptions()
    check_settings(settings)
    client = web_client(settings, options)
    bot_user_id = await _identify(client)
    slack = SlackBot(manager, settings, admin, client, bot_user_id, options)
    app = slack.build_app()
    connection = await _connect(app, client, settings, options)
    log.info("Slack adapter ready (%s mode) as %s", settings.slack_mode, bot_user_id)
    if options.ready is not None:
        options.ready.set()
    try:
        await stop.wait()
    finally:
        slack.stopping = True
        try:
            # Closing before the replies finish lets Slack hand new events to other connections at once.
            await connection.close()
        finally:
            await slack.in_flight.drain(options.stop_grace_s)
            log.info("Slack adapter stopped")


def check_settings(settings: Settings) -> None:
    """Raise ``SettingsError`` naming every Slack variable the chosen mode needs but lacks."""
    needed = {"SLACK_BOT_TOKEN": settings.slack_bot_token}
    if settings.slack_mode == "socket":
        needed["SLACK_APP_TOKEN"] = settings.slack_app_token
    else:
        needed["SLACK_SIGNING_SECRET"] = settings.slack_signing_secret
    missing = [name for name, value in needed.items() if value is None]
    if missing:
        raise SettingsError("\n".join(f"{name}: required in Slack {settings.slack_mode} mode" for name in missing))


def web_client(settings: Settings, options: SlackOptions) -> AsyncWebClient:
    """The Web API client: ``SLACK_API_URL``, retrying HTTP 429 after ``Retry-After``."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    base_url = settings.slack_api_url if settings.slack_api_url.endswith("/") else settings.slack_api_url + "/"
    return AsyncWebClient(
        token=token,
        base_url=base_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=options.rate_limit_retries),
        ],
    )


async def _identify(client: AsyncWebClient) -> str:
    try:
        response = await client.auth_test()
    except SlackApiError as error:
        raise SlackStartupError(f"Slack rejected SLACK_BOT_TOKEN: {error.response.get('error')}") from None
    return str(response["user_id"])


async def _connect(app: AsyncApp, client: AsyncWebClient, settings: Settings, options: SlackOptions) -> Connection:
    connection: Connection
    if settings.slack_mode == "socket":
        assert settings.slack_app_token is not None  # check_settings guarantees it
        connection = SocketConnection(app, client, settings.slack_app_token.get_secret_value())
    else:
        connection = HttpConnection(app, options.http_host, settings.slack_port, options.http_path)
    try:
        await connection.open()
    except SlackApiError as error:
        await connection.close()
        raise SlackStartupError(f"Slack rejected SLACK_APP_TOKEN: {error.response.get('error')}") from None
    return connection


class SlackBot:
    """The Bolt listeners: which events and commands are answered, each exactly once."""

    def __init__(
        self,
        manager: ConversationManager,
        settings: Settings,
        admin: AdminActions,
        client: AsyncWebClient,
        bot_user_id: str,
        options: SlackOptions,
    ) -> None:
        self._settings = settings
        self._client = client
        self._bot_user_id = bot_user_id
        self._watched = frozenset(settings.slack_channels)
        self._seen = SeenEvents()
        self._threads = FollowedThreads()
        self.in_flight = InFlight()
        self.stopping = False
        budget = EditBudget(options.edit_interval_s, options.edits_per_minute / 60)
        self._replier = Replier(manager, client, budget, options.message_limit)
        self._commands = SlashCommands(
            manager=manager,
            admin=admin,
            admin_ids=settings.slack_admin_ids,
            replier=self._replier,
            threads=self._threads,
            in_flight=self.in_flight,
            bot_user_id=bot_user_id,
        )

    def build_app(self) -> AsyncApp:
        """The Bolt app with this bot's middleware, event and command listeners."""
        http = self._settings.slack_mode == "http"
        secret = self._settings.slack_signing_secret
        app = AsyncApp(
            client=self._client,
            signing_secret=secret.get_secret_value() if secret is not None else "",
            # Socket Mode has no request signature; HTTP mode always verifies it.
            request_verification_enabled=http,
            logger=logging.getLogger("adapters.slack.bolt"),
        )
        app.use(self._refuse_when_stopping)
        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)
        for name in COMMANDS:
            app.command(name)(self._commands.on_command)
        return app

    async def _refuse_when_stopping(self, next: Callable[[], Awaitable[BoltResponse]]) -> BoltResponse:
        # Not acknowledged, so Slack delivers the event again once a running bot can take it.
        if self.stopping:
            return BoltResponse(status=503, body="stopping")
        return await next()

    async def _on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        self._accept(event, body, mentioned=True)

    async def _on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        self._accept(event, body, mentioned=False)

    def _accept(self, event: dict[str, Any], body: dict[str, Any], *, mentioned: bool) -> None:
        addressed = is_addressed(
            event, mentioned=mentioned, watched_channels=self._watched, follows_thread=self._threads.follows
        )
        message = to_message(event, self._bot_user_id) if addressed else None
        if message is None:
            return
        # A retry repeats the event_id; app_mention + message repeat the message.
        if not self._seen.first_time(body.get("event_id"), message.message_id):
            log.debug("Skipped a repeated delivery of %s", message.message_id)
            return
        self._answer(message)

    def _answer(self, message: SlackMessage) -> None:
        key = self._threads.key_for(message.channel, message.thread_ts) or message.key
        self._threads.follow(message.channel, message.thread_ts, key)
        self.in_flight.spawn(self._replier.answer(message.channel, message.thread_ts, key, message.text))
