"""The engine interface the conversation core talks to.

The core never touches openvino_genai directly: it renders a prompt, hands it to an
``Engine`` and consumes a ``TokenStream`` of text chunks.  Anything that satisfies
this protocol (a real OpenVINO pipeline, a pool of them, a model being hot-swapped)
can sit behind the conversation manager.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

ModelFamily = Literal["phi3", "generic"]


Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation as the model sees it.

    ``name`` is who wrote a user turn (a display name, as OpenAI's chat API has it) and ``speaker`` a stable
    id of that person, never shown (it tells apart two people of the same name); engines and chat templates
    ignore both: where a conversation has several people, the core writes the name into the content.
    """

    role: Role
    content: str
    name: str | None = None
    speaker: str | None = None


@dataclass(frozen=True)
class ReplyStats:
    """Measurements of one generated reply."""

    model_name: str
    prompt_tokens: int
    generated_tokens: int
    ttft_s: float
    tpot_s: float

    @property
    def tokens_per_s(self) -> float:
        """Decoding speed after the first token (0 when too few tokens were generated)."""
        return 1.0 / self.tpot_s if self.tpot_s > 0 else 0.0


class EngineError(RuntimeError):
    """Generation failed inside the engine."""


class ModelLoadError(RuntimeError):
    """A model is missing, incomplete or unreadable; the message says what and where."""


@dataclass(frozen=True)
class GenerationParams:
    """Per-request decoding settings.

    ``affinity`` names what the request belongs to (a conversation): an engine spread over several model
    servers sends requests of the same affinity to the same server, where their common prefix is cached.
    Engines on one machine ignore it.
    """

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    affinity: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What the core needs to know about a loaded model."""

    name: str
    family: ModelFamily
    path: Path
    context_size: int


class TokenStream(Protocol):
    """Async iterator of reply text chunks; ``stats`` is set once it is exhausted."""

    stats: ReplyStats | None

    def __aiter__(self) -> AsyncIterator[str]: ...

    async def aclose(self) -> None:
        """Stop generating; safe to call at any time, also after the end."""


class Engine(Protocol):
    """A loaded chat model that streams replies without blocking the event loop."""

    @property
    def info(self) -> ModelInfo: ...

    @property
    def control_tokens(self) -> frozenset[str]:
        """Strings that the tokenizer turns into special (control) token ids."""

    async def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` exactly as the prompt will be tokenized."""

    async def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes in a prompt."""

    def apply_chat_template(self, messages: Sequence[ChatMessage]) -> str:
        """Render messages with the model's own chat template, ending in a generation prompt."""

    def stream(self, prompt: str, params: GenerationParams) -> TokenStream:
        """Start generating a reply to an already rendered prompt."""

    async def aclose(self) -> None:
        """Release the model once no stream uses it any more."""


@runtime_checkable
class ReportsKvCacheUse(Protocol):
    """An engine that knows how full its KV cache is (the continuous batching ones)."""

    @property
    def kv_cache_use(self) -> float | None:
        """Share of the KV cache in use after the latest step, 0 to 1; None before the first step."""


def kv_cache_use(engine: object) -> float | None:
    """How full ``engine``'s KV cache is, 0 to 1, or None when it does not say (``LLMPipeline`` does not)."""
    if isinstance(engine, ReportsKvCacheUse):
        return engine.kv_cache_use
    return None
