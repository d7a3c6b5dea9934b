"""Model server endpoints: which one a conversation goes to, which are down, how many replies each takes.

A conversation keeps to one endpoint (rendezvous hashing of its key over the endpoint URLs, with hashlib: every
bot process picks the same one), so that server's prefix cache holds its history. An endpoint that failed is
left out for ``retry_s`` and then tried again; its conversations move to their next endpoint on the ring
meanwhile, and come back when it does.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import urlsplit

Client = TypeVar("Client")


def address(url: str) -> str:
    """``host:port`` of an API base URL, for messages (never its path, query or credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{host}:{port}"


@dataclass(eq=False)
class Endpoint(Generic[Client]):
    """One model server: its API base, its client, and the replies it may generate at once."""

    url: str
    client: Client
    slots: asyncio.Semaphore
    down_until: float = field(default=0.0)

    @property
    def address(self) -> str:
        """``host:port``, as messages name it."""
        return address(self.url)

    @property
    def full(self) -> bool:
        """Whether every one of its slots is taken."""
        return self.slots.locked()


class EndpointRing(Generic[Client]):
    """Endpoints ordered per conversation key, skipping those that failed within ``retry_s``."""

    def __init__(
        self, endpoints: Sequence[Endpoint[Client]], retry_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self.endpoints = list(endpoints)
        self._retry_s = retry_s
        self._clock = clock

    def order(self, key: str) -> list[Endpoint[Client]]:
        """Every endpoint, the one ``key`` sticks to first (rendezvous hashing: stable as endpoints come and go)."""
        return sorted(self.endpoints, key=lambda endpoint: _weight(key, endpoint.url), reverse=True)

    def is_up(self, endpoint: Endpoint[Client]) -> bool:
        """False while ``endpoint`` is left out after a failure."""
        return self._clock() >= endpoint.down_until

    def pick(self, key: str, exclude: Sequence[Endpoint[Client]] = ()) -> Endpoint[Client] | None:
        """The endpoint for ``key``: its first one that is up and has a free slot, else its first one up.

        A full sticky endpoint hands the request to the next free one on the ring (its prefix cache is cold
        there, but the reply does not wait); when all are full the request waits for the sticky one.  Being
        left out is a preference, not a ban: when every endpoint not in ``exclude`` failed lately, the one
        whose pause ends first is tried (a single server is never refused for ``retry_s`` after one failure).
        None only when ``exclude`` holds them all.
        """
        left = [e for e in self.order(key) if e not in exclude]
        up = [e for e in left if self.is_up(e)]
        free = [e for e in up if not e.full]
        candidates = free or up
        if candidates:
            return candidates[0]
        return min(left, key=lambda endpoint: endpoint.down_until) if left else None

    def mark_down(self, endpoint: Endpoint[Client]) -> None:
        """Leave ``endpoint`` out for ``retry_s`` (it refused a connection, failed or timed out)."""
        endpoint.down_until = self._clock() + self._retry_s

    def addresses(self) -> str:
        """Every endpoint's ``host:port``, comma-separated, for messages."""
        return ", ".join(e.address for e in self.endpoints)


def _weight(key: str, url: str) -> int:
    digest = hashlib.blake2b(f"{url}\n{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
