"""Files attached to a Discord message, as the core's ``Attachment``s: read only as far as the core asks.

Discord serves attachments from its CDN at the URL in the message payload, without the bot's
token (which must never go there); the core decides what is text, how much to read and what
people are told, so this module only downloads the first ``limit`` bytes of a file on request.
"""

from __future__ import annotations

import asyncio
from functools import partial

import aiohttp
import discord

from bot.types import Attachment

# A stalled download must not hold the reply (and its place in line) for long.
DOWNLOAD_TIMEOUT_S = 30.0


class DownloadError(Exception):
    """The CDN did not hand over the file; the text is what the person is told."""


def attachments_of(message: discord.Message) -> tuple[Attachment, ...]:
    """``message``'s files, with their name, size and type as the payload gives them."""
    return tuple(
        Attachment(file.filename, file.size, file.content_type, partial(download, file.url))
        for file in message.attachments
    )


async def download(url: str, limit: int) -> bytes:
    """At most the first ``limit`` bytes of the file at ``url`` (the rest is never fetched).

    Raises ``DownloadError`` when the server refuses it, or the request fails or times out.
    """
    timeout = aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            if response.status != 200:
                raise DownloadError(f"Discord answered {response.status} {response.reason or ''}".strip())
            try:
                return await response.content.readexactly(limit)
            except asyncio.IncompleteReadError as short:  # the whole file is shorter than the limit
                return short.partial
    except (aiohttp.ClientError, TimeoutError) as error:
        # aiohttp's own text names the URL, whose query is a signed CDN token: people see the kind of failure only.
        raise DownloadError(f"the download failed ({type(error).__name__})") from None
