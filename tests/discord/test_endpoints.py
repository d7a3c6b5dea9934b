"""Unit tests of pointing one discord.py client at another server (URL rewriting only, no network)."""

from __future__ import annotations

import asyncio
from typing import Any

import discord
from discord.http import Route
from discord.webhook.async_ import async_context

from adapters.discord.endpoints import Endpoints, attach_gateway, attach_rest, webhooks_pointed_at

LOCAL = Endpoints("http://127.0.0.1:8080/api/v10/")


def test_rebase_replaces_only_discords_api_base() -> None:
    route = Route("POST", "/channels/{channel_id}/messages", channel_id=123)
    assert LOCAL.rebase(route.url) == "http://127.0.0.1:8080/api/v10/channels/123/messages"
    assert LOCAL.rebase("https://cdn.discordapp.com/avatars/1/a.png") == "https://cdn.discordapp.com/avatars/1/a.png"
    assert Endpoints(Route.BASE).rebase(route.url) == route.url


class RecordingHTTP:
    """Where discord.py's HTTPClient would send requests; records the URLs instead."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    async def request(self, route: Route, **kwargs: Any) -> Any:
        self.urls.append(route.url)
        return {}

    async def ws_connect(self, url: str, *, compress: int = 0) -> Any:
        self.urls.append(url)
        return None


async def test_rest_calls_of_that_client_only_are_rebased() -> None:
    pointed, untouched = RecordingHTTP(), RecordingHTTP()
    attach_rest(pointed, LOCAL)  # type: ignore[arg-type]

    await pointed.request(Route("GET", "/users/@me"))
    await untouched.request(Route("GET", "/users/@me"))

    assert pointed.urls == ["http://127.0.0.1:8080/api/v10/users/@me"]
    assert untouched.urls == [f"{Route.BASE}/users/@me"]


async def test_default_gateway_is_redirected_keeping_the_negotiated_query() -> None:
    http = RecordingHTTP()
    attach_gateway(http, "ws://127.0.0.1:8080/gateway")  # type: ignore[arg-type]
    default = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY

    await http.ws_connect(str(default.with_query(v=10, encoding="json", compress="zlib-stream")))
    await http.ws_connect("wss://gateway-us-east1-b.discord.gg/?v=10&encoding=json")  # a resume URL from READY

    assert http.urls == [
        "ws://127.0.0.1:8080/gateway?v=10&encoding=json&compress=zlib-stream",
        "wss://gateway-us-east1-b.discord.gg/?v=10&encoding=json",
    ]


async def test_interaction_responses_are_rebased_inside_the_context_and_its_tasks() -> None:
    default_adapter = async_context.get()
    with webhooks_pointed_at(LOCAL):
        inside = async_context.get()
        in_task = await asyncio.create_task(_adapter_in_task())
    assert inside is not default_adapter and in_task is inside
    assert async_context.get() is default_adapter


async def _adapter_in_task() -> Any:
    return async_context.get()
