"""The stand-in's workspace: people with display names, thread histories and files, served as Slack serves them.

``Workspace.install(standin)`` adds ``users.info``, ``conversations.replies`` (cursor pagination, the
thread's first message at the top of every page, as Slack does), ``views.open`` and ``chat.postEphemeral``
to the stand-in's Web API, and a file download route that wants the bot token (without it Slack
answers 200 with its sign-in page), before the stand-in starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.slack.standin import BOT_TOKEN, BOT_USER_ID, CLOSED_CHANNEL, SlackStandIn

SIGN_IN_PAGE = "<html><body>Sign in to Slack</body></html>"


@dataclass
class Download:
    """One file download the stand-in served."""

    file_id: str
    authorized: bool


@dataclass
class Workspace:
    """What Slack knows beyond the bot's own messages; tests fill it and read what the bot asked of it."""

    page_size: int = 10
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    threads: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    views: list[dict[str, Any]] = field(default_factory=list)
    ephemerals: list[dict[str, Any]] = field(default_factory=list)
    downloads: list[Download] = field(default_factory=list)
    base_url: str = ""

    def install(self, standin: SlackStandIn) -> None:
        """Serve this workspace from ``standin`` (call before it starts)."""
        standin.methods.update(
            {
                "users.info": self._users_info,
                "conversations.replies": self._replies,
                "views.open": self._views_open,
                "chat.postEphemeral": self._post_ephemeral,
            }
        )
        standin.routes.append(web.get("/files/{file_id}/{name}", self._download))

    def person(self, user_id: str, display_name: str, real_name: str = "", handle: str = "") -> None:
        """Someone in the workspace (an empty display name: Slack falls back to the real name)."""
        profile = {"display_name": display_name, "real_name": real_name}
        self.users[user_id] = {"id": user_id, "name": handle or user_id.lower(), "profile": profile}

    def thread(self, channel: str, thread_ts: str, messages: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """A thread of (user id, text) messages; the first one starts it at ``thread_ts``."""
        seconds, _, _ = thread_ts.partition(".")
        history = [
            {
                "type": "message",
                "user": user,
                "text": text,
                "ts": thread_ts if number == 0 else f"{seconds}.{number + 100:06d}",
                "thread_ts": thread_ts,
                **({"bot_id": "BBOT0001"} if user == BOT_USER_ID else {}),
            }
            for number, (user, text) in enumerate(messages)
        ]
        self.threads[channel, thread_ts] = history
        return history

    def file(self, file_id: str, name: str, mimetype: str, data: bytes) -> dict[str, Any]:
        """A file to share in a message event, as Slack describes it there (call once the stand-in runs)."""
        self.files[file_id] = data
        url = f"{self.base_url}/files/{file_id}/{name}"
        return {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "size": len(data),
            "mode": "hosted",
            "url_private": url,
            "url_private_download": f"{url}?download=1",
        }

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(params.get("user") or ""))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    def _replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(params.get("channel") or ""), str(params.get("ts") or "")
        if channel == CLOSED_CHANNEL:
            return {"ok": False, "error": "not_in_channel"}
        history = self.threads.get((channel, ts))
        if history is None:
            return {"ok": False, "error": "thread_not_found"}
        start = int(params.get("cursor") or 1)
        page_size = min(int(params.get("limit") or 1000), self.page_size)
        # The thread's first message heads every page; the rest follows in pages.
        page = [history[0], *history[start : start + page_size - 1]]
        following = start + page_size - 1
        cursor = str(following) if following < len(history) else ""
        return {"ok": True, "messages": page, "has_more": bool(cursor), "response_metadata": {"next_cursor": cursor}}

    def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        view = params["view"]
        self.views.append(view if isinstance(view, dict) else {})
        return {"ok": True, "view": {"id": f"V{len(self.views)}", **self.views[-1]}}

    def _post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        self.ephemerals.append(params)
        return {"ok": True, "message_ts": "1.000001"}

    async def _download(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        authorized = request.headers.get("Authorization") == f"Bearer {BOT_TOKEN}"
        self.downloads.append(Download(file_id, authorized))
        if not authorized:
            return web.Response(text=SIGN_IN_PAGE, content_type="text/html")
        data = self.files.get(file_id)
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/octet-stream")
