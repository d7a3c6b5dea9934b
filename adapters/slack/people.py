"""Who people are on Slack: display names from ``users.info``, cached.

The model reads names, never Slack ids: an id in its prompt could come back as a ping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.state import BoundedMap
from bot.attribution import UNKNOWN

log = logging.getLogger(__name__)

# A renamed person shows their new name within the hour; a busy workspace's active people fit the cache.
NAME_TTL_S = 3600.0
# A failed lookup (a missing users:read scope, an outage) is tried again a minute later, not for every message.
FAILED_TTL_S = 60.0
NAMES_KEPT = 5000
# A message waits at most this long for a name: Slack expects its event acknowledged within 3 s.
LOOKUP_TIMEOUT_S = 2.0


def api_error(error: Exception) -> str:
    """What went wrong with a Web API call, in a few words: Slack's error code, else the HTTP status or the kind."""
    if isinstance(error, SlackApiError):
        data = error.response.data
        code = data.get("error") if isinstance(data, dict) else None
        return str(code or f"HTTP {error.response.status_code}")
    return type(error).__name__


def display_name(user: dict[str, Any]) -> str:
    """The name Slack shows for a ``users.info`` user: its display name, else the real name, else the handle."""
    profile = user.get("profile") or {}
    for name in (profile.get("display_name"), profile.get("real_name"), user.get("real_name"), user.get("name")):
        if isinstance(name, str) and name.strip():
            return name.strip()
    return UNKNOWN


class People:
    """Display names by user id, cached for about an hour; a failed lookup gives ``someone`` and loses nothing."""

    def __init__(self, client: AsyncWebClient, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._names: BoundedMap[str, tuple[str, float]] = BoundedMap(NAMES_KEPT)
        self._pending: dict[str, asyncio.Future[str]] = {}

    async def name(self, user_id: str) -> str:
        """``user_id``'s display name (``someone`` when Slack cannot say); one lookup at a time per user."""
        cached = self._names.recall(user_id)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        pending = self._pending.get(user_id)
        if pending is None:
            pending = self._pending[user_id] = asyncio.ensure_future(self._look_up(user_id))
            pending.add_done_callback(lambda _: self._pending.pop(user_id, None))
        return await asyncio.shield(pending)

    async def names(self, user_ids: Iterable[str]) -> dict[str, str]:
        """Display names of several people, looked up together."""
        wanted = sorted(set(user_ids))
        found = await asyncio.gather(*(self.name(user_id) for user_id in wanted))
        return dict(zip(wanted, found, strict=True))

    async def _look_up(self, user_id: str) -> str:
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                response = await self._client.users_info(user=user_id)
        except Exception as error:  # any failure (aiohttp's ServerDisconnectedError too): the message goes on
            # api_error says the code or the kind only: an HTTP library's text may carry the request's header.
            log.warning("Could not look up a Slack user's name (%s): %s", user_id, api_error(error))
            self._names[user_id] = (UNKNOWN, self._clock() + FAILED_TTL_S)
            return UNKNOWN
        name = display_name(response.get("user") or {})
        self._names[user_id] = (name, self._clock() + NAME_TTL_S)
        return name
