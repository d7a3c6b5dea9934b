"""Reaching Slack: the adapter's config, the Web API client, and Socket Mode or an HTTP endpoint for events."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from adapters.base import PlatformStartupError

log = logging.getLogger(__name__)


class SlackStartupError(PlatformStartupError):
    """Slack refused the configured credentials; the message says which and why."""


@dataclass(frozen=True)
class SlackConfig:
    """What the Slack adapter needs, and nothing of other platforms; the tunables suit a real workspace."""

    bot_token: str = field(repr=False)
    app_token: str | None = field(default=None, repr=False)  # Socket Mode
    signing_secret: str | None = field(default=None, repr=False)  # HTTP mode
    mode: Literal["socket", "http"] = "socket"
    port: int = 3000
    channels: frozenset[str] = frozenset()  # channels where every message is answered
    api_url: str = "https://slack.com/api/"
    # chat.update is a Tier 3 method (about 50 calls a minute per workspace); one budget for all replies.
    edit_interval_s: float = 1.0
    edits_per_minute: float = 50.0
    # Slack truncates long messages and readability suffers well before its hard limit.
    message_limit: int = 3500
    rate_limit_retries: int = 3
    http_host: str = "0.0.0.0"  # Slack must reach the HTTP endpoint from outside
    http_path: str = "/slack/events"
    catchup_max_messages: int = 200  # most messages of a thread read for a catch-up (newest kept)
    # The assistant view: what a new assistant thread shows (blank greeting: none) and the prompts it offers.
    assistant_greeting: str = "Hi! Ask me anything."
    suggested_prompts: tuple[str, ...] = ()


# Retries of a call that failed on the way (5xx, a dropped connection); 429s retry config.rate_limit_retries times.
SERVER_ERROR_RETRIES = 3


class _AnyServerErrorRetryHandler(AsyncServerErrorRetryHandler):
    """slack_sdk's server error handler, for every 5xx: it knows only 500 and 503, and proxies answer 502 and 504."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and 500 <= response.status_code < 600


def web_client(config: SlackConfig) -> AsyncWebClient:
    """The Web API client for ``config.api_url``; it retries 429 (after ``Retry-After``), 5xx and dropped connections.

    slack_sdk's retry handlers back off exponentially with jitter, a bounded number of times.
    Bolt copies them into the client it hands listeners, and the slash command surfaces
    reuse them for response_url calls.  A ``chat.postMessage`` whose connection dropped
    after Slack took it may post twice: Slack offers no idempotency key to prevent that.
    """
    return AsyncWebClient(
        token=config.bot_token,
        base_url=config.api_url if config.api_url.endswith("/") else config.api_url + "/",
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=SERVER_ERROR_RETRIES),
            AsyncRateLimitErrorRetryHandler(max_retry_count=config.rate_limit_retries),
            _AnyServerErrorRetryHandler(max_retry_count=SERVER_ERROR_RETRIES),
        ],
    )


async def identify(client: AsyncWebClient) -> str:
    """The bot's own user id; raises ``SlackStartupError`` when Slack rejects the bot token."""
    try:
        response = await client.auth_test()
    except SlackApiError as error:
        raise SlackStartupError(f"Slack rejected SLACK_BOT_TOKEN: {error.response.get('error')}") from None
    return str(response["user_id"])


async def connect(app: AsyncApp, client: AsyncWebClient, config: SlackConfig) -> Callable[[], Awaitable[None]]:
    """Start taking events for ``app``; return what closes the connection.

    Raises ``SlackStartupError`` when Slack rejects the app token.
    """
    if config.mode == "http":
        runner = web.AppRunner(app.web_app(path=config.http_path, port=config.port))
        await runner.setup()
        await web.TCPSite(runner, config.http_host, config.port).start()
        log.info("Slack HTTP endpoint listening on %s:%d", config.http_host, config.port)
        return runner.cleanup  # lets requests being handled finish
    assert config.app_token is not None, "Socket Mode needs an app token"
    try:
        # Asking for the URL here fails fast on a bad token; the SDK would retry forever.
        response = await client.apps_connections_open(app_token=config.app_token)
    except SlackApiError as error:
        raise SlackStartupError(f"Slack rejected SLACK_APP_TOKEN: {error.response.get('error')}") from None
    handler = AsyncSocketModeHandler(app, app_token=config.app_token, web_client=client)
    handler.client.wss_uri = str(response["url"])
    await handler.connect_async()  # type: ignore[no-untyped-call]  # untyped in slack-bolt
    return handler.close_async
