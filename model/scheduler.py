"""The side of continuous batching that lives with the pipeline: load it, and drive it one step at a time.

``ContinuousBatchingPipeline`` is not thread-safe, so exactly one thread drives it through
a ``Scheduler`` (admit, cancel, step, collect): a daemon thread in
``model.batching_engine.BatchingEngine``, or a child process in ``model.process_engine``.
Each step reports ``Event``s: a request's new token ids, or its end.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import openvino_genai as ov_genai

from model.engine import GenerationParams, ModelInfo, ReplyStats
from model.openvino_engine import ChatTokenizer, reply_stats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestEnd:
    """The last item of a request: its stats (None when it never ran) or why it failed."""

    stats: ReplyStats | None
    error: str | None = None


# Tokens per KV cache block, as OpenVINO's plugins lay them out.
KV_BLOCK_TOKENS = {"GPU": 16}
DEFAULT_KV_BLOCK_TOKENS = 32
DEFAULT_KV_CACHE_TOKENS = 8192

# What a scheduler step reports: a request's new token ids, or its end (after its last ids).
Event = tuple[int, "list[int] | RequestEnd"]


def kv_blocks(device: str, cache_tokens: int) -> int:
    """How many KV cache blocks hold ``cache_tokens`` tokens on ``device``."""
    return math.ceil(cache_tokens / KV_BLOCK_TOKENS.get(device.split(".")[0].upper(), DEFAULT_KV_BLOCK_TOKENS))


def load_pipeline(info: ModelInfo, device: str, properties: Mapping[str, str], cache_tokens: int) -> Any:
    """Compile a ``ContinuousBatchingPipeline`` whose KV cache holds ``cache_tokens`` tokens (blocking).

    Sized in tokens rather than OpenVINO's whole GB: a GB is ~45,000 tokens of the bundled
    model but ~5,000 of Phi-3-mini, and a cache sized in GB grows to its size, so the bot's
    memory would depend on the model in a way nobody chose.
    """
    scheduler = ov_genai.SchedulerConfig()
    scheduler.cache_size = 0  # sized by blocks instead
    scheduler.num_kv_blocks = kv_blocks(device, cache_tokens)
    # Chat turns resend the whole history: cached prefix blocks make a follow-up's prefill cheap.
    scheduler.enable_prefix_caching = True
    return ov_genai.ContinuousBatchingPipeline(str(info.path), scheduler, device, dict(properties))


class Scheduler:
    """Admit, cancel, step and collect around one pipeline; only ever called from one thread.

    A request cancelled while queued never reaches the pipeline; a running one is
    dropped (its KV blocks freed) by the next step.  ``step`` returns the streams' events.
    """

    def __init__(self, pipeline: Any, chat: ChatTokenizer) -> None:
        self._pipeline = pipeline
        self._chat = chat
        self._queued: dict[int, tuple[str, GenerationParams]] = {}
        self._running: dict[int, Any] = {}  # request id -> the pipeline's GenerationHandle
        self._cancelled: set[int] = set()

    @property
    def busy(self) -> bool:
        """Whether a request is queued or running, so that ``step`` has work to do."""
        return bool(self._queued or self._running)

    def submit(self, request_id: int, prompt: str, params: GenerationParams) -> None:
        """Queue a request; it joins the batch at the next step."""
        self._queued[request_id] = (prompt, params)

    def cancel(self, request_id: int) -> None:
        """Stop a request at the next step; an unknown or finished id is ignored."""
        if request_id in self._queued or request_id in self._running:
            self._cancelled.add(request_id)

    def cache_use(self) -> float | None:
        """Share of the KV cache the latest step used, 0 to 1 (None if the pipeline cannot say)."""
        try:
            percent = float(self._pipeline.get_metrics().cache_usage)
        except Exception:  # a reading is best effort; it must never stop the driver
            return None
        return min(max(percent / 100.0, 0.0), 1.0)

    def drop_queued(self) -> list[Event]:
        """End every request that has not started (the engine is closing)."""
        events: list[Event] = [(request_id, RequestEnd(None)) for request_id in self._queued]
        self._queued.clear()
        self._cancelled.intersection_update(self._running)
        return events

    def step(self) -> list[Event]:
        """Admit queued requests, advance every running one by a step, and report what each produced."""
        events = self._admit()
        if not self._running:
            return events
        try:
            for request_id in self._cancelled:
                handle = self._running[request_id]
                if handle.get_status() == ov_genai.GenerationStatus.RUNNING:
                    handle.cancel()
            self._pipeline.step()
            for request_id in list(self._running):
                self._collect(request_id, events)
        except Exception as error:  # the driver must survive: a dead driver would hang every stream
            self._fail_all(str(error), events)
        return events

    def _admit(self) -> list[Event]:
        events: list[Event] = []
        for request_id, (prompt, params) in self._queued.items():
            if request_id in self._cancelled:
                self._cancelled.discard(request_id)
                events.append((request_id, RequestEnd(None)))
                continue
            try:
                config = self._chat.generation_config(self._pipeline.get_config(), params)
                self._running[request_id] = self._pipeline.add_request(request_id, prompt, config)
            except Exception as error:  # a bad config or prompt fails this request, not the others
                events.append((request_id, RequestEnd(None, str(error))))
        self._queued.clear()
        return events

    def _collect(self, request_id: int, events: list[Event]) -> None:
        """Report the ids generated since the last step; end the request when the pipeline is done with it."""
        handle = self._running[request_id]
        status = handle.get_status()
        cancelled = request_id in self._cancelled
        if not cancelled:
            ids: list[int] = []
            while handle.can_read():
                for output in handle.read().values():
                    ids.extend(int(i) for i in output.generated_ids)
            if ids:
                events.append((request_id, ids))
        if status == ov_genai.GenerationStatus.RUNNING:
            return
        del self._running[request_id]
        self._cancelled.discard(request_id)
        error = None
        if status == ov_genai.GenerationStatus.IGNORED and not cancelled:
            # The scheduler ignores a request whose prompt can never fit the KV cache.
            error = "the prompt does not fit the KV cache; raise BOT_KV_CACHE_TOKENS"
        events.append((request_id, RequestEnd(self._stats(handle), error)))

    def _stats(self, handle: Any) -> ReplyStats | None:
        try:
            return reply_stats(self._chat.info.name, handle.get_perf_metrics())
        except RuntimeError:  # a request cancelled before its first token has no timings
            return None

    def _fail_all(self, error: str, events: list[Event]) -> None:
        """A failed step leaves no request in a known state: cancel and end them all."""
        log.error("continuous batching step failed: %s", error)
        for request_id, handle in self._running.items():
            with contextlib.suppress(Exception):  # freeing its blocks is best effort; ending the stream is not
                handle.cancel()
            events.append((request_id, RequestEnd(None, error)))
        self._running.clear()
        self._cancelled.clear()
