"""Point one discord.py client at a Discord-compatible server (``DISCORD_API_BASE``/``DISCORD_GATEWAY_URL``).

discord.py 2.7 reads both addresses from class attributes (``Route.BASE``,
``DiscordWebSocket.DEFAULT_GATEWAY``); assigning those would re-point every client in
the process, so this module rewrites URLs on their way out of *one* client: its
``HTTPClient.request`` (REST), a rebasing webhook adapter in discord.py's
``async_context`` variable for the serving task and its children (interaction
responses, follow-ups), and its ``ws_connect`` (the first gateway connection;
resume URLs the server hands out pass through).

The same two request functions also retry what discord.py leaves unretried (see
``retrying``): a 5xx other than 500/502/504/524 on REST, and a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import yarl
from discord.errors import DiscordServerError
from discord.gateway import DiscordWebSocket
from discord.http import HTTPClient, Route
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

log = logging.getLogger(__name__)

_Request = Callable[..., Coroutine[Any, Any, Any]]
# discord.py's HTTPClient retries these statuses itself (5 tries), and 429s after retry_after;
# its webhook adapter (interaction responses, follow-ups) retries every 5xx and 429.
LIBRARY_RETRIED = frozenset({500, 502, 504, 524})
RETRIES = 3
BACKOFF_S = 0.5
# Repeating these cannot do anything twice.
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})


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


def retrying(request: _Request, *, server_errors: bool) -> _Request:
    """``request`` retried ``RETRIES`` times, with exponential backoff and jitter, where discord.py gives up.

    A dropped connection (reset, closed before the answer) is retried when repeating the
    call is safe: it never connected, the method is idempotent, or the body carries a
    nonce Discord enforces (discord.py adds one to every message it creates).  A
    follow-up posted through a webhook has none, so it is not repeated.  With
    ``server_errors`` a ``DiscordServerError`` discord.py did not retry (503) is too.
    """

    async def retried(route: Route, *args: Any, **kwargs: Any) -> Any:
        for attempt in range(RETRIES + 1):
            try:
                return await request(route, *args, **kwargs)
            except DiscordServerError as error:
                if attempt == RETRIES or not server_errors or error.status in LIBRARY_RETRIED:
                    raise
                reason: Exception = error
            except aiohttp.ClientConnectionError as error:
                if attempt == RETRIES or not _repeatable(route, kwargs, error):
                    raise
                reason = error
            delay = BACKOFF_S * 2**attempt * (1 + random.random())  # jitter, not a secret
            log.warning("%s %s failed (%s); retrying in %.1f s", route.method, route.path, reason, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    return retried


def _repeatable(route: Route, kwargs: dict[str, Any], error: aiohttp.ClientConnectionError) -> bool:
    if kwargs.get("files") or kwargs.get("form") or kwargs.get("multipart"):
        return False  # their streams were read by the failed attempt
    if isinstance(error, aiohttp.ClientConnectorError) or route.method in _IDEMPOTENT:
        return True
    body = kwargs.get("json") or kwargs.get("payload")
    return isinstance(body, dict) and bool(body.get("enforce_nonce")) and body.get("nonce") is not None


def attach_rest(http: HTTPClient, endpoints: Endpoints) -> None:
    """Send this client's REST calls to ``endpoints``, retried (``retrying``); only this instance is changed."""
    http.request = retrying(_rebasing(http.request, endpoints), server_errors=True)  # type: ignore[method-assign]


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
    """Within this context (and tasks started from it) interaction responses go to ``endpoints``, retried."""
    adapter = AsyncWebhookAdapter()  # type: ignore[no-untyped-call]  # discord.py leaves __init__ unannotated
    rebased = _rebasing(adapter.request, endpoints)
    adapter.request = retrying(rebased, server_errors=False)  # type: ignore[method-assign]
    token = async_context.set(adapter)
    try:
        yield
    finally:
        async_context.reset(token)
