"""Faults the platform stand-ins inject into the calls a test names: what goes wrong, how often, in what order."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NoReturn

from aiohttp import web


class Fault(enum.Enum):
    """How a Web API call the test made fail goes wrong."""

    RATE_LIMITED = "rate_limited"  # HTTP 429 with the platform's retry-after
    SERVER_ERROR = "server_error"  # a 5xx (``status``)
    DROPPED = "dropped"  # the connection closes before any answer; the call is not carried out
    DROPPED_AFTER = "dropped_after"  # the call is carried out, then the connection closes before the answer


@dataclass
class Failing:
    """One fault waiting for calls of one name."""

    fault: Fault
    left: int | None  # None: every call from now on
    status: int = 500
    retry_after: float = 1.0


class FaultPlan:
    """The faults queued per call name (a Web API method, a route), each for its number of calls, in order."""

    def __init__(self) -> None:
        self._queues: dict[str, list[Failing]] = {}

    def add(self, name: str, failing: Failing) -> None:
        """Queue ``failing`` for the calls of ``name``, after the faults already waiting there."""
        self._queues.setdefault(name, []).append(failing)

    def next(self, name: str) -> Failing | None:
        """The fault the next call of ``name`` meets (counting the call), or ``None``."""
        queue = self._queues.get(name)
        if not queue:
            return None
        failing = queue[0]
        if failing.left is not None:
            failing.left -= 1
            if failing.left <= 0:
                queue.pop(0)
        return failing


def drop_connection(request: web.Request) -> NoReturn:
    """Close the client's connection without an answer."""
    assert request.transport is not None
    request.transport.close()
    raise web.HTTPServiceUnavailable()  # never reaches the client: its connection is gone
