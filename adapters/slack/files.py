"""Files shared in Slack messages as the core's ``Attachment``s, downloaded with the bot token when the core reads them.

The core decides which files are text, how much is read and what users are told (``bot/attachments.py``);
here is only where a file's bytes come from.  The bot token goes in a header and nowhere else: no log
line or error message built here contains it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp

from bot.types import Attachment

DOWNLOAD_TIMEOUT_S = 30.0
CHUNK_BYTES = 64 * 1024


class FileDownloadError(Exception):
    """A file could not be downloaded; the message says why in words a user may read (never a token)."""


@dataclass(frozen=True)
class SlackFile:
    """A file shared in a message, as Slack describes it in the event."""

    name: str
    size: int | None
    mimetype: str | None
    url: str | None  # None: Slack does not let the bot download it (a deleted or hidden file)


def files_of(event: Mapping[str, Any]) -> tuple[SlackFile, ...]:
    """The files of a ``message`` (subtype ``file_share``) or ``app_mention`` event."""
    found = []
    for item in event.get("files") or ():
        if not isinstance(item, Mapping):
            continue
        url = item.get("url_private_download") or item.get("url_private")
        size = item.get("size")
        found.append(
            SlackFile(
                name=str(item.get("name") or item.get("title") or "file"),
                size=size if isinstance(size, int) else None,
                mimetype=str(item["mimetype"]) if item.get("mimetype") else None,
                url=url if isinstance(url, str) and url else None,
            )
        )
    return tuple(found)


def attachments(files: tuple[SlackFile, ...], bot_token: str) -> tuple[Attachment, ...]:
    """The files as the core's attachments; each one downloads (at most the core's limit) only when read."""
    return tuple(
        Attachment(file.name, file.size, file.mimetype, partial(download, file, bot_token=bot_token)) for file in files
    )


async def download(file: SlackFile, limit: int, *, bot_token: str) -> bytes:
    """At most ``limit`` bytes of ``file``; raises ``FileDownloadError`` when Slack does not hand it over."""
    if file.url is None:
        raise FileDownloadError("Slack does not offer it for download")
    headers = {"Authorization": f"Bearer {bot_token}"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_S)) as session,
            session.get(file.url, headers=headers) as response,
        ):
            if response.status != 200:
                raise FileDownloadError(f"Slack answered HTTP {response.status}")
            # Without the files:read scope Slack answers 200 with its sign-in page instead of the file.
            if response.content_type == "text/html" and not (file.mimetype or "").startswith("text/html"):
                raise FileDownloadError("Slack sent a sign-in page (does the app have the files:read scope?)")
            return await _read_at_most(response, limit)
    except (aiohttp.ClientError, TimeoutError) as error:
        # Said by kind only: aiohttp's texts may carry the request, never to be echoed with its header.
        raise FileDownloadError(f"the download failed ({type(error).__name__})") from None


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    data = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        data += chunk
        if len(data) >= limit:
            break  # the rest is never downloaded: closing the response drops the connection
    return bytes(data[:limit])
