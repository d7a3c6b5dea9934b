"""Files shared in Slack messages as the core's ``Attachment``s, downloaded with the bot token when the core reads them.

The core decides which files are text, how much is read and what users are told (``bot/attachments.py``);
here is only where a file's bytes come from.  The bot token goes in a header and nowhere else: no log
line or error message built here contains it.  It goes only to Slack's own file host and the configured
Web API's: an event's URLs are not trusted, and an external file (Google Drive, Dropbox ...) is never fetched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bot.types import Attachment

DOWNLOAD_TIMEOUT_S = 30.0
CHUNK_BYTES = 64 * 1024
# Where Slack serves the files shared in a workspace (url_private, url_private_download).
SLACK_FILES_URL = "https://files.slack.com/"
_DEFAULT_PORTS = {"https": 443, "http": 80}


class FileDownloadError(Exception):
    """A file could not be downloaded; the message says why in words a user may read (never a token)."""


@dataclass(frozen=True)
class SlackFile:
    """A file shared in a message, as Slack describes it in the event."""

    name: str
    size: int | None
    mimetype: str | None
    url: str | None  # None: Slack does not let the bot download it (a deleted or hidden file)
    external: bool = False  # kept by another service (Google Drive ...): its URL is not Slack's to authorize


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
                external=bool(item.get("is_external")) or item.get("mode") == "external",
            )
        )
    return tuple(found)


def origin(url: str) -> str | None:
    """``scheme://host:port`` of an http(s) URL (the port always written), or ``None`` for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a malformed port or host
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return f"{scheme}://{parts.hostname}:{port or _DEFAULT_PORTS[scheme]}"


def file_hosts(api_url: str) -> frozenset[str]:
    """The origins the bot token may go to: Slack's file host, and the Web API's (a stand-in, an enterprise proxy)."""
    return frozenset(host for host in (origin(SLACK_FILES_URL), origin(api_url)) if host is not None)


def attachments(files: tuple[SlackFile, ...], bot_token: str, *, api_url: str) -> tuple[Attachment, ...]:
    """The files as the core's attachments; each one downloads (at most the core's limit) only when read.

    ``api_url`` is the configured Web API URL: files are downloaded from its host and ``files.slack.com`` only.
    """
    hosts = file_hosts(api_url)
    return tuple(
        Attachment(file.name, file.size, file.mimetype, partial(download, file, bot_token=bot_token, hosts=hosts))
        for file in files
    )


async def download(file: SlackFile, limit: int, *, bot_token: str, hosts: frozenset[str]) -> bytes:
    """At most ``limit`` bytes of ``file``; raises ``FileDownloadError`` when Slack does not hand it over.

    The bot token is sent only to an origin in ``hosts`` (``file_hosts``); any other file is refused unread.
    """
    if file.external:
        raise FileDownloadError("it is stored outside Slack, so I do not download it")
    if file.url is None:
        raise FileDownloadError("Slack does not offer it for download")
    if origin(file.url) not in hosts:
        # Said without the URL: it came with the event, and whoever sent it may read the answer.
        raise FileDownloadError("it is not stored on Slack's file servers, so I do not download it")
    headers = {"Authorization": f"Bearer {bot_token}"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_S)) as session,
            session.get(file.url, headers=headers) as response,
        ):
            # aiohttp drops the Authorization header on a redirect to another origin.
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
