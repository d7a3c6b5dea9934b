"""A real llama.cpp server serving the bundled GGUF on loopback, and remote engines over it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import openvino_genai as ov_genai
import pytest

from entry.llama_server import LlamaServer, llama_server
from model.engine import GenerationParams
from model.loader import inspect_model
from model.openvino_engine import ChatTokenizer
from model.remote_engine import RemoteEngine

pytest.importorskip("llama_cpp", reason="the bench extra (llama.cpp's server) is not installed")

SHORT = GenerationParams(max_new_tokens=8)
LONG = GenerationParams(max_new_tokens=200)


@pytest.fixture(scope="session")
def chat_tokenizer(bundled_model: Path) -> ChatTokenizer:
    """The bundled model's tokenizer alone, as the remote engine loads it (never the model itself)."""
    return ChatTokenizer(ov_genai.Tokenizer(str(bundled_model)), inspect_model(bundled_model))


@pytest.fixture(scope="session")
async def llama(bundled_model: Path) -> AsyncIterator[LlamaServer]:
    """One llama.cpp server for the session; tests that kill a server start their own."""
    async with llama_server(bundled_model) as server:
        yield server


@pytest.fixture(scope="session")
async def remote_engine(llama: LlamaServer, chat_tokenizer: ChatTokenizer) -> AsyncIterator[RemoteEngine]:
    """A remote engine over the session's server, shared by the tests that do not break it."""
    engine = connect([llama.url], chat_tokenizer)
    yield engine
    await engine.aclose()


def connect(
    urls: Sequence[str], chat: ChatTokenizer, *, clock: Callable[[], float] | None = None, **options: object
) -> RemoteEngine:
    """A remote engine over ``urls`` with test-sized defaults (overridden by ``options``)."""
    settings: dict[str, object] = {"model": None, "api_key": None, "capacity_each": 4, "timeout_s": 30.0}
    settings.update({"retry_s": 30.0, **options})
    if clock is not None:
        settings["clock"] = clock
    return RemoteEngine.connect(urls, chat, **settings)  # type: ignore[arg-type]


class Clock:
    """A clock the test moves on, so "after retry_s" needs no waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now
