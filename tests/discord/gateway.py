"""The stand-in's gateway side: one bot's WebSocket session, with Discord's transport compression.

discord.py asks for ``compress=zlib-stream`` (one zlib stream for the whole
connection, each message ending in a Z_SYNC_FLUSH) or, when a zstd module is
importable, ``compress=zstd-stream``; without the parameter frames are plain JSON text.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Callable

from aiohttp import web

from tests.discord.payloads import BOT_ID, MESSAGE_CONTENT_INTENT, Payload


def _compressor(kind: str | None) -> Callable[[bytes], bytes] | None:
    """The server side of the transport compression discord.py asked for."""
    if kind is None:
        return None
    if kind == "zlib-stream":
        stream = zlib.compressobj()
        return lambda data: stream.compress(data) + stream.flush(zlib.Z_SYNC_FLUSH)
    if kind == "zstd-stream":
        return _zstd_compressor()
    raise ValueError(f"unknown gateway compression {kind!r}")


def _zstd_compressor() -> Callable[[bytes], bytes]:
    # discord.py picks zstd-stream only when zstandard (or Python 3.14's compression.zstd) is importable.
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError:
        from compression import zstd  # type: ignore[import-not-found]

        compressor = zstd.ZstdCompressor()
        return lambda data: bytes(compressor.compress(data, mode=zstd.ZstdCompressor.FLUSH_BLOCK))
    stream = zstandard.ZstdCompressor().compressobj()
    return lambda data: bytes(stream.compress(data) + stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))


class GatewaySession:
    """One bot connection to the gateway."""

    def __init__(self, ws: web.WebSocketResponse, path: str, compression: str | None) -> None:
        self.ws = ws
        self.path = path
        self.identify: Payload | None = None
        self.compression = compression
        self._compress = _compressor(compression)
        self._sequence = 0
        self.heartbeats: list[float] = []  # time.monotonic() of every heartbeat (op 1) the bot sent
        self._lock = asyncio.Lock()  # a compressed stream must go out in order

    async def send(self, payload: Payload) -> None:
        data = json.dumps(payload).encode()
        async with self._lock:
            if self._compress is None:
                await self.ws.send_str(data.decode())
            else:
                await self.ws.send_bytes(self._compress(data))

    @property
    def shard(self) -> tuple[int, int]:
        """``(shard_id, shard_count)`` from IDENTIFY; ``(0, 1)`` for a bot that does not shard."""
        shard_id, count = (self.identify or {}).get("shard") or (0, 1)
        return int(shard_id), int(count)

    def serves_guild(self, guild_id: int | str) -> bool:
        """Whether this session's shard receives ``guild_id``'s events: Discord's ``(guild_id >> 22) % count``."""
        shard_id, count = self.shard
        return (int(guild_id) >> 22) % count == shard_id

    def receives(self, data: Payload) -> bool:
        """Whether a dispatch with ``data`` goes to this session: its guild's shard, or shard 0 for DMs."""
        guild_id = data.get("guild_id") if isinstance(data, dict) else None
        return self.serves_guild(guild_id) if guild_id is not None else self.shard[0] == 0

    @property
    def content_intent(self) -> bool:
        return bool(self.identify and self.identify.get("intents", 0) & MESSAGE_CONTENT_INTENT)

    def visible(self, event: str, data: Payload) -> Payload:
        """What Discord shows this bot: without the content intent, only DMs and mentions keep their text."""
        if event != "MESSAGE_CREATE" or self.content_intent or "guild_id" not in data:
            return data
        if any(user["id"] == str(BOT_ID) for user in data.get("mentions", [])):
            return data
        return data | {"content": "", "embeds": [], "attachments": [], "components": []}

    async def dispatch(self, event: str, data: Payload) -> None:
        data = self.visible(event, data)
        self._sequence += 1
        await self.send({"op": 0, "t": event, "s": self._sequence, "d": data})
