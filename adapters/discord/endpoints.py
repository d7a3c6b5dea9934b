"""Point one discord.py client at a Discord-compatible server (``DISCORD_API_BASE``/``DISCORD_GATEWAY_URL``).

discord.py 2.7 reads both addresses from class attributes (``Route.BASE``,
``DiscordWebSocket.DEFAULT_GATEWAY``); assigning those would re-point every client in
the process, so this module rewrites URLs on their way out of *one* client: its
``HTTPClient.request`` (REST), a rebasing webhook adapter in discord.py's
``async_context`` variable for the serving task and its children (interaction
responses, follow-ups), and its ``ws_connect`` (the first gateway connection;
resume URLs the server hands out pass through).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import HTTPClient, Route
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

_Request = Callable[..., Coroutine[Any, Any, Any]]


@dataclass(frozen=True)
class Endpoints:
    """Where the REST API lives; ``rebase`` maps discord.py's URLs onto it."""

    api_base: str

    def rebase(self, url: str) -> str:
        """``url`` with discord.py's built-in API base replaced by ours."""
        library_base = Route.BASE
        base = self.api_base.rstrip("/")
        if base == library_base or not url.startswith(library_base):
            return url
        return base + url[len(library_base) :]


def _rebasing(request: _Request, endpoints: Endpoints) -> _Request:
    # Both discord.py request functions take the Route first and read only route.url from it.
    async def rebased(route: Route, *args: Any, **kwargs: Any) -> Any:
        route.url = endpoints.rebase(route.url)
        return await request(route, *args, **kwargs)

    return rebased


def attach_rest(http: HTTPClient, endpoints: Endpoints) -> None:
    """Send this client's REST calls to ``endpoints`` (only this instance is changed)."""
    http.request = _rebasing(http.request, endpoints)  # type: ignore[method-assign]


def attach_gateway(http: HTTPClient, gateway_url: str) -> None:
    """Open this client's gateway connections on ``gateway_url`` instead of Discord's default."""
    connect = http.ws_connect
    target = yarl.URL(gateway_url)
    default_host = DiscordWebSocket.DEFAULT_GATEWAY.host

    async def redirected(url: str, *, compress: int = 0) -> aiohttp.ClientWebSocketResponse:
        requested = yarl.URL(url)
        if requested.host == default_host:
            # Keep the query discord.py negotiated (API version, encoding, compression).
            requested = target.with_query(requested.query)
        return await connect(str(requested), compress=compress)

    http.ws_connect = redirected  # type: ignore[method-assign]


@contextlib.contextmanager
def webhooks_pointed_at(endpoints: Endpoints) -> Iterator[None]:
    """Within this context (and tasks started from it) interaction responses go to ``endpoints``."""
    adapter = AsyncWebhookAdapter()  # type: ignore[no-untyped-call]  # discord.py leaves __init__ unannotated
    adapter.request = _rebasing(adapter.request, endpoints)  # type: ignore[method-assign]
    token = async_context.set(adapter)
    try:
        yield
    finally:
        async_context.reset(token)
