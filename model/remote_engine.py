"""A model served by OpenAI-compatible servers (OpenVINO Model Server, llama.cpp's server) behind ``Engine``.

The core renders every prompt itself, so replies always go through the completions endpoint: each server
receives exactly the prompt the core rendered (Phi-3's byte-identical rendering included), never a chat
template of its own. Tokens are counted, and control tokens found, with the same model's tokenizer loaded
from local disk (``openvino_genai.Tokenizer`` reads an exported directory or a GGUF file without compiling
the model), so trimming and the control-token guard behave as with the in-process engines.

Retries are safe only before a reply has shown any text: a server that refuses the connection, fails (5xx)
or does not answer in time is left out for ``retry_s`` and the request goes to the next endpoint on the ring
(``model.endpoints``). Once text was shown a failure ends the reply with a clear ``EngineError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai

from model.endpoints import Endpoint, EndpointRing, address
from model.engine import ChatMessage, EngineError, GenerationParams, ModelInfo, ReplyStats
from model.openvino_engine import ChatTokenizer

# The key of a request without a conversation: the system prompt and first turn, sticky per conversation.
_AFFINITY_CHARS = 200
log = logging.getLogger(__name__)
_SAID_CHARS = 200
# Servers without an API key still get one: the client insists on a value.
NO_API_KEY = "none"


class RemoteEngine:
    """A chat model on one or more model servers, each taking ``capacity_each`` replies at once."""

    def __init__(
        self,
        ring: EndpointRing[openai.AsyncOpenAI],
        chat: ChatTokenizer,
        *,
        model: str | None,
        timeout_s: float,
        capacity_each: int,
    ) -> None:
        self.ring = ring
        self.model = model
        self.timeout_s = timeout_s
        self._chat = chat
        self._capacity_each = capacity_each
        self._tokenizer_thread = ThreadPoolExecutor(1, thread_name_prefix="remote-tokenize")

    @classmethod
    def connect(
        cls,
        urls: Sequence[str],
        chat: ChatTokenizer,
        *,
        model: str | None,
        api_key: str | None,
        capacity_each: int,
        timeout_s: float,
        retry_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> RemoteEngine:
        """An engine over the servers at ``urls`` (API bases such as ``http://ovms:8000/v3``); opens no connection.

        ``model`` is the name requests ask for; None: the first one the first server to answer lists.
        ``clock`` times how long a failed server is left out (tests move it on instead of waiting).
        """
        endpoints = [Endpoint(url, _client(url, api_key, timeout_s), asyncio.Semaphore(capacity_each)) for url in urls]
        return cls(
            EndpointRing(endpoints, retry_s, clock), chat, model=model, timeout_s=timeout_s, capacity_each=capacity_each
        )

    @property
    def info(self) -> ModelInfo:
        """Name, family, path and context size of the served model (read from its local copy)."""
        return self._chat.info

    @property
    def capacity(self) -> int:
        """Replies all servers generate at once: admission control's limit."""
        return self._capacity_each * len(self.ring.endpoints)

    @property
    def control_tokens(self) -> frozenset[str]:
        """Strings the model's tokenizer turns into special token ids."""
        return self._chat.control_tokens

    async def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as a prompt is tokenized (special tokens added), off the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_thread, self._chat.encode, text)

    async def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` takes as a prompt."""
        return len(await self.encode(text))

    async def count_reply_tokens(self, text: str) -> int:
        """How many tokens a generated ``text`` is (no special tokens added), off the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_thread, _count_plain, self._chat.tokenizer, text)

    def apply_chat_template(self, messages: Sequence[ChatMessage]) -> str:
        """Render with the model's own chat template, ending in the generation prompt."""
        return self._chat.apply_chat_template(messages)

    def stream(self, prompt: str, params: GenerationParams) -> RemoteTokenStream:
        """A stream that sends ``prompt`` when iterated.

        ``params.affinity`` (the core passes the conversation key) picks the server, so a conversation keeps to
        one; without it the prompt's beginning (system prompt and first turn) does.
        """
        return RemoteTokenStream(self, prompt, params, params.affinity or prompt[:_AFFINITY_CHARS])

    async def model_for(self, endpoint: Endpoint[openai.AsyncOpenAI]) -> str:
        """The model name to ask ``endpoint`` for: the configured one, else the first one it lists."""
        if self.model is None:
            async for served in endpoint.client.models.list():
                self.model = served.id
                break
            else:
                raise EngineError(f"The model server at {endpoint.address} serves no model.")
        return self.model

    async def aclose(self) -> None:
        """Close every server connection and the tokenizer thread."""
        for endpoint in self.ring.endpoints:
            await endpoint.client.close()
        await asyncio.to_thread(self._tokenizer_thread.shutdown, wait=True)


def served_model(urls: Sequence[str], api_key: str | None, timeout_s: float) -> str | None:
    """The first model id the first server to answer lists (blocking); None when none answers."""
    for url in urls:
        try:
            with openai.OpenAI(base_url=url, api_key=api_key or NO_API_KEY, timeout=timeout_s, max_retries=0) as client:
                for served in client.models.list():
                    return served.id
        except openai.APIError as error:  # its message names neither the key nor the request's headers
            log.warning("The model server at %s did not list its models: %s", address(url), error)
    return None


def _client(url: str, api_key: str | None, timeout_s: float) -> openai.AsyncOpenAI:
    # Retries are ours: only before any text, and on another server.
    return openai.AsyncOpenAI(base_url=url, api_key=api_key or NO_API_KEY, timeout=timeout_s, max_retries=0)


def _count_plain(tokenizer: Any, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).input_ids.data[0])


class RemoteTokenStream:
    """One reply streamed from a server; ``aclose`` closes the HTTP stream, which stops the server generating."""

    def __init__(self, engine: RemoteEngine, prompt: str, params: GenerationParams, key: str) -> None:
        self._engine = engine
        self._prompt = prompt
        self._params = params
        self._key = key
        self._closed = False
        self._response: Any = None
        self._held: Endpoint[openai.AsyncOpenAI] | None = None
        self._usage: Any = None
        self._sent = self._last = 0.0
        self._first: float | None = None  # when the first text came
        self._chunks: AsyncGenerator[str] | None = None
        self.stats: ReplyStats | None = None
        self.text = ""

    def __aiter__(self) -> AsyncIterator[str]:
        self._chunks = self._run()
        return self._chunks

    async def aclose(self) -> None:
        """Stop generating; safe at any time, also after the end or from another task."""
        self._closed = True
        await self._close_response()
        chunks = self._chunks
        if chunks is not None and not getattr(chunks, "ag_running", True):
            await chunks.aclose()
        self._release()
        if self.stats is None and self.text:
            with contextlib.suppress(RuntimeError):  # the engine closed its tokenizer thread first: no stats
                self.stats = await self._stats()

    async def _run(self) -> AsyncGenerator[str]:
        try:
            async for text in self._generate():
                self.text += text
                yield text
            self.stats = await self._stats()
        finally:
            await self.aclose()

    async def _generate(self) -> AsyncIterator[str]:
        """Texts from the first endpoint that answers; a failure before any text moves on to the next."""
        ring, failure = self._engine.ring, None
        tried: list[Endpoint[openai.AsyncOpenAI]] = []
        while (endpoint := ring.pick(self._key, tried)) is not None:
            tried.append(endpoint)
            shown = False
            try:
                async with contextlib.aclosing(self._attempt(endpoint)) as texts:
                    async for text in texts:
                        shown = True
                        yield text
                return
            except RemoteFailure as error:
                if error.down:
                    ring.mark_down(endpoint)
                if self._closed:
                    return
                if shown or not error.retriable:
                    raise EngineError(str(error)) from error
                failure = error
        raise EngineError(unreachable(ring, failure))

    async def _attempt(self, endpoint: Endpoint[openai.AsyncOpenAI]) -> AsyncGenerator[str]:
        await endpoint.slots.acquire()
        self._held = endpoint
        try:
            if self._closed:  # closed by another task while it waited for a slot
                return
            self._sent, self._first = time.perf_counter(), None
            self._response = await self._within(self._request(endpoint), endpoint)
            chunks, finished = aiter(self._response), False
            while (chunk := await self._within(anext(chunks, None), endpoint)) is not None:
                self._usage = chunk.usage or self._usage
                for choice in chunk.choices:
                    finished = finished or choice.finish_reason is not None
                    if choice.text:
                        self._last = time.perf_counter()
                        self._first = self._first or self._last
                        yield choice.text
            if not finished and not self._closed:
                raise RemoteFailure(f"The model server at {endpoint.address} ended the reply early.")
        finally:
            await self._close_response()
            self._release()

    async def _within(self, step: Any, endpoint: Endpoint[openai.AsyncOpenAI]) -> Any:
        """Await one step of the request, at most ``timeout_s``; errors become a ``RemoteFailure``."""
        midway = self._first is not None
        try:
            async with asyncio.timeout(self._engine.timeout_s):
                return await step
        except Exception as error:
            if self._closed:  # its stream was closed under it: whatever broke, nobody waits for more
                raise RemoteFailure("closed", retriable=False, down=False) from error
            if isinstance(error, (openai.APIError, TimeoutError)):
                raise failure_of(error, endpoint, self._engine.timeout_s, midway=midway) from error
            raise

    async def _request(self, endpoint: Endpoint[openai.AsyncOpenAI]) -> Any:
        params, sampling = self._params, self._params.temperature > 0
        return await endpoint.client.completions.create(
            model=await self._engine.model_for(endpoint),
            prompt=self._prompt,
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p if sampling else 1.0,
            # OVMS and vLLM read repetition_penalty, llama.cpp's server repeat_penalty (1.1 unless sent).
            extra_body={"repetition_penalty": params.repetition_penalty, "repeat_penalty": params.repetition_penalty},
        )

    async def _close_response(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            with contextlib.suppress(Exception):  # a connection already broken has nothing left to close
                await response.close()

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.slots.release()

    async def _stats(self) -> ReplyStats:
        usage = self._usage
        prompt = usage.prompt_tokens if usage else await self._engine.count_tokens(self._prompt)
        generated = usage.completion_tokens if usage else await self._engine.count_reply_tokens(self.text)
        first = self._first or self._sent
        return ReplyStats(
            model_name=self._engine.info.name,
            prompt_tokens=int(prompt),
            generated_tokens=int(generated),
            ttft_s=first - self._sent,
            tpot_s=(self._last - first) / (generated - 1) if generated > 1 else 0.0,
        )


class RemoteFailure(Exception):
    """One server failed one request; ``retriable``: another server may take it, ``down``: leave this one out."""

    def __init__(self, message: str, *, retriable: bool = True, down: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.down = down


def failure_of(error: Exception, endpoint: Endpoint[Any], timeout_s: float, *, midway: bool) -> RemoteFailure:
    """What ``error`` means for chat; the API key is never part of it (servers do not echo it)."""
    where = f"The model server at {endpoint.address}"
    if isinstance(error, (TimeoutError, openai.APITimeoutError)):
        if midway:
            return RemoteFailure(f"{where} stopped sending the reply (no new text within {timeout_s:g} s).")
        return RemoteFailure(f"{where} did not answer within {timeout_s:g} s.")
    if isinstance(error, openai.APIConnectionError):
        if midway:
            return RemoteFailure(f"{where} closed the connection in the middle of the reply.")
        return RemoteFailure(f"{where} is not reachable.")
    if isinstance(error, openai.APIStatusError):
        status, said = error.status_code, _said(error.body, error.message)
        if status >= 500:
            # It answered, so it is up: another server may take this request, later ones still come here.
            return RemoteFailure(f"{where} failed (HTTP {status}: {said}).", down=False)
        # Busy (429): another server may take it, but this one is fine.
        return RemoteFailure(
            f"{where} refused the request (HTTP {status}: {said}).", retriable=status == 429, down=False
        )
    return RemoteFailure(
        f"{where} reported an error: {_said(getattr(error, 'body', None), str(error))}.", retriable=False, down=False
    )


def _said(body: object, fallback: str) -> str:
    """The server's own short message out of an error body (OpenAI's, FastAPI's or a bare string)."""
    said: object = body
    if isinstance(body, dict):
        inner = body.get("error")
        said = (inner.get("message") if isinstance(inner, dict) else inner) or body.get("detail") or body.get("message")
    text = " ".join(str(said or fallback).split())
    return text if len(text) <= _SAID_CHARS else text[: _SAID_CHARS - 1] + "…"


def unreachable(ring: EndpointRing[Any], failure: RemoteFailure | None) -> str:
    """The message when no server took a request: the one server's own failure, else every server tried."""
    if len(ring.endpoints) == 1 and failure is not None:
        return str(failure)
    last = f" The last one: {failure}" if failure is not None else ""
    return f"No model server is reachable (tried: {ring.addresses()}).{last}"
