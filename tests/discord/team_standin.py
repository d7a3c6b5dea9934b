"""The Discord stand-in with what catch-up and files need: channel history, channels, a CDN, message commands.

``TeamStandIn`` adds the REST routes a bot reads a discussion with (``GET /channels/{id}/messages``
with ``before``/``after``/``limit``, one message, a channel), refuses them with 403 for the
channels in ``forbidden`` (the bot may not read them), holds them while ``history_open`` is
cleared, and serves attachment files the way Discord's CDN does: at the URL in the message
payload, without the bot's token.  The payload builders make the interactions of a message
context-menu command (type 2, data type 3) and of a modal sent back (type 5), filled in from
the modal the bot opened (callback type 9); like Discord's, they carry the invoker's resolved
permissions in the channel (``member.permissions``) and the bot's (``app_permissions``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.discord import payloads
from tests.discord.payloads import Payload
from tests.discord.standin import API, DiscordStandIn, Handler

FILES = "/attachments"
MAX_PAGE = 100  # Discord's most messages per history page
MISSING_ACCESS = {"message": "Missing Access", "code": 50001}


@dataclass(frozen=True)
class Download:
    """One file the bot fetched from the stand-in's CDN."""

    name: str
    authorization: str | None  # the Authorization header it sent (Discord's CDN needs none)


def _json(payload: Any, status: int = 200) -> web.Response:
    # discord.py parses JSON only under exactly this Content-Type (no charset), as Discord sends it.
    return web.Response(body=json.dumps(payload).encode(), status=status, content_type="application/json")


class TeamStandIn(DiscordStandIn):
    """The stand-in whose channels have a history the bot can read, and files it can download."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.history: dict[str, list[Payload]] = {}  # channel id -> its messages, in the order they were said
        self.forbidden: set[str] = set()  # channels the bot may not read: 403 Missing Access
        self.history_open = asyncio.Event()  # cleared: history reads are held (a slow read) until it is set
        self.history_open.set()
        self.downloads: list[Download] = []
        self._files: dict[str, tuple[bytes, str]] = {}  # file id -> bytes, content type

    # -- what tests use -------------------------------------------------------------------------

    def said(self, payload: Payload) -> Payload:
        """Keep ``payload`` (a ``message_create``) in its channel's history, as the bot will read it."""
        self.history.setdefault(payload["channel_id"], []).append(payload)
        return payload

    def attach(self, payload: Payload, name: str, data: bytes, content_type: str | None) -> Payload:
        """Add a file to a message payload, served at its ``url`` as Discord's CDN would."""
        file_id = str(payloads.new_id())
        self._files[file_id] = (data, content_type or "application/octet-stream")
        url = f"http://127.0.0.1:{self._port}{FILES}/{file_id}/{name}"
        attachment = {"id": file_id, "filename": name, "size": len(data), "url": url, "proxy_url": url}
        payload["attachments"].append(attachment | ({"content_type": content_type} if content_type else {}))
        return payload

    def modal(self, interaction: Payload) -> Payload:
        """The modal the bot opened in answer to ``interaction`` (its callback of type 9)."""
        path = f"/interactions/{interaction['id']}/{interaction['token']}/callback"
        (opened,) = [request.body for request in self.matching("POST", path) if request.body["type"] == 9]
        data: Payload = opened["data"]
        return data

    # -- HTTP -----------------------------------------------------------------------------------

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(f"{FILES}/"):  # the CDN: no token, and none is expected
            return await handler(request)
        return await super()._authorize(request, handler)

    def _add_routes(self, app: web.Application) -> None:
        # Before the stand-in's own routes: its catch-all answers 404 to anything registered after it.
        router = app.router
        router.add_get(f"{API}/channels/{{channel}}/messages", self._messages, name="history")
        router.add_get(f"{API}/channels/{{channel}}/messages/{{message}}", self._message, name="get_message")
        router.add_get(f"{API}/channels/{{channel}}", self._channel, name="get_channel")
        router.add_get(f"{FILES}/{{file}}/{{name}}", self._file, name="file")
        super()._add_routes(app)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        channel = request.match_info["channel"]
        if channel in self.forbidden:
            return _json(MISSING_ACCESS, status=403)
        await self.history_open.wait()
        newest_first = sorted(self.history.get(channel, []), key=lambda message: -int(message["id"]))
        query = request.query
        if "before" in query:
            newest_first = [m for m in newest_first if int(m["id"]) < int(query["before"])]
        limit = min(int(query.get("limit", 50)), MAX_PAGE)
        if "after" in query:  # the oldest ``limit`` after it, still newest first
            later = [m for m in newest_first if int(m["id"]) > int(query["after"])]
            return _json([_as_fetched(m) for m in later[-limit:]])
        return _json([_as_fetched(m) for m in newest_first[:limit]])

    async def _message(self, request: web.Request) -> web.StreamResponse:
        channel = request.match_info["channel"]
        if channel in self.forbidden:
            return _json(MISSING_ACCESS, status=403)
        found = [m for m in self.history.get(channel, []) if m["id"] == request.match_info["message"]]
        return _json(_as_fetched(found[0])) if found else _json({"message": "Unknown Message", "code": 10008}, 404)

    async def _channel(self, request: web.Request) -> web.StreamResponse:
        guild = payloads.guild_create(self.extra_channels)
        known = [*guild["channels"], *guild["threads"], payloads.dm_channel()]
        found = [channel for channel in known if channel["id"] == request.match_info["channel"]]
        return _json(found[0]) if found else _json({"message": "Unknown Channel", "code": 10003}, 404)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self.downloads.append(Download(request.match_info["name"], request.headers.get("Authorization")))
        found = self._files.get(request.match_info["file"])
        if found is None:
            return web.Response(status=404)
        data, content_type = found
        return web.Response(body=data, headers={"Content-Type": content_type})


def _as_fetched(message: Payload) -> Payload:
    """A message as REST returns it: without the gateway's ``member`` and ``guild_id``; the message it
    replies to comes along one level deep only (that one's own ``referenced_message`` is left out)."""
    fetched = {key: value for key, value in message.items() if key not in ("member", "guild_id")}
    if fetched.get("referenced_message"):
        replied_to = _as_fetched(fetched["referenced_message"])
        fetched["referenced_message"] = {key: value for key, value in replied_to.items() if key != "referenced_message"}
    return fetched


def message_command(
    name: str, target: Payload, *, channel: Payload, invoker: Payload | None = None, permissions: int | None = None
) -> Payload:
    """INTERACTION_CREATE for a message context-menu command (type 2, data type 3) used on ``target``.

    ``permissions``: the invoker's permissions in the channel, as Discord resolves them (default: a member's usual).
    """
    interaction = payloads.interaction_create(name, channel=channel, invoker=invoker)
    if permissions is not None:
        interaction["member"]["permissions"] = str(permissions)
    fetched = _as_fetched(target)
    interaction["data"] = {
        "id": str(payloads.new_id()),
        "name": name,
        "type": 3,
        "target_id": target["id"],
        "resolved": {"messages": {target["id"]: fetched}},
    }
    return interaction


def modal_submit(modal: Payload, answer: str, *, channel: Payload, invoker: Payload | None = None) -> Payload:
    """INTERACTION_CREATE of type 5: ``modal`` (as the bot opened it) sent back with ``answer`` in each text box."""
    interaction = payloads.interaction_create("", channel=channel, invoker=invoker)
    interaction["type"] = 5
    interaction["data"] = {"custom_id": modal["custom_id"], "components": _filled(modal["components"], answer)}
    return interaction


def _filled(components: list[Payload], answer: str) -> list[Payload]:
    """The components of a modal submission: labels and rows as sent, each text input with its value."""
    filled: list[Payload] = []
    for component in components:
        if component["type"] == 18:  # a label around one component
            (inner,) = _filled([component["component"]], answer)
            filled.append({"type": 18, "id": component.get("id", 0), "component": inner})
        elif component["type"] == 1:
            filled.append({"type": 1, "components": _filled(component["components"], answer)})
        elif component["type"] == 4:
            filled.append({"type": 4, "custom_id": component["custom_id"], "value": answer})
    return filled
