"""P4: single-stream decode speed against llama.cpp on the same GGUF with the same thread count."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from entry.bench.report import Figure, at_least
from model.engine import ChatMessage, Engine, GenerationParams

P4_TARGET = 1.0
STORY = "Write a long story about a lighthouse keeper who befriends a whale. Use many details."
# Each is tried on its own on top of the bot's properties; together they are what the issue asks to try.
VARIANTS: tuple[tuple[str, Mapping[str, str]], ...] = (
    ("KV cache precision u8", {"KV_CACHE_PRECISION": "u8"}),
    ("KV cache precision f16", {"KV_CACHE_PRECISION": "f16"}),
    ("KV cache precision f32", {"KV_CACHE_PRECISION": "f32"}),
    ("dynamic quantization off", {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}),
    ("dynamic quantization group 128", {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "128"}),
    ("hint THROUGHPUT", {"PERFORMANCE_HINT": "THROUGHPUT"}),
    ("1 thread", {"INFERENCE_NUM_THREADS": "1"}),
)

# Loads the bot's kind of engine with extra OpenVINO properties.
EngineFactory = Callable[[Mapping[str, str]], Awaitable[Engine]]


@dataclass(frozen=True)
class Decode:
    """Tokens per second after the first token, and how many tokens that was over."""

    tokens_per_s: float
    tokens: int


def decode_rate(first_at: float, ended_at: float, tokens: int) -> Decode:
    """Decode speed from the consumer's clock: tokens after the first over the time after the first."""
    seconds = ended_at - first_at
    return Decode((tokens - 1) / seconds if tokens > 1 and seconds > 0 else 0.0, tokens)


async def ov_decode(engine: Engine, prompt: str, max_new_tokens: int) -> Decode:
    """One streamed reply on an OpenVINO engine, timed where the bot reads it."""
    stream = engine.stream(prompt, GenerationParams(max_new_tokens))
    first = 0.0
    async for _ in stream:
        first = first or time.perf_counter()
    ended = time.perf_counter()
    return decode_rate(first, ended, stream.stats.generated_tokens if stream.stats else 0)


def llama_decode(model: Path, prompt: str, max_new_tokens: int, threads: int, rounds: int) -> Decode | None:
    """The same prompt on llama.cpp (llama-cpp-python), or None when the `bench` extra is not installed."""
    try:
        from llama_cpp import Llama  # the `bench` extra: built from source, so optional
    except ImportError:
        return None
    llm = Llama(str(model), n_threads=threads, n_threads_batch=threads, n_ctx=2048, verbose=False)
    runs = []
    for _ in range(rounds + 1):  # the first run warms up
        first, tokens = 0.0, 0
        for _chunk in llm.create_completion(prompt, max_tokens=max_new_tokens, temperature=0.0, stream=True):
            first = first or time.perf_counter()
            tokens += 1
        runs.append(decode_rate(first, time.perf_counter(), tokens))
    return median_decode(runs[1:])


def median_decode(runs: list[Decode]) -> Decode:
    """The run of median speed."""
    ordered = sorted(runs, key=lambda d: d.tokens_per_s)
    return ordered[len(ordered) // 2]


async def engine_decode(engine: Engine, prompt: str, max_new_tokens: int, rounds: int) -> Decode:
    """Median decode speed of ``rounds`` replies after one warm-up."""
    await ov_decode(engine, prompt, 4)
    return median_decode([await ov_decode(engine, prompt, max_new_tokens) for _ in range(rounds)])


async def p4_decode(
    load: EngineFactory, model: Path, max_new_tokens: int, rounds: int, variants: bool
) -> tuple[list[Figure], list[str]]:
    """The bot's engine against llama.cpp at the same thread count; each OpenVINO property variant reported."""
    threads = os.cpu_count() or 1
    same_threads = {"INFERENCE_NUM_THREADS": str(threads)}
    engine = await load(same_threads)
    try:
        prompt = engine.apply_chat_template([ChatMessage("user", STORY)])
        ours = await engine_decode(engine, prompt, max_new_tokens, rounds)
    finally:
        await engine.aclose()
    llama = await asyncio.to_thread(llama_decode, model, prompt, max_new_tokens, threads, rounds)
    tried = partial(_variant_lines, load, same_threads, prompt, max_new_tokens, rounds, ours)
    detail = await tried() if variants else []
    return [_figure(ours, llama, threads)], detail


def _figure(ours: Decode, llama: Decode | None, threads: int) -> Figure:
    measure = f"single-stream decode, {threads} threads"
    if llama is None:
        return Figure(
            "P4", measure, f"{ours.tokens_per_s:.0f} tok/s", "llama.cpp not installed", None, "≥ 1x", None,
            note="install the `bench` extra (`pip install -e '.[bench]'`, builds llama.cpp) to compare.",
        )  # fmt: skip
    return Figure(
        "P4",
        measure,
        f"{ours.tokens_per_s:.0f} tok/s",
        f"{llama.tokens_per_s:.0f} tok/s (llama.cpp, same GGUF)",
        *at_least(ours.tokens_per_s / llama.tokens_per_s, P4_TARGET),
        note=f"{ours.tokens} and {llama.tokens} tokens per reply, median of the runs.",
    )


async def _variant_lines(
    load: EngineFactory, same_threads: Mapping[str, str], prompt: str, max_new_tokens: int, rounds: int, base: Decode
) -> list[str]:
    """One table row per OpenVINO property tried, as a ratio to the bot's configured properties."""
    lines = ["| OpenVINO property | decode tok/s | against the bot's properties |", "| --- | --- | --- |"]
    lines.append(f"| the bot's properties | {base.tokens_per_s:.0f} | 1.00x |")
    for label, properties in VARIANTS:
        engine = await load({**same_threads, **properties})
        try:
            measured = await engine_decode(engine, prompt, max_new_tokens, rounds)
        finally:
            await engine.aclose()
        lines.append(f"| {label} | {measured.tokens_per_s:.0f} | {measured.tokens_per_s / base.tokens_per_s:.2f}x |")
    return lines
