"""Continuous batching: many replies generated together by one OpenVINO pipeline.

``LLMPipeline`` runs one ``generate()`` at a time, so a second user waits until the
first reply is done.  ``ContinuousBatchingPipeline`` instead advances every running
request by a token per ``step()`` and admits new requests between steps; with prefix
caching on, a follow-up turn reuses the KV blocks of the history it shares with an
earlier prompt instead of computing them again.

The pipeline is not thread-safe, so one daemon thread owns it: it admits queued
requests, steps while any is unfinished (sleeping on an event otherwise) and hands
the new token ids of each request to its stream on the asyncio loop.  Streams turn
ids into text there, decoding incrementally.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import queue
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import openvino_genai as ov_genai

from model.engine import ChatMessage, EngineError, GenerationParams, ModelInfo, ReplyStats
from model.openvino_engine import ChatTokenizer, reply_stats

log = logging.getLogger(__name__)

_REPLACEMENT = "\ufffd"  # what decoding yields for the first bytes of a character split over tokens


@dataclass(frozen=True)
class _End:
    """The last item of a request: its stats (None when it never ran) or why it failed."""

    stats: ReplyStats | None
    error: str | None = None


class _Request:
    """One reply in flight, shared by its stream (on the loop) and the worker thread.

    The worker owns ``handle``; everything it tells the stream goes through
    ``post`` (``call_soon_threadsafe``), so the loop-side fields are only touched on
    the loop.  ``cancelled`` is the one flag both sides read.
    """

    def __init__(self, request_id: int, prompt: str, params: GenerationParams) -> None:
        self.id = request_id
        self.prompt = prompt
        self.params = params
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[list[int] | _End] = asyncio.Queue()
        self.done: asyncio.Future[_End] = self.loop.create_future()
        self.cancelled = threading.Event()
        self.handle: Any = None

    def post(self, item: list[int] | _End) -> None:
        """Hand ``item`` to the stream; called from the worker thread."""
        try:
            self.loop.call_soon_threadsafe(self._deliver, item)
        except RuntimeError:  # the loop has closed: nobody is listening, so stop generating
            self.cancelled.set()

    def _deliver(self, item: list[int] | _End) -> None:
        self.queue.put_nowait(item)
        if isinstance(item, _End) and not self.done.done():
            self.done.set_result(item)


class BatchingEngine:
    """A chat model served by ``openvino_genai.ContinuousBatchingPipeline``: replies run concurrently."""

    def __init__(self, pipeline: Any, info: ModelInfo) -> None:
        self._pipeline = pipeline
        self._info = info
        self.chat = ChatTokenizer(pipeline.get_tokenizer(), info)
        self._tokenizer_thread = ThreadPoolExecutor(1, thread_name_prefix="ov-tokenize")
        self._ids = itertools.count()
        self._inbox: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._active: dict[int, _Request] = {}  # worker thread only
        self._wake = threading.Event()
        self._lock = threading.Lock()  # orders submissions against closing
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="ov-batching", daemon=True)
        self._thread.start()

    @classmethod
    def load(cls, info: ModelInfo, device: str, properties: Mapping[str, str], cache_size_gb: float) -> BatchingEngine:
        """Compile the model with a KV cache of ``cache_size_gb`` GB (blocking; call from a thread).

        OpenVINO sizes the cache in whole GB, so a fraction is rounded up (at least 1 GB).
        """
        scheduler = ov_genai.SchedulerConfig()
        scheduler.cache_size = max(1, math.ceil(cache_size_gb))
        # Chat turns resend the whole history: cached prefix blocks make a follow-up's prefill cheap.
        scheduler.enable_prefix_caching = True
        pipeline = ov_genai.ContinuousBatchingPipeline(str(info.path), scheduler, device, dict(properties))
        return cls(pipeline, info)

    @property
    def info(self) -> ModelInfo:
        """Name, family, path and context size of the loaded model."""
        return self._info

    @property
    def control_tokens(self) -> frozenset[str]:
        """Strings the tokenizer turns into special token ids (found once, at load)."""
        return self.chat.control_tokens

    async def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as a prompt is tokenized (special tokens added), off the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_thread, self.chat.encode, text)

    async def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` takes as a prompt."""
        return len(await self.encode(text))

    def apply_chat_template(self, messages: Sequence[ChatMessage]) -> str:
        """Render with the model's own chat template, ending in the generation prompt."""
        return self.chat.apply_chat_template(messages)

    def stream(self, prompt: str, params: GenerationParams) -> BatchingTokenStream:
        """A stream whose request joins the running batch when it is first iterated."""
        return BatchingTokenStream(self, prompt, params)

    async def aclose(self) -> None:
        """Drop requests not yet started, finish running ones, then stop the worker and release the model."""
        with self._lock:
            self._closing = True
        self._wake.set()
        await asyncio.to_thread(self._thread.join)
        await asyncio.to_thread(self._tokenizer_thread.shutdown, wait=True)
        self._pipeline = None

    def submit(self, prompt: str, params: GenerationParams) -> _Request:
        """Queue a request for the worker; call on the loop that will consume it."""
        request = _Request(next(self._ids), prompt, params)
        with self._lock:
            if self._closing:
                request.post(_End(None, "the model was unloaded"))
                return request
            self._inbox.put(request)
        self._wake.set()
        return request

    def wake(self) -> None:
        """Make the worker look at its requests again (a cancellation, say)."""
        self._wake.set()

    # --- the worker thread: the only code that touches the pipeline after load ---

    def _run(self) -> None:
        """Admit, step and read until closed; sleep while nothing is unfinished."""
        while True:
            self._wake.clear()  # before admitting: a submission from now on wakes the next wait
            self._admit()
            if self._active:
                self._advance()
            elif self._closing:
                break
            else:
                self._wake.wait()
        self._admit()  # closing is set, so this ends whatever was queued before it was

    def _admit(self) -> None:
        """Add queued requests to the pipeline; one cancelled (or queued at close) never reaches it."""
        while True:
            try:
                request = self._inbox.get_nowait()
            except queue.Empty:
                return
            if request.cancelled.is_set() or self._closing:
                request.post(_End(None))
                continue
            try:
                config = self.chat.generation_config(self._pipeline.get_config(), request.params)
                request.handle = self._pipeline.add_request(request.id, request.prompt, config)
            except Exception as error:  # a bad config or prompt fails this request, not the others
                request.post(_End(None, str(error)))
                continue
            self._active[request.id] = request

    def _advance(self) -> None:
        """One step for every running request, then hand out what each produced."""
        try:
            for request in self._active.values():
                # A cancelled request is dropped, and its KV blocks freed, by this step.
                if request.cancelled.is_set() and request.handle.get_status() == ov_genai.GenerationStatus.RUNNING:
                    request.handle.cancel()
            self._pipeline.step()
            for request in list(self._active.values()):
                self._collect(request)
        except Exception as error:  # the worker must survive: a dead worker would hang every stream
            self._fail_all(str(error))

    def _collect(self, request: _Request) -> None:
        """Post the ids generated since the last step; end the request when the pipeline is done with it."""
        handle = request.handle
        status = handle.get_status()
        if not request.cancelled.is_set():
            ids: list[int] = []
            while handle.can_read():
                for output in handle.read().values():
                    ids.extend(int(i) for i in output.generated_ids)
            if ids:
                request.post(ids)
        if status == ov_genai.GenerationStatus.RUNNING:
            return
        del self._active[request.id]
        error = None
        if status == ov_genai.GenerationStatus.IGNORED and not request.cancelled.is_set():
            # The scheduler ignores a request whose prompt can never fit the KV cache.
            error = "the prompt does not fit the KV cache; load the engine with a larger cache_size_gb"
        request.post(_End(self._stats(handle), error))

    def _stats(self, handle: Any) -> ReplyStats | None:
        try:
            return reply_stats(self._info.name, handle.get_perf_metrics())
        except RuntimeError:  # a request cancelled before its first token has no timings
            return None

    def _fail_all(self, error: str) -> None:
        """A failed step leaves no request in a known state: cancel and end them all."""
        log.error("continuous batching step failed: %s", error)
        for request in self._active.values():
            with contextlib.suppress(Exception):  # freeing its blocks is best effort; ending the stream is not
                request.handle.cancel()
            request.post(_End(None, error))
        self._active.clear()


class BatchingTokenStream:
    """Text chunks of one request, detokenized on the loop from the ids the worker hands over."""

    def __init__(self, engine: BatchingEngine, prompt: str, params: GenerationParams) -> None:
        self._engine = engine
        self._prompt = prompt
        self._params = params
        self._request: _Request | None = None
        self._closed = False
        self.stats: ReplyStats | None = None
        self.text = ""

    def __aiter__(self) -> AsyncIterator[str]:
        return self._chunks()

    async def aclose(self) -> None:
        """Stop generating; on return the engine no longer works on this stream."""
        self._closed = True
        request = self._request
        if request is None:
            return
        if not request.done.done():
            request.cancelled.set()
            self._engine.wake()
        # The worker ends the request after the step that drops it from the batch.
        end = await asyncio.shield(request.done)
        if self.stats is None:
            self.stats = end.stats

    async def _chunks(self) -> AsyncIterator[str]:
        if self._closed:
            return
        self._request = request = self._engine.submit(self._prompt, self._params)
        decoder = _Detokenizer(self._engine.chat)
        try:
            while not isinstance(item := await request.queue.get(), _End):
                chunk = decoder.add(item)
                if chunk:
                    self.text += chunk
                    yield chunk
            if item.error is not None:
                raise EngineError(f"generation failed: {item.error}")
            tail = decoder.finish()
            if tail:
                self.text += tail
                yield tail
            self.stats = item.stats
        finally:
            await self.aclose()


class _Detokenizer:
    """Incremental detokenization: decode all ids so far and emit what is new.

    Decoding the whole reply each time (rather than token by token) keeps words that
    span tokens and characters that span bytes intact; a reply's text is tiny next
    to a forward pass, so the repeated work does not matter.
    """

    def __init__(self, chat: ChatTokenizer) -> None:
        self._chat = chat
        self._ids: list[int] = []
        self._emitted = ""

    def add(self, ids: list[int]) -> str:
        """The text the new ``ids`` complete, held back while it ends inside a character."""
        self._ids.extend(ids)
        text = self._chat.decode(self._ids)
        # A split character decodes as U+FFFD until its last byte arrives; a decoded text that
        # no longer extends what was sent (a tokenizer cleanup rule) waits for more tokens.
        if text.endswith(_REPLACEMENT) or not text.startswith(self._emitted):
            return ""
        new, self._emitted = text[len(self._emitted) :], text
        return new

    def finish(self) -> str:
        """Whatever the full reply holds beyond what was sent, as ``LLMPipeline``'s final text would."""
        text = self._chat.decode(self._ids)
        if not text.startswith(self._emitted):
            return ""
        new, self._emitted = text[len(self._emitted) :], text
        return new
