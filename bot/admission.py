"""Admission: which messages the bot takes on now, and a clear answer for those it cannot.

Every limit is a setting.  A message that is refused is answered at once and stored
nowhere, so the user can send it again; nothing waits silently.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem, parse, storage, strategies

from bot.types import Identity

TOO_LONG = "Your message has {length:,} characters; I read at most {limit:,}. Please shorten it and send it again."
BUSY = "I'm busy: {ahead} replies are in line and {writing} being written. Please try again in about {seconds} s."
SLOW_DOWN = "You're sending messages faster than I can answer. Please try again in about {seconds} s."

# Until replies have been timed, a waiting one is guessed to take this long.
FIRST_GUESS_S = 5.0
# How much each new reply moves the running estimate of a reply's duration.
SMOOTHING = 0.2


@dataclass(frozen=True)
class AdmissionLimits:
    """The limits, each a setting: replies in the bot at once, a user's rate, a message's length, a reply's time.

    ``max_waiting`` bounds the replies waiting or generating; ``max_generating`` those generating at once
    (1 for a single-stream engine, the batch width that still pays off for a batching one).
    """

    max_waiting: int = 32
    max_generating: int = 8
    user_rate: str | None = "10/minute"
    max_message_chars: int = 8000
    reply_deadline_s: float = 300.0


class Admission:
    """Decides whether a message for the model is taken on, and estimates waits for the answers that say no."""

    def __init__(self, limits: AdmissionLimits, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self._rate: RateLimitItem | None = parse(limits.user_rate) if limits.user_rate else None
        # A moving window per user, kept in memory; limits expires idle users' entries itself.
        self._windows = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        self._clock = clock
        self._reply_s = FIRST_GUESS_S

    def refusal(self, who: Identity, text: str, replies_in_flight: int, *, generating: int = 0) -> str | None:
        """Why ``text`` from ``who`` cannot be taken on now, or ``None`` to take it.

        ``replies_in_flight`` counts the replies waiting or generating, ``generating`` those of
        them generating.  Checked in this order so that a message refused for its length or a
        full queue does not use up its author's rate.
        """
        limits = self.limits
        if len(text) > limits.max_message_chars:
            return TOO_LONG.format(length=len(text), limit=limits.max_message_chars)
        if replies_in_flight >= limits.max_waiting:
            # The line empties at the pace of the slots: replies learn their duration without the wait.
            seconds = math.ceil(self._reply_s * replies_in_flight / limits.max_generating)
            return BUSY.format(ahead=replies_in_flight - generating, writing=generating, seconds=seconds)
        if self._rate is not None and not self._windows.hit(self._rate, str(who)):
            reset = self._windows.get_window_stats(self._rate, str(who)).reset_time
            return SLOW_DOWN.format(seconds=max(1, math.ceil(reset - self._clock())))
        return None

    def timed(self, seconds: float) -> None:
        """Learn from a finished reply how long replies take to generate, for the waits the busy answer names."""
        self._reply_s += SMOOTHING * (seconds - self._reply_s)
