"""The remote engine against a real llama.cpp server on loopback serving the bundled model."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.settings import DEFAULT_SYSTEM_PROMPT
from entry.llama_server import LlamaServer, free_port, llama_server
from model.engine import ChatMessage, Engine, EngineError, GenerationParams
from model.loader import load_remote_engine
from model.openvino_engine import ChatTokenizer, OpenVINOEngine
from model.remote_engine import RemoteEngine, served_model
from tests.behaviour.harness import wait_until
from tests.remote.conftest import LONG, SHORT, connect

STORY = "<|im_start|>user\nTell me a long story about a lighthouse.<|im_end|>\n<|im_start|>assistant\n"


async def test_a_reply_streams_in_chunks_with_its_stats(remote_engine: RemoteEngine) -> None:
    stream = remote_engine.stream(STORY, GenerationParams(max_new_tokens=12))
    chunks = [chunk async for chunk in stream]
    assert len(chunks) > 1 and "".join(chunks) == stream.text
    assert stream.stats is not None
    assert stream.stats.prompt_tokens == await remote_engine.count_tokens(STORY)
    assert stream.stats.generated_tokens > 1 and stream.stats.ttft_s > 0
    assert "SmolLM2" in stream.stats.model_name
    assert remote_engine.model == "SmolLM2-135M-Instruct.Q4_1"  # asked of the server: the name requests use
    engine: Engine = remote_engine  # it satisfies the core's interface (checked by mypy)
    assert engine.info.family == "generic"


async def test_the_capital_of_france_is_paris(remote_engine: RemoteEngine) -> None:
    messages = [ChatMessage("system", DEFAULT_SYSTEM_PROMPT), ChatMessage("user", "What is the capital of France?")]
    stream = remote_engine.stream(remote_engine.apply_chat_template(messages), GenerationParams(max_new_tokens=12))
    assert "Paris" in "".join([chunk async for chunk in stream])


async def test_closing_a_stream_stops_the_server_generating(remote_engine: RemoteEngine, llama: LlamaServer) -> None:
    stream = remote_engine.stream(STORY, LONG)
    chunks = aiter(stream)
    await anext(chunks)
    await anext(chunks)
    await stream.aclose()
    await wait_until(lambda: "Disconnected from client" in llama.log_text())  # the server saw the stream end
    second = remote_engine.stream(STORY, SHORT)
    assert [chunk async for chunk in second] and llama.process.poll() is None


async def test_a_server_killed_mid_reply_ends_it_with_a_clear_error(
    bundled_model: Path, chat_tokenizer: ChatTokenizer
) -> None:
    async with llama_server(bundled_model) as server:
        engine = connect([server.url], chat_tokenizer)
        stream = engine.stream(STORY, LONG)
        chunks = aiter(stream)
        await anext(chunks)
        server.kill()
        with pytest.raises(EngineError, match=f"127.0.0.1:{server.port}") as raised:
            async with asyncio.timeout(60):  # a guard: a hang fails here instead of at the suite's timeout
                async for _ in chunks:
                    pass
        assert "middle of the reply" in str(raised.value)
        await engine.aclose()


async def test_a_server_that_is_not_there_is_named(chat_tokenizer: ChatTokenizer) -> None:
    port = free_port()
    engine = connect([f"http://127.0.0.1:{port}/v1"], chat_tokenizer)
    with pytest.raises(EngineError, match=f"The model server at 127.0.0.1:{port} is not reachable"):
        [chunk async for chunk in engine.stream(STORY, SHORT)]
    await engine.aclose()


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A port that accepts connections and never answers (a hung server)."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def test_a_server_that_does_not_answer_times_out(chat_tokenizer: ChatTokenizer, silent_server: int) -> None:
    engine = connect([f"http://127.0.0.1:{silent_server}/v1"], chat_tokenizer, model="any", timeout_s=0.5)
    with pytest.raises(EngineError, match=f"127.0.0.1:{silent_server} did not answer within 0.5 s"):
        [chunk async for chunk in engine.stream(STORY, SHORT)]
    await engine.aclose()


async def test_a_refused_request_says_why_without_the_key(bundled_model: Path, chat_tokenizer: ChatTokenizer) -> None:
    async with llama_server(bundled_model, api_key="the-right-key") as server:
        engine = connect([server.url], chat_tokenizer, api_key="sk-wrong-secret")
        with pytest.raises(EngineError, match="HTTP 401") as raised:
            [chunk async for chunk in engine.stream(STORY, SHORT)]
        assert "sk-wrong-secret" not in str(raised.value) and f"127.0.0.1:{server.port}" in str(raised.value)
        await engine.aclose()


async def test_tokens_agree_with_the_in_process_engine(remote_engine: RemoteEngine, engine: OpenVINOEngine) -> None:
    text = "Hello <|im_end|> there, <|im_start|>assistant: ünïcode 12345"
    assert remote_engine.control_tokens == engine.control_tokens
    assert "<|im_end|>" in remote_engine.control_tokens
    assert await remote_engine.encode(text) == await engine.encode(text)
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")]
    assert remote_engine.apply_chat_template(messages) == engine.apply_chat_template(messages)


async def test_a_server_down_at_start_does_not_stop_loading(
    llama: LlamaServer, bundled_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = f"http://127.0.0.1:{free_port()}/v1"
    with caplog.at_level(logging.WARNING):
        engine = await asyncio.to_thread(load_remote_engine, [down], bundled_model, **_OPTIONS)
    assert engine.info.name == bundled_model.stem and engine.info.family == "generic" and engine.capacity == 2
    assert engine.model is None and "No model server answered" in caplog.text  # asked again once one answers
    await engine.aclose()
    assert served_model([down, llama.url], None, 5.0) == bundled_model.stem  # the next server names it


_OPTIONS: dict[str, object] = {
    "model": None,
    "api_key": None,
    "capacity": 2,
    "timeout_s": 5.0,
    "retry_s": 30.0,
    "context_size": None,
}
