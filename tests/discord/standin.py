"""A local Discord stand-in: the REST routes and the gateway WebSocket a bot uses, on 127.0.0.1.

It speaks API v10 as discord.py 2.7 expects it: ``Bot`` token auth on REST, the
gateway handshake (HELLO, IDENTIFY -> READY and GUILD_CREATE, heartbeats) with
JSON encoding and whichever transport compression the client asks for in its URL
(``zlib-stream`` with Z_SYNC_FLUSH per message, ``zstd-stream``, or none).  Every
HTTP request is recorded (method, path under the API base, query, JSON body) and
every message the bot posts is kept with the history of its edits, so tests can
wait on what the bot did instead of sleeping.  A test can make the next calls of a
route fail (``fail``): 429 with ``retry_after``, a 5xx, or a connection dropped before
or after the stand-in carried the call out.  Like Discord, it creates a message once
per ``nonce`` when the body asks for ``enforce_nonce`` (discord.py always does).
A sharded bot's sessions each get their shard's servers (``(guild_id >> 22) % count``) and
dispatches; DMs go to shard 0, as on Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from tests.discord import payloads
from tests.discord.gateway import GatewaySession
from tests.discord.payloads import APP_ID, MESSAGE_CONTENT_FLAG, MESSAGE_CONTENT_INTENT, TOKEN, Payload
from tests.faults import Failing, Fault, FaultPlan, drop_connection

log = logging.getLogger(__name__)

API = "/api/v10"
GATEWAY_PATHS = ("/gateway", "/alt-gateway")
HEARTBEAT_INTERVAL_MS = 41250  # what Discord's HELLO names
POLL_S = 0.05
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Recorded:
    """One HTTP request the bot made."""

    method: str
    path: str  # under the API base, e.g. /channels/1/messages
    query: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)  # when the stand-in received it
    route: str = ""  # the route's name: create_message, edit_message, typing, callback, followup, edit_followup...


@dataclass
class Posted:
    """A message the bot posted, with every text it has had (the last is current)."""

    id: str
    channel_id: str
    contents: list[str]
    bodies: list[Payload] = field(default_factory=list)
    webhook: bool = False  # an interaction response or follow-up

    @property
    def content(self) -> str:
        return self.contents[-1]

    @property
    def replying_to(self) -> str | None:
        """The id of the message this one answers (its message_reference), if any."""
        reference = self.bodies[0].get("message_reference") if self.bodies else None
        return str(reference["message_id"]) if reference else None


def _summary(body: Any) -> str:
    """The part of a request body worth reading in a log: the message text, if any."""
    data = body.get("data", body) if isinstance(body, dict) else None
    return repr(data["content"]) if isinstance(data, dict) and "content" in data else ""


def _json(payload: Any, status: int = 200) -> web.Response:
    # discord.py parses a body as JSON only when Content-Type is exactly application/json, as Discord sends it.
    return web.Response(body=json.dumps(payload).encode(), status=status, content_type="application/json")


class DiscordStandIn:
    """Start with ``await start()``; point the bot at ``api_base`` (and optionally ``gateway_url``)."""

    def __init__(
        self,
        *,
        app_flags: int = MESSAGE_CONTENT_FLAG,
        token: str = TOKEN,
        heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS,
        extra_channels: Sequence[int] = (),
    ) -> None:
        """``heartbeat_interval_ms`` is what HELLO asks for; ``extra_channels`` are more text channels in the server."""
        self.app_flags = app_flags
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.extra_channels = tuple(extra_channels)
        self.gateway_denies_content = False  # the gateway refuses the intent whatever the flags say
        self.more_guilds: list[Payload] = []  # GUILD_CREATE payloads of further servers, each sent to its shard
        self.held_shards: dict[int, asyncio.Event] = {}  # shard id -> set to let its READY go out
        self.expired_tokens: set[str] = set()  # interaction tokens past Discord's 15 minutes
        self.token = token
        self.requests: list[Recorded] = []
        self.posted: list[Posted] = []
        self.sessions: list[GatewaySession] = []  # identified and open
        self.closed_sessions: list[tuple[GatewaySession, int | None]] = []
        self.interactions: dict[str, Payload] = {}  # token -> the interaction dispatched
        self._originals: dict[str, Posted] = {}  # token -> the interaction's original response
        self.failed: list[tuple[Recorded, Fault]] = []  # the requests the stand-in failed on purpose
        self._faults = FaultPlan()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self._port}{API}"

    def gateway_url(self, path: str = GATEWAY_PATHS[0]) -> str:
        return f"ws://127.0.0.1:{self._port}{path}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record, self._authorize, self._inject_faults])
        self._add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        for session in list(self.sessions):
            await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what tests use -------------------------------------------------------------------------

    async def wait_for(self, check: Callable[[], T | None], seconds: float = 60.0) -> T:
        """Wait until ``check()`` is truthy (re-checked after every request and gateway event)."""
        try:
            async with asyncio.timeout(seconds), self._changed:
                while not (result := check()):
                    # Woken by every request; the short poll also sees changes made by the bot's side alone.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), POLL_S)
        except TimeoutError:
            seen = "\n".join(f"  {r.method} {r.path} {r.body}" for r in self.requests[-15:])
            raise AssertionError(f"timed out waiting; last requests:\n{seen}") from None
        return result

    async def connected(self, seconds: float = 60.0, *, shard: tuple[int, int] | None = None) -> GatewaySession:
        """The bot's gateway session, once it has identified (with ``shard``: that shard's session)."""
        if shard is not None:
            return await self.wait_for(lambda: next((s for s in self.sessions if s.shard == shard), None), seconds)
        return await self.wait_for(lambda: self.sessions[-1] if self.sessions else None, seconds)

    async def dispatch(self, event: str, data: Payload) -> None:
        """Send a gateway dispatch to every connected bot whose shard receives it (see ``GatewaySession.receives``)."""
        if event == "INTERACTION_CREATE":
            self.interactions[data["token"]] = data
        for session in self.sessions:
            if session.receives(data):
                await session.dispatch(event, data)

    def fail(
        self, route: str, fault: Fault, times: int | None = 1, *, status: int = 500, retry_after: float = 0.2
    ) -> None:
        """Make the next ``times`` calls of the route named ``route`` fail with ``fault`` (``None``: every call).

        ``status`` is a ``SERVER_ERROR``'s status; ``retry_after`` a 429's wait in seconds.
        """
        self._faults.add(route, Failing(fault, times, status, retry_after))

    def call_counts(self) -> Counter[str]:
        """How many times each named route was called, failed calls included."""
        return Counter(request.route for request in self.requests if request.route)

    def matching(self, method: str, path_start: str) -> list[Recorded]:
        """Recorded requests with this method whose path starts with ``path_start``."""
        return [r for r in self.requests if r.method == method and r.path.startswith(path_start)]

    def message_bodies(self) -> list[Payload]:
        """Every message body the bot sent or edited: channel messages, follow-ups, interaction responses."""
        bodies = []
        for request in self.requests:
            body = request.body if isinstance(request.body, dict) else {}
            data = body.get("data") if request.path.endswith("/callback") else body
            if isinstance(data, dict) and "content" in data:
                bodies.append(data)
        return bodies

    def in_channel(self, channel_id: int | str) -> list[Posted]:
        """Messages the bot posted in a channel, oldest first."""
        return [message for message in self.posted if message.channel_id == str(channel_id)]

    def replies_to(self, message_id: str) -> list[Posted]:
        """The bot's messages that answer ``message_id``: the first part references it, the rest follow."""
        for index, message in enumerate(self.posted):
            if message.replying_to == str(message_id):
                parts = [message]
                for later in self.posted[index + 1 :]:
                    if later.channel_id != message.channel_id or later.webhook:
                        continue
                    if later.replying_to is not None:
                        break
                    parts.append(later)
                return parts
        return []

    # -- HTTP -----------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in GATEWAY_PATHS:
            return await handler(request)
        body = await request.json() if request.can_read_body else None
        path = request.path.removeprefix(API)
        route = request.match_info.route.name or ""
        self.requests.append(Recorded(request.method, path, dict(request.query), body, route=route))
        log.info("%s %s %s", request.method, path, _summary(body))
        try:
            return await handler(request)
        finally:
            await self._notify()

    @web.middleware
    async def _inject_faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        failing = self._faults.next(request.match_info.route.name or "")
        if failing is None:
            return await handler(request)
        self.failed.append((self.requests[-1], failing.fault))
        if failing.fault is Fault.RATE_LIMITED:
            body = {"message": "You are being rate limited.", "retry_after": failing.retry_after, "global": False}
            # discord.py honours a 429 only from behind Discord's proxy (Via); anything else is Cloudflare's ban.
            headers = {"Via": "1.1 google", "Retry-After": str(failing.retry_after)}
            return web.Response(
                body=json.dumps(body).encode(), status=429, content_type="application/json", headers=headers
            )
        if failing.fault is Fault.SERVER_ERROR:
            return _json({"message": "Server error", "code": 0}, status=failing.status)
        if failing.fault is Fault.DROPPED_AFTER:
            await handler(request)
        drop_connection(request)

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path.removeprefix(API)
        open_routes = path.startswith(("/webhooks/", "/interactions/")) or request.path in GATEWAY_PATHS
        if path.startswith("/webhooks/") and request.match_info.get("token") in self.expired_tokens:
            return _json({"message": "Invalid Webhook Token", "code": 50027}, status=401)
        if not open_routes and request.headers.get("Authorization") != f"Bot {self.token}":
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        return await handler(request)

    def _add_routes(self, app: web.Application) -> None:
        static = {
            "/users/@me": payloads.bot_user,
            "/oauth2/applications/@me": lambda: payloads.application(self.app_flags),
            "/gateway/bot": self._gateway_bot,
        }
        for path, build in static.items():
            app.router.add_get(API + path, self._static(build))
        router = app.router
        router.add_put(f"{API}/applications/{{app}}/commands", self._commands, name="commands")
        router.add_post(f"{API}/users/@me/channels", self._open_dm, name="open_dm")
        router.add_post(f"{API}/channels/{{channel}}/messages", self._create_message, name="create_message")
        router.add_patch(f"{API}/channels/{{channel}}/messages/{{message}}", self._edit_message, name="edit_message")
        router.add_post(f"{API}/channels/{{channel}}/typing", self._typing, name="typing")
        router.add_post(f"{API}/interactions/{{interaction}}/{{token}}/callback", self._callback, name="callback")
        router.add_post(f"{API}/webhooks/{{app}}/{{token}}", self._followup, name="followup")
        router.add_patch(
            f"{API}/webhooks/{{app}}/{{token}}/messages/{{message}}", self._edit_followup, name="edit_followup"
        )
        for path in GATEWAY_PATHS:
            app.router.add_get(path, self._gateway)
        app.router.add_route("*", "/{tail:.*}", self._unknown)

    def _static(self, build: Callable[[], Payload]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return _json(build())

        return handler

    def _gateway_bot(self) -> Payload:
        limit = {"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}
        return {"url": self.gateway_url(), "shards": 1, "session_start_limit": limit}

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        return _json({"message": "404: Not Found", "code": 0}, status=404)

    async def _commands(self, request: web.Request) -> web.StreamResponse:
        commands = await request.json()
        echoed = [
            {"id": str(payloads.new_id()), "application_id": str(APP_ID), "version": "1", "type": 1}
            # Discord answers every command with a description: "" for message and user commands.
            | {"options": [], "default_member_permissions": None, "dm_permission": True, "nsfw": False}
            | {"description": ""}
            | command
            for command in commands
        ]
        return _json(echoed)

    async def _open_dm(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        return _json(payloads.dm_channel() | {"recipients": [payloads.user(int(body["recipient_id"]))]})

    async def _typing(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def _create_message(self, request: web.Request) -> web.StreamResponse:
        return _json(self._post(request.match_info["channel"], await request.json()))

    async def _edit_message(self, request: web.Request) -> web.StreamResponse:
        return await self._edit(request.match_info["message"], await request.json())

    async def _followup(self, request: web.Request) -> web.StreamResponse:
        channel = self.interactions[request.match_info["token"]]["channel_id"]
        return _json(self._post(channel, await request.json(), webhook=True))

    async def _edit_followup(self, request: web.Request) -> web.StreamResponse:
        message_id = request.match_info["message"]
        if message_id == "@original":
            message_id = self._original(request.match_info["token"]).id
        return await self._edit(message_id, await request.json(), webhook=True)

    async def _callback(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        token = request.match_info["token"]
        data = body.get("data") or {}
        loading = body["type"] == 5
        original = self._original(token)
        original.bodies.append(body)
        if "content" in data:
            original.contents.append(data["content"])
        interaction = {
            "id": request.match_info["interaction"],
            "type": 2,
            "response_message_id": original.id,
            "response_message_loading": loading,
            "response_message_ephemeral": bool(data.get("flags", 0) & 64),
        }
        return _json({"interaction": interaction, "resource": {"type": body["type"]}})

    def _original(self, token: str) -> Posted:
        """The message standing for an interaction's original response."""
        if token not in self._originals:
            channel = self.interactions[token]["channel_id"]
            self._originals[token] = Posted(str(payloads.new_id()), channel, [""], [], webhook=True)
            self.posted.append(self._originals[token])
        return self._originals[token]

    def _post(self, channel_id: str, body: Payload, *, webhook: bool = False) -> Payload:
        if body.get("enforce_nonce") and body.get("nonce") is not None:
            for earlier in self.posted:
                first = earlier.bodies[0] if earlier.bodies else {}
                if earlier.channel_id == channel_id and first.get("nonce") == body["nonce"]:
                    return self._message_payload(earlier, webhook)  # Discord's answer to a repeated nonce
        message = Posted(str(payloads.new_id()), channel_id, [body.get("content", "")], [body], webhook)
        self.posted.append(message)
        return self._message_payload(message, webhook)

    async def _edit(self, message_id: str, body: Payload, *, webhook: bool = False) -> web.StreamResponse:
        for message in self.posted:
            if message.id == message_id:
                message.bodies.append(body)
                if "content" in body:
                    message.contents.append(body["content"])
                return _json(self._message_payload(message, webhook))
        return _json({"message": "Unknown Message", "code": 10008}, status=404)

    def _message_payload(self, message: Posted, webhook: bool) -> Payload:
        first = message.bodies[0] if message.bodies else {}
        channel_id = int(message.channel_id)
        in_guild = channel_id != payloads.DM_CHANNEL_ID
        payload = payloads.message_create(
            message.content, channel_id=channel_id, author=payloads.bot_user(), in_guild=in_guild
        )
        payload.update(id=message.id, flags=first.get("flags", 0))
        payload.pop("member", None)
        if webhook:
            payload.update(webhook_id=str(APP_ID), application_id=str(APP_ID))
        if "message_reference" in first:
            payload.update(type=19, message_reference=first["message_reference"])
        return payload

    # -- gateway --------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if request.query.get("encoding", "json") != "json":
            await ws.close(code=4002, message=b"this stand-in speaks JSON only")
            return ws
        session = GatewaySession(ws, request.path, request.query.get("compress"))
        await session.send({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None})
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                await self._on_gateway_payload(session, json.loads(frame.data))
        if session in self.sessions:
            self.sessions.remove(session)
        self.closed_sessions.append((session, ws.close_code))
        await self._notify()
        return ws

    async def _on_gateway_payload(self, session: GatewaySession, payload: Payload) -> None:
        op = payload["op"]
        if op == 1:
            session.heartbeats.append(time.monotonic())
            await session.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(session, payload["d"])
        elif op == 6:  # no sessions survive here: make the client identify afresh
            await session.send({"op": 9, "d": False, "s": None, "t": None})

    async def _identify(self, session: GatewaySession, data: Payload) -> None:
        session.identify = data
        if data.get("token") != self.token:
            await session.ws.close(code=4004, message=b"Authentication failed.")
            return
        wants_content = bool(data.get("intents", 0) & MESSAGE_CONTENT_INTENT)
        if wants_content and (self.gateway_denies_content or not self.app_flags & MESSAGE_CONTENT_FLAG):
            await session.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        if (gate := self.held_shards.get(session.shard[0])) is not None:
            await gate.wait()
        session_id = f"session-{payloads.new_id()}"
        guilds = [payloads.guild_create(self.extra_channels), *self.more_guilds]
        guilds = [guild for guild in guilds if session.serves_guild(guild["id"])]  # like Discord, per shard
        ready = payloads.ready(session_id, self.gateway_url(session.path), self.app_flags)
        ready["guilds"] = [{"id": guild["id"], "unavailable": True} for guild in guilds]
        if "shard" in data:
            ready["shard"] = list(session.shard)
        await session.dispatch("READY", ready)
        for guild in guilds:
            await session.dispatch("GUILD_CREATE", guild)
        self.sessions.append(session)
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
