"""What only ``ProcessEngine`` has: a model process that can die, must exit, and can fail to load.

The behaviour it shares with the in-process engine (interleaving, cancellation, stats,
prefix cache, event-loop lag) is tested on both engines in ``test_batching_engine``.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from model.engine import EngineError, GenerationParams, ModelLoadError
from model.loader import OPENVINO_MODEL_FILES, load_process_engine
from model.process_engine import ProcessEngine
from tests.test_batching_engine import EXACT, QUESTIONS, Timed, collect, prompt_for

pytestmark = pytest.mark.model

# Long enough that no story ends on its own while a test acts on it.
LONG = GenerationParams(max_new_tokens=256)
SHORT = GenerationParams(max_new_tokens=24)
TOPICS = ("the sea", "a lighthouse", "two cats", "a train", "the moon", "a baker", "a storm", "a garden")


@pytest.fixture
async def process_engine(bundled_model: Path) -> ProcessEngine:
    """A model process of this test's own (the test may kill it); closed by the test."""
    return await asyncio.to_thread(load_process_engine, bundled_model, "CPU", EXACT)


def children() -> set[int]:
    """Ids of this process's live (or unreaped) children."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it exited while we looked
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.add(int(entry.name))
    return found


async def started(engine: ProcessEngine, count: int, params: GenerationParams) -> list[asyncio.Task[Timed]]:
    """``count`` stories generating, each past its first chunk."""
    first_chunks = [asyncio.Event() for _ in range(count)]

    async def tell(topic: str, first_chunk: asyncio.Event) -> Timed:
        reply = Timed()
        async for chunk in engine.stream(prompt_for(engine, f"Write a long story about {topic}."), params):
            reply.text += chunk
            first_chunk.set()
        return reply

    tasks = [asyncio.create_task(tell(topic, event)) for topic, event in zip(TOPICS, first_chunks, strict=False)]
    await asyncio.gather(*(event.wait() for event in first_chunks))
    return tasks


async def test_a_killed_model_process_fails_every_open_stream_and_every_new_one(process_engine: ProcessEngine) -> None:
    tasks = await started(process_engine, 8, LONG)
    os.kill(process_engine.pid, signal.SIGKILL)

    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    assert all(isinstance(result, EngineError) for result in results), results
    assert "the model process stopped unexpectedly (killed by signal SIGKILL)" in str(results[0])
    with pytest.raises(EngineError, match="model process stopped"):
        await asyncio.wait_for(collect(process_engine.stream(prompt_for(process_engine, QUESTIONS[0]), LONG)), 5)

    await asyncio.wait_for(process_engine.aclose(), 15)
    assert process_engine.pid not in children()


# The stream abandoned on a closed loop is finalized without a loop to finish its cleanup on.
@pytest.mark.filterwarnings("ignore:Exception ignored in. <async_generator:pytest.PytestUnraisableExceptionWarning")
async def test_aclose_finishes_running_replies_then_the_model_process_exits(process_engine: ProcessEngine) -> None:
    pid = process_engine.pid
    assert pid in children()

    def consume_on_a_loop_that_then_closes() -> None:
        loop = asyncio.new_event_loop()
        chunks = aiter(process_engine.stream(prompt_for(process_engine, "Write a long story about a river."), LONG))
        loop.run_until_complete(anext(chunks))
        loop.close()  # abruptly: its reply is still generating, and nobody will ever read it

    # Its next ids cannot be delivered: the engine cancels it, and closing does not wait for its 256 tokens.
    await asyncio.to_thread(consume_on_a_loop_that_then_closes)
    tasks = await started(process_engine, 2, SHORT)
    await asyncio.wait_for(process_engine.aclose(), 60)

    for task in tasks:  # each ran to its end, not cut off by the close
        assert task.done() and not task.cancelled()
        reply = task.result()
        assert len(process_engine.chat.encode(reply.text)) > SHORT.max_new_tokens // 2
    assert pid not in children()
    with pytest.raises(EngineError, match="unloaded"):
        await collect(process_engine.stream(prompt_for(process_engine, QUESTIONS[0]), SHORT))


async def test_an_unknown_device_fails_to_load_with_openvinos_message(bundled_model: Path) -> None:
    before = children()
    with pytest.raises(ModelLoadError, match=r'on NOPE: Device with "NOPE" name is not registered'):
        await asyncio.to_thread(load_process_engine, bundled_model, "NOPE", {})
    assert children() <= before


async def test_a_corrupt_or_missing_model_fails_to_load_with_a_clear_message(tmp_path: Path) -> None:
    before = children()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model at all")
    with pytest.raises(ModelLoadError, match="is not a readable GGUF model"):
        await asyncio.to_thread(load_process_engine, broken, "CPU", {})
    with pytest.raises(ModelLoadError, match="is not a readable GGUF model"):
        await asyncio.to_thread(load_process_engine, tmp_path / "missing.gguf", "CPU", {})

    exported = tmp_path / "exported"
    exported.mkdir()
    for name in OPENVINO_MODEL_FILES:  # complete by name, garbage inside: inspection passes, OpenVINO refuses
        (exported / name).write_text("garbage")
    with pytest.raises(ModelLoadError, match=r"OpenVINO could not load the model at .*exported on CPU: Unable to read"):
        await asyncio.to_thread(load_process_engine, exported, "CPU", {})
    assert children() <= before
