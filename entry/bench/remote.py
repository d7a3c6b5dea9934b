"""P1 and P2 through a model server: the bot's remote engine beside its in-process engine, in the same run.

By default the bench starts llama.cpp's OpenAI-compatible server on loopback serving the same bundled GGUF
(the ``bench`` extra); ``bot bench --engine-url URL`` measures servers the user runs (OpenVINO Model Server)
instead.  The in-process side is the bot's engine's own P1 and P2 timings from earlier in the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bot.settings import Settings
from entry.bench.concurrency import OTHER_CONVERSATIONS, Measured, all_at_once, follow_up_ttft, tokens_per_s, warm_up
from entry.bench.report import Figure
from entry.bench.workload import QUESTIONS, Timed
from entry.compose import engine_loader
from entry.llama_server import LlamaServerError, llama_server, require_server_extra
from model.engine import Engine, EngineError, ModelLoadError

# Room for P2's long history (about 2,000 tokens) with its question and reply, so nothing is trimmed.
LLAMA_CONTEXT = 4096
NO_TARGET = "-"


@dataclass(frozen=True)
class Server:
    """The model servers measured: their API bases, a label for the report, and the tokenizer's model."""

    urls: list[str]
    label: str
    model_path: Path
    context_size: int | None  # None: the model's own


def split_urls(values: Sequence[str]) -> list[str]:
    """``--engine-url`` values, each possibly comma-separated, as one list of API bases."""
    return [url.strip() for value in values for url in value.split(",") if url.strip()]


def shown(url: str) -> str:
    """A server's address for the report, without any user or password written into the URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


async def remote_figures(
    settings: Settings, model: Path, urls: Sequence[str], seen: Measured, p1_tokens: int, p2_tokens: int
) -> list[Figure]:
    """P1 and P2 through the remote engine, as ratios to the in-process timings in ``seen``."""
    if urls:
        label = ", ".join(shown(url) for url in urls)
        if settings.model_path is None:  # the bundled model's template would reach a server of another model
            return _failed(seen, label, "set BOT_MODEL_PATH to the model the servers serve (its tokenizer renders)")
        server = Server(list(urls), label, settings.model_path or model, settings.context_size)
        return await _measured_or_failed(settings, server, seen, p1_tokens, p2_tokens)
    try:
        require_server_extra()
    except LlamaServerError:
        return _not_installed(seen)
    try:
        async with _llama(model) as server:
            return await _measured_or_failed(settings, server, seen, p1_tokens, p2_tokens)
    except LlamaServerError as error:
        return _failed(seen, "llama.cpp server", str(error))


@asynccontextmanager
async def _llama(model: Path) -> AsyncIterator[Server]:
    async with llama_server(model, n_ctx=LLAMA_CONTEXT) as running:
        yield Server([running.url], "llama.cpp server, same GGUF", model, LLAMA_CONTEXT)


async def _measured_or_failed(
    settings: Settings, server: Server, seen: Measured, p1_tokens: int, p2_tokens: int
) -> list[Figure]:
    # A server that is down or fails mid-run costs its rows, not the figures measured before it.
    try:
        return await _measure(settings, server, seen, p1_tokens, p2_tokens)
    except (EngineError, ModelLoadError) as error:
        return _failed(seen, server.label, str(error))


async def _measure(settings: Settings, server: Server, seen: Measured, p1_tokens: int, p2_tokens: int) -> list[Figure]:
    engine = await _load(settings, server)
    try:
        await warm_up(engine)
        p1 = await all_at_once(engine, p1_tokens, channel="remote-p1")
        _, p2 = await follow_up_ttft(engine, seen.history, p2_tokens)
    finally:
        await engine.aclose()
    return _figures(server.label, p1, p2, seen)


async def _load(settings: Settings, server: Server) -> Engine:
    # Loaded as the bot loads it (entry.compose.engine_loader), only with these servers and their context.
    served = settings.model_copy(update={"engine_url": list(server.urls), "context_size": server.context_size})
    engine: Engine = await asyncio.to_thread(engine_loader(served), server.model_path)
    return engine


def _figures(label: str, p1: list[Timed], p2: Timed, seen: Measured) -> list[Figure]:
    assert seen.p2 is not None, "the in-process P2 runs first"
    ours_rate, base_rate = tokens_per_s(p1), tokens_per_s(seen.p1)
    ours_last, base_last = max(r.ttft_s for r in p1), max(r.ttft_s for r in seen.p1)
    return [
        Figure(
            "P1 remote",
            f"{len(p1)} conversations at once: aggregate tokens/s, {label} vs in-process",
            f"{ours_rate:.0f} tok/s",
            f"{base_rate:.0f} tok/s (the bot's engine, in-process)",
            ours_rate / base_rate,
            NO_TARGET,
            None,
            note=f"the bot's remote engine (OpenAI-compatible completions, streamed) against {label}; "
            f"{sum(r.tokens for r in p1)} tokens. No target: it shows what serving through that server costs "
            "or gains on this machine.",
        ),
        Figure(
            "P1 remote",
            "the last asker's time to first token",
            f"{ours_last:.2f} s",
            f"{base_last:.2f} s (in-process)",
            base_last / ours_last,
            NO_TARGET,
            None,
        ),
        Figure(
            "P2 remote",
            f"follow-up after {OTHER_CONVERSATIONS} other conversations: time to first token, {label} vs in-process",
            f"{p2.ttft_s:.2f} s",
            f"{seen.p2.ttft_s:.2f} s (in-process, prefix cache)",
            seen.p2.ttft_s / p2.ttft_s,
            NO_TARGET,
            None,
        ),
    ]


def _unmeasured(seen: Measured, ours: str, note: str) -> list[Figure]:
    """The remote rows with the in-process baselines but nothing measured through a server."""
    p1_rate = f"{tokens_per_s(seen.p1):.0f} tok/s (the bot's engine, in-process)" if seen.p1 else "-"
    p2_ttft = f"{seen.p2.ttft_s:.2f} s (in-process, prefix cache)" if seen.p2 else "-"
    return [
        Figure("P1 remote", f"{len(QUESTIONS)} conversations at once through a model server: aggregate tokens/s",
               ours, p1_rate, None, NO_TARGET, None, note=note),
        Figure("P2 remote", f"follow-up after {OTHER_CONVERSATIONS} other conversations through a model server: "
               "time to first token", ours, p2_ttft, None, NO_TARGET, None),
    ]  # fmt: skip


def _not_installed(seen: Measured) -> list[Figure]:
    return _unmeasured(
        seen,
        "llama.cpp server not installed",
        "install the `bench` extra (`pip install -e '.[bench]'`) to measure through llama.cpp's server, "
        "or pass `--engine-url` to measure a server you run.",
    )


def _failed(seen: Measured, label: str, reason: str) -> list[Figure]:
    return _unmeasured(seen, f"failed ({label})", f"measuring through {label} failed: {reason}")
