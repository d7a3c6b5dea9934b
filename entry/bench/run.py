"""`bot bench`: load the bot's engine and its baselines, measure P1-P5 side by side, write BENCHMARKS.md."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.settings import Settings
from entry.bench.concurrency import Measured, p1_many_at_once, p2_follow_up, warm_up
from entry.bench.decode import p4_decode
from entry.bench.overhead import p3_overhead
from entry.bench.phi3_shape import p6_phi3_shape
from entry.bench.remote import remote_figures, split_urls
from entry.bench.report import Figure, Report
from entry.compose import engine_loader
from model.bundled import ensure_bundled_model
from model.engine import Engine
from model.loader import load_engine

GB = 1 << 30
P5_MEMORY_TARGET_GB = 1.0
P5_GROWTH_TARGET = 1.10


@dataclass(frozen=True)
class Plan:
    """How long each measurement runs: the full bench, or a smoke that only shows it all works."""

    name: str
    p1_tokens: int = 64
    history_tokens: int = 2000
    p2_tokens: int = 16
    p3_rounds: int = 10
    p3_tokens: int = 32
    p4_tokens: int = 128
    p4_rounds: int = 3
    p4_variants: bool = True
    p5_stored: int = 1000
    p5_waiting: int = 50
    p5_turns: int = 1000


FULL = Plan("full run")
# P1-P3 on the Phi-3-mini shape: its decode is ~20x slower than the bundled model's, so replies are shorter.
PHI3_SHAPE = Plan("Phi-3-mini shape", p1_tokens=32, p2_tokens=8, p3_rounds=3, p3_tokens=8)
QUICK = Plan(
    "quick smoke: short runs whose figures do not stand for the targets",
    p1_tokens=8,
    history_tokens=300,
    p2_tokens=4,
    p3_rounds=3,
    p3_tokens=8,
    p4_tokens=16,
    p4_rounds=1,
    p4_variants=False,
    p5_stored=100,
    p5_waiting=16,
    p5_turns=32,
)


async def load_bot_engine(settings: Settings, model: Path, extra: Mapping[str, str] | None = None) -> Engine:
    """The engine the bot runs, as its settings configure it, with ``extra`` OpenVINO properties on top."""
    if extra:
        settings = settings.model_copy(update={"ov_properties": {**settings.ov_properties, **extra}})
    engine: Engine = await asyncio.to_thread(engine_loader(settings), model)
    return engine


async def serving_figures(settings: Settings, model: Path, plan: Plan, seen: Measured | None = None) -> list[Figure]:
    """P1-P3: the bot's engine and a serial ``LLMPipeline``, loaded side by side; ``seen`` keeps the bot's timings."""
    bot = await load_bot_engine(settings, model)
    serial: Engine = await asyncio.to_thread(
        load_engine, model, settings.device, settings.runtime_properties(), settings.context_size
    )
    try:
        for engine in (bot, serial):
            await warm_up(engine)
        figures = await p1_many_at_once(bot, serial, plan.p1_tokens, seen)
        figures += await p2_follow_up(bot, serial, plan.history_tokens, plan.p2_tokens, seen)
        figures += await p3_overhead(bot, plan.p3_rounds, plan.p3_tokens)
        return figures
    finally:
        await bot.aclose()
        await serial.aclose()


def beside(figures: list[Figure], more: list[Figure], *, after: str) -> list[Figure]:
    """``figures`` with ``more`` placed right after the last figure keyed ``after`` (at the end if none is)."""
    keys = [figure.key for figure in figures]
    at = len(keys) - keys[::-1].index(after) if after in keys else len(keys)
    return [*figures[:at], *more, *figures[at:]]


def memory_figures(settings: Settings, model: Path, plan: Plan) -> list[Figure]:
    """P5, in a fresh process so that only what the bot itself holds is counted."""
    with tempfile.TemporaryDirectory(prefix="bot-bench-") as data_dir:
        command = [sys.executable, "-m", "entry.bench.memory", str(model), data_dir]
        command += [f"--stored={plan.p5_stored}", f"--waiting={plan.p5_waiting}", f"--turns={plan.p5_turns}"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the memory benchmark failed:\n{done.stderr[-2000:]}")
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    peak_gb, growth = seen["peak_bytes"] / GB, seen["end_bytes"] / seen["halfway_bytes"]
    return [
        Figure(
            "P5",
            f"resident memory: bundled model, {seen['stored']:,} stored conversations, "
            f"{seen['waiting']} messages at once",
            f"{peak_gb * 1024:.0f} MB peak",
            "-",
            None,
            f"≤ {P5_MEMORY_TARGET_GB * 1024:.0f} MB",
            peak_gb <= P5_MEMORY_TARGET_GB,
            note="the bot's process and any process it started, sampled every 50 ms.",
        ),
        Figure(
            "P5",
            f"memory after {seen['turns']:,} turns against halfway",
            f"{seen['end_bytes'] / GB * 1024:.0f} MB",
            f"{seen['halfway_bytes'] / GB * 1024:.0f} MB",
            growth,
            f"≤ {P5_GROWTH_TARGET:g}x",
            growth <= P5_GROWTH_TARGET,
            note=f"the KV cache holds BOT_KV_CACHE_TOKENS={seen['kv_cache_tokens']:,} tokens; each turn asks in "
            "another stored conversation, so the cache fills to that bound early and then evicts.",
        ),
    ]


async def run_bench(
    settings: Settings, plan: Plan, output: Path, *, phi3_shape: bool = False, engine_urls: Sequence[str] = ()
) -> Report:
    """Measure everything on the bundled model (and P6 when asked) and write the report to ``output``.

    P1 and P2 are also measured through a model server: ``engine_urls`` (each may be comma-separated), or
    else llama.cpp's server started on loopback with the same GGUF.
    """
    server_settings = settings
    # The in-process figures measure the bot's own engine, even where BOT_ENGINE_URL names servers.
    settings = settings.model_copy(update={"engine_url": []})
    model = await asyncio.to_thread(ensure_bundled_model, settings.models_dir)
    report = Report(model=model.stem, engine=settings.engine, mode=plan.name)
    seen = Measured()
    serving = await serving_figures(settings, model, plan, seen)
    remote = await remote_figures(server_settings, model, split_urls(engine_urls), seen, plan.p1_tokens, plan.p2_tokens)
    report.add(*beside(serving, remote, after="P2"))
    decode, variants = await p4_decode(
        lambda extra: load_bot_engine(settings, model, extra), model, plan.p4_tokens, plan.p4_rounds, plan.p4_variants
    )
    report.add(*decode)
    report.add(*await asyncio.to_thread(memory_figures, settings, model, plan))
    if variants:
        report.section("P4: OpenVINO properties tried (single stream, the bot's engine)", variants)
    report.write(output)  # P1-P5 are kept even if P6, which takes long, fails or is stopped
    if phi3_shape:
        report.add(*await p6_phi3_shape(settings, lambda path: serving_figures(settings, path, PHI3_SHAPE)))
        report.write(output)
    return report
