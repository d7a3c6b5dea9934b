"""Side-by-side measurements of the conversation core against the bare OpenVINO pipeline.

Run: ``.venv/bin/python bench/bench_engine.py`` (writes BENCHMARKS.md).  Every number
that matters is a ratio of two measurements taken in the same run on the same
machine, so the result holds on other hardware too.
"""

from __future__ import annotations

import asyncio
import platform
import statistics
import sys
import time
from pathlib import Path

import openvino_genai as ov_genai

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.manager import ConversationConfig, ConversationManager  # noqa: E402
from bot.store import MemoryHistoryStore  # noqa: E402
from bot.types import ConversationKey  # noqa: E402
from model.bundled import ensure_bundled_model  # noqa: E402
from model.engine import ChatMessage, GenerationParams  # noqa: E402
from model.loader import load_engine  # noqa: E402
from model.openvino_engine import OpenVINOEngine  # noqa: E402
from model.slot import EngineSlot  # noqa: E402

QUESTION = "Write a long, detailed story about a lighthouse keeper who befriends a whale."
NEW_TOKENS = 96
ROUNDS = 5
PROPERTIES = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
GENERATED: list[int] = []  # tokens per reply, as the manager's stats report them


def bare_pipeline_seconds(engine: OpenVINOEngine, prompt: str) -> tuple[float, float]:
    """Wall time and time to first token of a direct ``LLMPipeline.generate`` with a streamer."""
    pipeline = engine._pipeline
    config = engine._generation_config(GenerationParams(max_new_tokens=NEW_TOKENS))
    first: list[float] = []
    start = time.perf_counter()

    def on_chunk(_: str) -> ov_genai.StreamingStatus:
        if not first:
            first.append(time.perf_counter() - start)
        return ov_genai.StreamingStatus.RUNNING

    pipeline.generate([prompt], config, on_chunk)
    return time.perf_counter() - start, first[0]


async def manager_seconds(manager: ConversationManager, key: ConversationKey) -> tuple[float, float]:
    """Wall time and time to first chunk of the same question through the conversation manager."""
    await manager.reset(key)
    start = time.perf_counter()
    first = 0.0
    reply = manager.reply(key, QUESTION)
    async for _ in reply:
        first = first or time.perf_counter() - start
    seconds = time.perf_counter() - start
    if reply.stats is not None:
        GENERATED.append(reply.stats.generated_tokens)
    return seconds, first


async def measure(engine: OpenVINOEngine) -> dict[str, float]:
    config = ConversationConfig(system_prompt="You are helpful.", max_new_tokens=NEW_TOKENS)
    manager = ConversationManager(EngineSlot(engine), MemoryHistoryStore(), config)
    key = ConversationKey("bench", "one")
    prompt = engine.apply_chat_template([ChatMessage("system", config.system_prompt), ChatMessage("user", QUESTION)])
    bare, ours, bare_first, our_first = [], [], [], []
    for _ in range(ROUNDS):  # interleaved so that drift hits both sides alike
        seconds, first = await asyncio.to_thread(bare_pipeline_seconds, engine, prompt)
        bare.append(seconds)
        bare_first.append(first)
        seconds, first = await manager_seconds(manager, key)
        ours.append(seconds)
        our_first.append(first)
    return {
        "bare_s": statistics.median(bare),
        "manager_s": statistics.median(ours),
        "bare_ttft_s": statistics.median(bare_first),
        "manager_ttft_s": statistics.median(our_first),
        "loop_lag_ms": await loop_lag_during_generation(manager),
    }


async def loop_lag_during_generation(manager: ConversationManager) -> float:
    """Worst delay of a 10 ms timer while a reply streams: the loop must stay free."""
    done = asyncio.Event()
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - start - 0.01)

    tick = asyncio.create_task(ticker())
    await manager.reply(ConversationKey("bench", "lag"), QUESTION).complete()
    done.set()
    await tick
    return worst * 1000


def write_report(results: dict[str, float], model: str) -> None:
    overhead = results["manager_s"] / results["bare_s"]
    ttft_ratio = results["manager_ttft_s"] / results["bare_ttft_s"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `bench/bench_engine.py` on {platform.machine()} with {model}, "
        f"at most {NEW_TOKENS} new tokens ({statistics.median(GENERATED or [0]):.0f} generated per reply), "
        f"median of {ROUNDS} interleaved rounds, greedy decoding.",
        "",
        "| measure | bare LLMPipeline | through the conversation manager | ratio (manager / bare) |",
        "| --- | --- | --- | --- |",
        f"| whole reply | {results['bare_s']:.3f} s | {results['manager_s']:.3f} s | {overhead:.3f} |",
        f"| first token | {results['bare_ttft_s'] * 1000:.0f} ms | {results['manager_ttft_s'] * 1000:.0f} ms "
        f"| {ttft_ratio:.3f} |",
        "",
        f"Worst event-loop delay of a 10 ms timer while a reply streams: {results['loop_lag_ms']:.1f} ms "
        "(generation runs off the loop).",
        "",
        "The manager's extra work per reply (history, token counting for trimming, rendering, hand-off of",
        "each chunk from the worker thread to the loop) is the difference between the two columns.",
    ]
    (REPO / "BENCHMARKS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    model = ensure_bundled_model(REPO / ".cache" / "models")
    engine = load_engine(model, "CPU", PROPERTIES)
    results = asyncio.run(measure(engine))
    write_report(results, engine.info.name)


if __name__ == "__main__":
    main()
