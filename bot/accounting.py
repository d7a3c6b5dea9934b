"""What happened to each message, counted in the metrics and logged once per reply (never its text)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bot.metrics import Metrics, Outcome
from bot.reply import Reply
from bot.types import Incoming

replies_log = logging.getLogger("bot.replies")


class ReplyAccount:
    """One model reply's bookkeeping: its inbox row, outcome, timings and token counts, recorded when it ends."""

    def __init__(
        self,
        metrics: Metrics,
        message: Incoming,
        reply: Reply,
        row: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.row = row  # the message's inbox row, if it has one
        self.failed = False  # set when the user was told the reply failed
        self.stopped = False  # set when a stop cancelled it: its inbox row stays for the next start
        self._metrics = metrics
        self._message = message
        self._reply = reply
        self._clock = clock
        self._started = clock()

    def outcome(self, *, cancelled: bool) -> Outcome:
        """How the reply ended: cut by a stop or its deadline, failed, or answered in full."""
        if self.failed:
            return "failed"
        if cancelled or self.stopped or self._reply.interrupted:
            return "interrupted"
        return "answered"

    def close(self, *, cancelled: bool) -> Outcome:
        """Count the reply and log its one line (conversation, outcome, latency, tokens); return the outcome."""
        outcome = self.outcome(cancelled=cancelled)
        platform = self._message.key.platform
        stats = self._reply.stats
        self._metrics.message(platform, outcome)
        if stats is not None:
            self._metrics.model(stats.model_name)
            self._metrics.reply_timing(
                platform,
                first_token_s=stats.ttft_s,
                per_token_s=stats.tpot_s if stats.generated_tokens > 1 else None,
                tokens_in=stats.prompt_tokens,
                tokens_out=stats.generated_tokens,
            )
        latency_s = self._clock() - self._started
        fields = {
            "conversation": str(self._message.key),
            "platform": platform,
            "outcome": outcome,
            "latency_s": round(latency_s, 3),
            "first_token_s": None if stats is None else round(stats.ttft_s, 3),
            "tokens_in": 0 if stats is None else stats.prompt_tokens,
            "tokens_out": 0 if stats is None else stats.generated_tokens,
        }
        replies_log.info(
            "reply %s in %s: %.2f s, %d tokens in, %d out",
            outcome,
            fields["conversation"],
            latency_s,
            fields["tokens_in"],
            fields["tokens_out"],
            extra=fields,
        )
        return outcome
