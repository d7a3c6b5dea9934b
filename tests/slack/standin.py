"""A local Slack stand-in: the Web API methods the bot calls and a Socket Mode WebSocket.

Like bolt-python's own test servers, it speaks Slack's real HTTP and WebSocket
protocols on 127.0.0.1, records every request and acknowledgement, and lets a test
drive events and slash commands and make the next calls of a method fail (429 with
Retry-After, 500, or a connection dropped before any answer).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from tests.faults import Failing, Fault, FaultPlan, drop_connection

BOT_TOKEN = "xoxb-standin-bot-token"
APP_TOKEN = "xapp-standin-app-token"
BOT_USER_ID = "UBOT0001"
BOT_ID = "BBOT0001"
TEAM_ID = "T0000001"
APP_ID = "A0000001"
CLOSED_CHANNEL = "CCLOSED01"  # a channel the bot is not a member of

T = TypeVar("T")
DROPPED_STATUS = 0  # what ``ApiCall.status`` says of a call whose connection was dropped


@dataclass
class ApiCall:
    """One Web API request as the stand-in received it (``status`` 0: its connection was dropped)."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    status: int = 200
    at: float = field(default_factory=time.monotonic)

    @property
    def token(self) -> str | None:
        """The bearer token the request carried."""
        auth = self.headers.get("Authorization", "")
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else self.params.get("token")


@dataclass
class Posted:
    """A message the bot posted, with every text it had (post first, then each update)."""

    channel: str
    ts: str
    thread_ts: str | None
    texts: list[str]
    # When each of ``texts`` was shown (monotonic clock): tells the order of messages that were edited later.
    shown_at: list[float] = field(default_factory=lambda: [time.monotonic()])

    @property
    def text(self) -> str:
        """The text the message shows now."""
        return self.texts[-1]


WebApiMethod = Callable[[dict[str, Any]], dict[str, Any]]


class SlackStandIn:
    """Serves ``/api/<method>``, ``/socket-mode`` and ``/respond/<id>`` on 127.0.0.1.

    ``methods`` takes more Web API methods (name -> handler of the call's parameters) and
    ``routes`` more HTTP routes (file downloads), both before the stand-in starts.
    """

    def __init__(self) -> None:
        self.methods: dict[str, WebApiMethod] = {}
        self.routes: list[web.RouteDef] = []
        self.calls: list[ApiCall] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self.responses: list[dict[str, Any]] = []
        self.messages: dict[str, Posted] = {}
        # Every message the bot posted and every response_url response, in the order they first appeared;
        # a response with replace_original updates the last one sent to the same response_url.
        self.timeline: list[Posted] = []
        self.sockets_opened = 0
        self._socket: web.WebSocketResponse | None = None
        # Every open Socket Mode connection by its number (0 for the first ever opened), and the envelopes sent
        # over each; Slack spreads events over an app's connections, so several processes share the load.
        self.connections: dict[int, web.WebSocketResponse] = {}
        self.delivered: dict[str, int] = {}
        self._retiring: set[int] = set()  # asked to disconnect: no new envelopes go there
        self._turn = itertools.count()
        self._numbers = itertools.count()
        self._faults = FaultPlan()
        self._changed = asyncio.Condition()
        self._ts = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def __aenter__(self) -> SlackStandIn:
        app = web.Application()
        app.add_routes(
            [
                web.post("/api/{method}", self._api),
                web.get("/api/{method}", self._api),  # Slack takes reads (users.info ...) as GET too
                web.get("/socket-mode", self._socket_mode),
                web.post("/respond/{id}", self._respond),
                *self.routes,
            ]
        )
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for socket in list(self.connections.values()):
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        """What ``SLACK_API_URL`` should be to use this stand-in."""
        return f"{self.base_url}/api/"

    # ---- what tests drive -------------------------------------------------------------

    def fail_next(self, method: str, *, retry_after: int = 1) -> None:
        """Answer the next call of ``method`` with HTTP 429 and ``Retry-After``."""
        self.fail(method, Fault.RATE_LIMITED, retry_after=retry_after)

    def fail(self, method: str, fault: Fault, times: int | None = 1, *, retry_after: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` fail with ``fault`` (``None``: every call from now on).

        Queued after faults already waiting; ``retry_after`` is the 429's ``Retry-After`` in seconds.
        ``DROPPED_AFTER`` is not offered: Slack's Web API has no idempotency key, so no client can repeat such a call.
        """
        assert fault is not Fault.DROPPED_AFTER, "the Slack stand-in drops calls before carrying them out"
        self._faults.add(method, Failing(fault, times, retry_after=retry_after))

    def call_counts(self) -> Counter[str]:
        """How many times each Web API method was called, failed calls included."""
        return Counter(call.method for call in self.calls)

    async def send_event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_attempt: int = 0,
        connection: int | None = None,
    ) -> str:
        """Deliver an Events API event over a socket; return the envelope id.

        ``connection``: over that open connection (by its number); ``None``: the next one in turn.
        """
        payload = event_payload(event, event_id or f"Ev{uuid.uuid4().hex[:10].upper()}")
        return await self._send_envelope(
            "events_api",
            payload,
            connection=connection,
            retry_attempt=retry_attempt,
            retry_reason="timeout" if retry_attempt else "",
            accepts_response_payload=False,
        )

    async def send_command(self, command: str, text: str, *, user: str, channel: str) -> str:
        """Deliver a slash command over the socket; return the envelope id."""
        payload = command_payload(command, text, user=user, channel=channel, response_url=self.response_url())
        return await self._send_envelope("slash_commands", payload, accepts_response_payload=True)

    async def send_interactive(self, payload: dict[str, Any]) -> str:
        """Deliver an interactivity payload (a shortcut, a button click, a view submission); return the envelope id."""
        return await self._send_envelope("interactive", payload, accepts_response_payload=True)

    async def send_disconnect(self) -> None:
        """Ask the app to move to a new connection, as Slack does every few hours."""
        socket = await self.wait_for(lambda: self._socket, limit_s=10)
        self._retiring.update(number for number, open_ in self.connections.items() if open_ is socket)
        await socket.send_str(json.dumps({"type": "disconnect", "reason": "refresh_requested"}))

    async def wait_connections(self, count: int, limit_s: float = 20.0) -> list[int]:
        """Wait until at least ``count`` Socket Mode connections are open; return their numbers, oldest first."""
        return await self.wait_for(
            lambda: sorted(self.connections) if len(self.connections) >= count else None, limit_s
        )

    @property
    def socket_open(self) -> bool:
        """Whether an app is connected over Socket Mode now."""
        return self._socket is not None and not self._socket.closed

    def response_url(self) -> str:
        """A fresh response_url for a slash command."""
        return f"{self.base_url}/respond/{uuid.uuid4().hex}"

    def next_ts(self) -> str:
        """A new message timestamp, unique and increasing like Slack's."""
        return f"{int(time.time())}.{next(self._ts):06d}"

    # ---- waiting on what was recorded ---------------------------------------------------

    async def wait_for(self, found: Callable[[], T | None], limit_s: float = 20.0) -> T:
        """Wait until ``found()`` returns something other than ``None`` (or fail after ``limit_s`` seconds)."""

        async def poll() -> T:
            async with self._changed:
                while (result := found()) is None:
                    await self._changed.wait()
                return result

        return await asyncio.wait_for(poll(), limit_s)

    async def wait_ack(self, envelope_id: str, limit_s: float = 10.0) -> dict[str, Any]:
        """The acknowledgement of an envelope."""
        return await self.wait_for(lambda: self.acks.get(envelope_id), limit_s)

    async def wait_replies(self, channel: str, thread_ts: str, count: int = 1, limit_s: float = 30.0) -> list[Posted]:
        """Wait until the bot has posted ``count`` messages in a thread; return them."""

        def posted() -> list[Posted] | None:
            replies = self.thread(channel, thread_ts)
            return replies if len(replies) >= count else None

        return await self.wait_for(posted, limit_s)

    async def wait_text(self, channel: str, thread_ts: str, text: str, limit_s: float = 30.0) -> Posted:
        """Wait until a message of the bot in a thread shows exactly ``text``; return it."""
        return await self.wait_for(
            lambda: next((m for m in self.thread(channel, thread_ts) if m.text == text), None), limit_s
        )

    async def wait_response(self, matches: Callable[[dict[str, Any]], bool], limit_s: float = 30.0) -> dict[str, Any]:
        """Wait until a response_url response matches; return the first that does."""
        return await self.wait_for(lambda: next((r for r in self.responses if matches(r)), None), limit_s)

    def calls_of(self, method: str) -> list[ApiCall]:
        """Every recorded call of ``method``, failed ones included."""
        return [call for call in self.calls if call.method == method]

    def thread(self, channel: str, thread_ts: str) -> list[Posted]:
        """The bot's messages in a thread, oldest first."""
        return [m for m in self.messages.values() if m.channel == channel and m.thread_ts == thread_ts]

    # ---- the servers --------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        call = ApiCall(method, await _params(request), dict(request.headers))
        failing = self._faults.next(method)
        if failing is None:
            response = web.json_response(self._answer(call))
        elif failing.fault is Fault.RATE_LIMITED:
            call.status = 429
            headers = {"Retry-After": str(failing.retry_after)}
            response = web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers=headers)
        elif failing.fault is Fault.SERVER_ERROR:
            call.status = failing.status
            response = web.json_response({"ok": False, "error": "internal_error"}, status=failing.status)
        else:
            call.status = DROPPED_STATUS
        await self._record(lambda: self.calls.append(call))
        if call.status == DROPPED_STATUS:
            drop_connection(request)
        return response

    def _answer(self, call: ApiCall) -> dict[str, Any]:
        expected = APP_TOKEN if call.method == "apps.connections.open" else BOT_TOKEN
        if call.token != expected:
            return {"ok": False, "error": "invalid_auth"}
        handler = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            **self.methods,
        }.get(call.method)
        return handler(call.params) if handler else {"ok": False, "error": "unknown_method"}

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://standin.slack.test/",
            "team": "Stand-in",
            "user": "bot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": self.base_url.replace("http://", "ws://") + "/socket-mode"}

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, text = str(params.get("channel") or ""), str(params.get("text") or "")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if channel == CLOSED_CHANNEL:
            return {"ok": False, "error": "not_in_channel"}
        if not text.strip():
            return {"ok": False, "error": "no_text"}
        ts = self.next_ts()
        thread_ts = params.get("thread_ts") or None
        self.messages[ts] = Posted(channel, ts, thread_ts, [text])
        self.timeline.append(self.messages[ts])
        message = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "text": text, "ts": ts}
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        posted = self.messages.get(str(params.get("ts") or ""))
        if posted is None or posted.channel != params.get("channel"):
            return {"ok": False, "error": "message_not_found"}
        text = str(params.get("text") or "")
        if not text.strip():
            return {"ok": False, "error": "no_text"}
        posted.texts.append(text)
        posted.shown_at.append(time.monotonic())
        return {"ok": True, "channel": posted.channel, "ts": posted.ts, "text": text}

    async def _socket_mode(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        hello = {"type": "hello", "num_connections": len(self.connections) + 1, "connection_info": {"app_id": APP_ID}}
        await socket.send_str(json.dumps(hello))
        number = next(self._numbers)

        def opened() -> None:
            self._socket = socket
            self.connections[number] = socket
            self.sockets_opened += 1

        def closed() -> None:
            self.connections.pop(number, None)
            self._retiring.discard(number)
            if self._socket is socket:
                # The newest connection still open (if any) is the one a disconnect request goes to.
                self._socket = self.connections[max(self.connections)] if self.connections else None

        await self._record(opened)
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                await self._record_ack(json.loads(message.data))
        await self._record(closed)
        return socket

    async def _record_ack(self, ack: dict[str, Any]) -> None:
        def store() -> None:
            self.acks[str(ack.get("envelope_id"))] = ack

        await self._record(store)

    async def _respond(self, request: web.Request) -> web.Response:
        body = await request.json()
        url = f"respond/{request.match_info['id']}"

        def store() -> None:
            self.responses.append(body)
            earlier = [p for p in self.timeline if p.channel == url]
            if body.get("replace_original") and earlier:
                earlier[-1].texts.append(str(body.get("text") or ""))
                earlier[-1].shown_at.append(time.monotonic())
            else:
                self.timeline.append(Posted(url, str(len(self.responses)), None, [str(body.get("text") or "")]))

        await self._record(store)
        return web.Response(text="ok")

    async def _send_envelope(
        self, kind: str, payload: dict[str, Any], *, connection: int | None = None, **extra: Any
    ) -> str:
        number = await self.wait_for(lambda: self._connection_for(connection), limit_s=10)
        envelope_id = str(uuid.uuid4())
        self.delivered[envelope_id] = number
        message = {"envelope_id": envelope_id, "payload": payload, "type": kind, **extra}
        await self.connections[number].send_str(json.dumps(message))
        return envelope_id

    def _connection_for(self, chosen: int | None) -> int | None:
        """The connection an envelope goes over: ``chosen`` once open, else the open ones in turn."""
        if chosen is not None:
            return chosen if chosen in self.connections else None
        serving = sorted(set(self.connections) - self._retiring)
        return serving[next(self._turn) % len(serving)] if serving else None

    async def _record(self, change: Callable[[], object]) -> None:
        async with self._changed:
            change()
            self._changed.notify_all()


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        params.update(await request.json())
    elif request.can_read_body:
        params.update((await request.post()).items())
    return params


def event_payload(event: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The Events API ``event_callback`` body wrapping ``event``."""
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM_ID,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [{"enterprise_id": None, "team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}],
        "is_ext_shared_channel": False,
    }


def command_payload(command: str, text: str, *, user: str, channel: str, response_url: str) -> dict[str, str]:
    """A slash command body as Slack sends it."""
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM_ID,
        "team_domain": "standin",
        "channel_id": channel,
        "channel_name": "general",
        "user_id": user,
        "user_name": user.lower(),
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "response_url": response_url,
        "trigger_id": f"{int(time.time())}.trigger",
    }


def message_event(
    text: str,
    *,
    channel: str,
    user: str,
    ts: str,
    thread_ts: str | None = None,
    kind: str = "message",
    channel_type: str = "channel",
    **extra: Any,
) -> dict[str, Any]:
    """A ``message`` or ``app_mention`` event of a human's message."""
    event: dict[str, Any] = {
        "type": kind,
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "team": TEAM_ID,
        **extra,
    }
    if kind == "message":
        event["channel_type"] = channel_type
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event
