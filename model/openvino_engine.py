"""OpenVINO GenAI behind the ``Engine`` interface, run off the asyncio loop.

One ``LLMPipeline`` runs one ``generate()`` at a time, so every generation goes
through a single worker thread: requests queue in arrival order and a request that
is cancelled before its turn never reaches the pipeline.  Tokenizer calls use a
separate thread so that counting tokens for trimming never waits on a generation.
The tokenizer side (``ChatTokenizer``) is shared with the continuous-batching engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import openvino_genai as ov_genai

from model.engine import ChatMessage, EngineError, GenerationParams, ModelInfo, ModelLoadError, ReplyStats

# A vocabulary entry that looks like a markup tag (<|end|>, <s>, <filename>) is a
# candidate control token; it only counts if the tokenizer maps the raw text to it.
_CONTROL_CANDIDATE = re.compile(r"<[^\s<>]{1,40}>")
_PHI3_STOP_TOKENS = ("<|end|>", "<|endoftext|>")
_DONE = object()


class ChatTokenizer:
    """The tokenizer side of an OpenVINO engine, shared by every pipeline kind.

    Prompts arrive rendered by the core, so this is where rendering, token counting,
    control-token discovery, stop ids and per-request generation settings live: one
    implementation for ``LLMPipeline`` and ``ContinuousBatchingPipeline`` alike.
    """

    def __init__(self, tokenizer: Any, info: ModelInfo) -> None:
        self.tokenizer = tokenizer
        self.info = info
        self.control_tokens = find_control_tokens(tokenizer)
        self.stop_token_ids = stop_token_ids(tokenizer, info)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as a prompt is tokenized (special tokens added); blocking."""
        encoded = self.tokenizer.encode(text, add_special_tokens=True)
        return [int(i) for i in encoded.input_ids.data[0]]

    def decode(self, ids: Sequence[int]) -> str:
        """Reply text of generated ids (special tokens skipped, as the pipelines' streamers do)."""
        return str(self.tokenizer.decode(list(ids)))

    def apply_chat_template(self, messages: Sequence[ChatMessage]) -> str:
        """Render with the model's own chat template, ending in the generation prompt."""
        history = [{"role": m.role, "content": m.content} for m in messages]
        return str(self.tokenizer.apply_chat_template(history, add_generation_prompt=True))

    def generation_config(self, config: Any, params: GenerationParams) -> Any:
        """Fill ``config`` (a fresh copy of the pipeline's defaults) with ``params``; returns it."""
        config.max_new_tokens = params.max_new_tokens
        # The core renders the prompt itself; a second template pass would nest it.
        config.apply_chat_template = False
        config.stop_token_ids = self.stop_token_ids
        config.repetition_penalty = params.repetition_penalty
        config.do_sample = params.temperature > 0
        if config.do_sample:
            config.temperature = params.temperature
            config.top_p = params.top_p
        return config


def find_control_tokens(tokenizer: Any) -> frozenset[str]:
    """Vocabulary entries that look like markup and that the tokenizer maps raw text to."""
    found = set()
    for raw, token_id in tokenizer.get_vocab().items():
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if not _CONTROL_CANDIDATE.fullmatch(text):
            continue
        ids = tokenizer.encode(f"a{text}b", add_special_tokens=False).input_ids.data[0]
        if int(token_id) in (int(i) for i in ids):
            found.add(text)
    return frozenset(found)


def stop_token_ids(tokenizer: Any, info: ModelInfo) -> set[int]:
    """The ids that end a reply: EOS, and for Phi-3 also its end-of-turn tokens."""
    stop = {int(tokenizer.get_eos_token_id())}
    if info.family == "phi3":
        for token in _PHI3_STOP_TOKENS:
            ids = tokenizer.encode(token, add_special_tokens=False).input_ids.data[0]
            if len(ids) != 1:  # without it replies would run on into invented turns
                raise ModelLoadError(
                    f"The Phi-3 model at {info.path} has no single token for {token}: "
                    "its tokenizer is not Phi-3's. Re-export it from the original checkpoint."
                )
            stop.add(int(ids[0]))
    return stop


class OpenVINOEngine:
    """A chat model served by ``openvino_genai.LLMPipeline``."""

    def __init__(self, pipeline: Any, info: ModelInfo) -> None:
        self._pipeline = pipeline
        self._chat = ChatTokenizer(pipeline.get_tokenizer(), info)
        self._info = info
        self._generator = ThreadPoolExecutor(1, thread_name_prefix="ov-generate")
        self._tokenizer_thread = ThreadPoolExecutor(1, thread_name_prefix="ov-tokenize")

    @classmethod
    def load(cls, info: ModelInfo, device: str, properties: Mapping[str, str]) -> OpenVINOEngine:
        """Compile the model at ``info.path`` for ``device`` (blocking; call from a thread)."""
        pipeline = ov_genai.LLMPipeline(str(info.path), device, **dict(properties))
        return cls(pipeline, info)

    @property
    def info(self) -> ModelInfo:
        """Name, family, path and context size of the loaded model."""
        return self._info

    @property
    def control_tokens(self) -> frozenset[str]:
        """Strings the tokenizer turns into special token ids (found once, at load)."""
        return self._chat.control_tokens

    async def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as a prompt is tokenized (special tokens added), off the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_thread, self._chat.encode, text)

    async def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` takes as a prompt."""
        return len(await self.encode(text))

    def apply_chat_template(self, messages: Sequence[ChatMessage]) -> str:
        """Render with the model's own chat template, ending in the generation prompt."""
        return self._chat.apply_chat_template(messages)

    def stream(self, prompt: str, params: GenerationParams) -> OpenVINOTokenStream:
        """A stream that starts generating when iterated."""
        return OpenVINOTokenStream(self, prompt, self._generation_config(params))

    async def aclose(self) -> None:
        """Finish queued work and release the model; joining threads blocks, so it runs off the loop."""
        await asyncio.to_thread(self._generator.shutdown, wait=True, cancel_futures=True)
        await asyncio.to_thread(self._tokenizer_thread.shutdown, wait=True)
        self._pipeline = None

    def _generation_config(self, params: GenerationParams) -> Any:
        return self._chat.generation_config(self._pipeline.get_generation_config(), params)

    def submit(self, prompt: str, config: Any, streamer: Any) -> Future[Any]:
        """Queue one ``generate()`` on the engine's single generation thread."""
        return self._generator.submit(self._generate_sync, prompt, config, streamer)

    def _generate_sync(self, prompt: str, config: Any, streamer: Any) -> Any:
        if self._pipeline is None:
            raise EngineError("the model was unloaded")
        return self._pipeline.generate([prompt], config, streamer)


class OpenVINOTokenStream:
    """Chunks from one ``generate()`` call, handed from the worker thread to the loop."""

    def __init__(self, engine: OpenVINOEngine, prompt: str, config: Any) -> None:
        self._engine = engine
        self._prompt = prompt
        self._config = config
        self._stop = threading.Event()
        self._job: Future[Any] | None = None
        self.stats: ReplyStats | None = None
        self.text = ""

    def __aiter__(self) -> AsyncIterator[str]:
        return self._chunks()

    async def aclose(self) -> None:
        """Stop generating; on return the engine no longer works on this stream."""
        self._stop.set()
        job = self._job
        if job is None or job.cancel():  # a job still queued is dropped before it reaches the pipeline
            return
        # A running generation stops at its next token: wait for it so the engine is free on return.
        await asyncio.gather(asyncio.shield(asyncio.wrap_future(job)), return_exceptions=True)
        if self.stats is None and job.exception() is None:
            self.stats = self._stats_of(job.result())

    async def _chunks(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()

        def on_chunk(chunk: str) -> ov_genai.StreamingStatus:
            if self._stop.is_set():
                return ov_genai.StreamingStatus.STOP
            try:
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except RuntimeError:  # the loop has closed (shutdown): nobody is listening any more
                self._stop.set()
                return ov_genai.StreamingStatus.STOP
            return ov_genai.StreamingStatus.RUNNING

        self._job = job = self._engine.submit(self._prompt, self._config, on_chunk)
        job.add_done_callback(lambda _: _put_threadsafe(loop, queue, _DONE))
        try:
            while (item := await queue.get()) is not _DONE:
                self.text += str(item)
                yield str(item)
            tail = self._finish(job)
            if tail:
                yield tail
        finally:
            await self.aclose()

    def _finish(self, job: Future[Any]) -> str:
        """Record stats; return any text the final result holds beyond what was streamed."""
        if job.cancelled():
            return ""
        error = job.exception()
        if error is not None:
            raise EngineError(f"generation failed: {error}") from error
        result = job.result()
        self.stats = self._stats_of(result)
        final = str(result.texts[0])
        if final.startswith(self.text) and len(final) > len(self.text):
            tail = final[len(self.text) :]
            self.text = final
            return tail
        return ""

    def _stats_of(self, result: Any) -> ReplyStats:
        return reply_stats(self._engine.info.name, result.perf_metrics)


def reply_stats(model_name: str, metrics: Any) -> ReplyStats:
    """``ReplyStats`` from OpenVINO GenAI ``PerfMetrics`` (which measure in milliseconds)."""
    return ReplyStats(
        model_name=model_name,
        prompt_tokens=int(metrics.get_num_input_tokens()),
        generated_tokens=int(metrics.get_num_generated_tokens()),
        ttft_s=float(metrics.get_ttft().mean) / 1000,
        tpot_s=float(metrics.get_tpot().mean) / 1000,
    )


def _put_threadsafe(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object], item: object) -> None:
    # The done-callback runs on the worker thread (or at once, for a cancelled job).
    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
        loop.call_soon_threadsafe(queue.put_nowait, item)
