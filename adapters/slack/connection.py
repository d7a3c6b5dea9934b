"""How Slack's events reach the Bolt app: Socket Mode or an HTTP endpoint."""

from __future__ import annotations

import logging

from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)


class SocketConnection:
    """A Socket Mode WebSocket (slack_sdk's aiohttp client) feeding the app."""

    def __init__(self, app: AsyncApp, client: AsyncWebClient, app_token: str) -> None:
        self._client = client
        self._app_token = app_token
        self._handler = AsyncSocketModeHandler(app, app_token=app_token, web_client=client)

    async def open(self) -> None:
        """Connect; raises ``SlackApiError`` when Slack refuses the app token."""
        # Asking for the URL here fails fast on a bad token; the SDK would retry forever.
        response = await self._client.apps_connections_open(app_token=self._app_token)
        self._handler.client.wss_uri = str(response["url"])
        await self._handler.connect_async()  # type: ignore[no-untyped-call]  # untyped in slack-bolt

    async def close(self) -> None:
        """Close the WebSocket; Slack sends new events to other connections or keeps them."""
        await self._handler.close_async()  # type: ignore[no-untyped-call]  # untyped in slack-bolt


class HttpConnection:
    """An aiohttp server at ``path`` receiving signed requests from Slack."""

    def __init__(self, app: AsyncApp, host: str, port: int, path: str) -> None:
        self._runner = web.AppRunner(app.web_app(path=path, port=port))
        self._host = host
        self._port = port

    async def open(self) -> None:
        """Start listening."""
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        log.info("Slack HTTP endpoint listening on %s:%d", self._host, self._port)

    async def close(self) -> None:
        """Stop listening, letting requests being handled finish."""
        await self._runner.cleanup()
