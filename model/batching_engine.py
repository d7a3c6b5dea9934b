"""Continuous batching: many replies generated together by one OpenVINO pipeline.

``LLMPipeline`` runs one ``generate()`` at a time, so a second user waits until the
first reply is done.  ``ContinuousBatchingPipeline`` instead advances every running
request by a token per ``step()`` and admits new requests between steps; with prefix
caching on, a follow-up turn reuses the KV blocks of the history it shares with an
earlier prompt instead of computing them again.

The pipeline is not thread-safe, so one thread drives it through a ``model.scheduler.Scheduler``
(admit, cancel, step, collect): a daemon thread here in ``BatchingEngine``, a child
process in ``model.process_engine``.  Either way each request's new token ids reach
its stream on the asyncio loop, which decodes them into text incrementally.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
import queue
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from model.engine import ChatMessage, EngineError, GenerationParams, ModelInfo, ReplyStats
from model.openvino_engine import ChatTokenizer
from model.scheduler import Event, RequestEnd, Scheduler, load_pipeline

log = logging.getLogger(__name__)

_REPLACEMENT = "\ufffd"  # what decoding yields for the first bytes of a character split over tokens


class Request:
    """One reply in flight as its stream sees it; ``cancelled`` is the one flag both threads read.

    The engine's thread hands items over through ``post`` (``call_soon_threadsafe``),
    so the queue and future are only touched on the loop.
    """

    def __init__(self, request_id: int, prompt: str, params: GenerationParams) -> None:
        self.id = request_id
        self.prompt = prompt
        self.params = params
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[list[int] | RequestEnd] = asyncio.Queue()
        self.done: asyncio.Future[RequestEnd] = self.loop.create_future()
        self.cancelled = threading.Event()

    def post(self, item: list[int] | RequestEnd) -> bool:
        """Hand ``item`` to the stream from another thread; False (and cancelled) once its loop has closed."""
        try:
            self.loop.call_soon_threadsafe(self._deliver, item)
        except RuntimeError:  # the loop has closed: nobody is listening, so stop generating
            self.cancelled.set()
            return False
        return True

    def _deliver(self, item: list[int] | RequestEnd) -> None:
        self.queue.put_nowait(item)
        if isinstance(item, RequestEnd) and not self.done.done():
            self.done.set_result(item)


class BatchingFrontend(abc.ABC):
    """The loop side both batching engines share; ``submit`` and ``cancel`` reach their scheduler."""

    def __init__(self, chat: ChatTokenizer, info: ModelInfo) -> None:
        self.chat = chat
        self._info = info
        self._ids = itertools.count()
        # Written by the thread that learns it (driver or reader), read at scrape time: a float swap is atomic.
        self._kv_cache_use: float | None = None
        self._tokenizer_thread = ThreadPoolExecutor(1, thread_name_prefix="ov-tokenize")

    @property
    def info(self) -> ModelInfo:
        """Name, family, path and context size of the loaded model."""
        return self._info

    @property
    def control_tokens(self) -> frozenset[str]:
        """Strings the tokenizer turns into special token ids (found once, at load)."""
        return self.chat.control_tokens

    @property
    def kv_cache_use(self) -> float | None:
        """Share of the KV cache in use after the latest step, 0 to 1; None before the first step."""
        return self._kv_cache_use

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

    @abc.abstractmethod
    def submit(self, prompt: str, params: GenerationParams) -> Request:
        """Queue a request for the scheduler; call on the loop that will consume it."""

    @abc.abstractmethod
    def cancel(self, request: Request) -> None:
        """Ask the scheduler to drop ``request`` at its next step; its end follows."""

    async def _close_tokenizer(self) -> None:
        await asyncio.to_thread(self._tokenizer_thread.shutdown, wait=True)


class BatchingEngine(BatchingFrontend):
    """A chat model served by ``openvino_genai.ContinuousBatchingPipeline``: replies run concurrently.

    Its scheduler runs on a thread here, and ``step()`` holds the GIL: the asyncio loop
    lags while replies generate (``ProcessEngine`` avoids that).
    """

    def __init__(self, pipeline: Any, info: ModelInfo) -> None:
        super().__init__(ChatTokenizer(pipeline.get_tokenizer(), info), info)
        self._pipeline = pipeline
        self._scheduler = Scheduler(pipeline, self.chat)
        self._inbox: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._requests: dict[int, Request] = {}  # worker thread only
        self._wake = threading.Event()
        self._lock = threading.Lock()  # orders submissions against closing
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="ov-batching", daemon=True)
        self._thread.start()

    @classmethod
    def load(cls, info: ModelInfo, device: str, properties: Mapping[str, str], cache_tokens: int) -> BatchingEngine:
        """Compile the model with a KV cache of ``cache_tokens`` tokens (blocking; call from a thread)."""
        return cls(load_pipeline(info, device, properties, cache_tokens), info)

    async def aclose(self) -> None:
        """Drop requests not yet started, finish running ones, then stop the worker and release the model."""
        with self._lock:
            self._closing = True
        self._wake.set()
        await asyncio.to_thread(self._thread.join)
        await self._close_tokenizer()
        self._pipeline = None

    def submit(self, prompt: str, params: GenerationParams) -> Request:
        """Queue a request for the worker; call on the loop that will consume it."""
        request = Request(next(self._ids), prompt, params)
        with self._lock:
            if self._closing:
                request.post(RequestEnd(None, "the model was unloaded"))
                return request
            self._inbox.put(request)
        self._wake.set()
        return request

    def cancel(self, request: Request) -> None:
        """Flag ``request``; the worker drops it at its next step."""
        request.cancelled.set()
        self._wake.set()

    # --- the worker thread: the only code that touches the scheduler after load ---

    def _run(self) -> None:
        """Step while any request is queued or running; sleep otherwise; stop once closed and idle."""
        while True:
            self._wake.clear()  # before taking the inbox: a submission from now on wakes the next wait
            self._take_inbox()
            if self._closing:
                self._deliver(self._scheduler.drop_queued())
            if self._scheduler.busy:
                self._deliver(self._scheduler.step())
                self._kv_cache_use = self._scheduler.cache_use()
            elif self._closing:
                break
            else:
                self._wake.wait()
        self._take_inbox()  # closing is set, so this ends whatever was queued before it was
        self._deliver(self._scheduler.drop_queued())

    def _take_inbox(self) -> None:
        """Pass new requests, and the cancellation flags of all, to the scheduler."""
        while True:
            try:
                request = self._inbox.get_nowait()
            except queue.Empty:
                break
            self._requests[request.id] = request
            self._scheduler.submit(request.id, request.prompt, request.params)
        for request in self._requests.values():
            if request.cancelled.is_set():
                self._scheduler.cancel(request.id)

    def _deliver(self, events: list[Event]) -> None:
        for request_id, item in events:
            request = self._requests[request_id]
            if isinstance(item, RequestEnd):
                del self._requests[request_id]
            request.post(item)


class BatchingTokenStream:
    """Text chunks of one request, detokenized on the loop from the ids the scheduler hands over."""

    def __init__(self, engine: BatchingFrontend, prompt: str, params: GenerationParams) -> None:
        self._engine = engine
        self._prompt = prompt
        self._params = params
        self._request: Request | None = None
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
            self._engine.cancel(request)
        # The scheduler ends the request after the step that drops it from the batch.
        end = await asyncio.shield(request.done)
        if self.stats is None:
            self.stats = end.stats

    async def _chunks(self) -> AsyncIterator[str]:
        if self._closed:
            return
        self._request = request = self._engine.submit(self._prompt, self._params)
        decoder = _Detokenizer(self._engine.chat)
        try:
            while not isinstance(item := await request.queue.get(), RequestEnd):
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
        return self._advance(final=False)

    def finish(self) -> str:
        """Whatever the full reply holds beyond what was sent, as ``LLMPipeline``'s final text would."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        text = self._chat.decode(self._ids)
        # A split character decodes as U+FFFD until its last byte arrives; a decoded text that
        # no longer extends what was sent (a tokenizer cleanup rule) waits for more tokens.
        if (text.endswith(_REPLACEMENT) and not final) or not text.startswith(self._emitted):
            return ""
        new, self._emitted = text[len(self._emitted) :], text
        return new
