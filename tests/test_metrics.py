"""The Prometheus series the bot exposes, and the KV cache reading behind one of them."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import Metrics
from model.engine import ChatMessage, GenerationParams, kv_cache_use
from model.loader import load_process_engine
from model.openvino_engine import OpenVINOEngine
from model.process_engine import ProcessEngine
from model.slot import EngineSlot

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: Metrics) -> Samples:
    """Every sample of a render, by name and labels, parsed the way Prometheus parses it."""
    body, content_type = metrics.render()
    assert content_type == CONTENT_TYPE_LATEST
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_messages_are_counted_by_platform_and_outcome() -> None:
    metrics = Metrics()
    metrics.message("slack", "answered")
    metrics.message("slack", "answered")
    metrics.message("discord", "busy")
    metrics.message("discord", "interrupted")
    samples = scrape(metrics)
    assert value(samples, "bot_messages_total", platform="slack", outcome="answered") == 2
    assert value(samples, "bot_messages_total", platform="discord", outcome="busy") == 1
    assert value(samples, "bot_messages_total", platform="discord", outcome="interrupted") == 1
    assert ("bot_messages_total", frozenset({"platform": "slack", "outcome": "busy"}.items())) not in samples


def test_reply_timings_fill_histograms_and_token_counters() -> None:
    metrics = Metrics()
    metrics.reply_timing("slack", first_token_s=0.3, per_token_s=0.04, tokens_in=120, tokens_out=30)
    metrics.reply_timing("slack", first_token_s=7.0, per_token_s=None, tokens_in=80, tokens_out=1)
    metrics.reply_timing("slack", first_token_s=None, per_token_s=None, tokens_in=50, tokens_out=0)  # failed early
    samples = scrape(metrics)
    assert value(samples, "bot_first_token_seconds_count", platform="slack") == 2
    assert value(samples, "bot_first_token_seconds_sum", platform="slack") == pytest.approx(7.3)
    assert value(samples, "bot_first_token_seconds_bucket", platform="slack", le="0.5") == 1
    assert value(samples, "bot_first_token_seconds_bucket", platform="slack", le="10.0") == 2
    assert value(samples, "bot_time_per_token_seconds_count", platform="slack") == 1
    assert value(samples, "bot_time_per_token_seconds_bucket", platform="slack", le="0.05") == 1
    assert value(samples, "bot_tokens_in_total", platform="slack") == 250
    assert value(samples, "bot_tokens_out_total", platform="slack") == 31


def test_tracked_gauges_are_read_at_scrape_time() -> None:
    metrics = Metrics()
    state = {"waiting": 3.0, "generating": 2.0, "kv": 0.25}
    metrics.track(
        waiting=lambda: state["waiting"], generating=lambda: state["generating"], kv_cache_use=lambda: state["kv"]
    )
    first = scrape(metrics)
    state.update(waiting=0.0, generating=1.0, kv=0.5)
    second = scrape(metrics)
    assert (value(first, "bot_replies_waiting"), value(first, "bot_replies_generating")) == (3, 2)
    assert value(first, "bot_kv_cache_usage_ratio") == 0.25
    assert (value(second, "bot_replies_waiting"), value(second, "bot_replies_generating")) == (0, 1)
    assert value(second, "bot_kv_cache_usage_ratio") == 0.5


def test_an_unknown_or_failing_kv_cache_reading_shows_as_nan_and_the_scrape_still_works() -> None:
    metrics = Metrics()
    assert math.isnan(value(scrape(metrics), "bot_kv_cache_usage_ratio"))  # nothing tracked yet

    def broken() -> float:
        raise RuntimeError("the engine went away")

    metrics.track(waiting=lambda: 0, generating=lambda: 0, kv_cache_use=lambda: None)
    assert math.isnan(value(scrape(metrics), "bot_kv_cache_usage_ratio"))
    metrics.track(waiting=lambda: 1, generating=lambda: 0, kv_cache_use=broken)
    samples = scrape(metrics)
    assert math.isnan(value(samples, "bot_kv_cache_usage_ratio"))
    assert value(samples, "bot_replies_waiting") == 1


def test_the_model_in_use_is_one_label_set_at_a_time() -> None:
    metrics = Metrics()
    metrics.model("qwen-tiny")
    metrics.model("Phi-3-mini-int4")
    models = {labels for (name, labels) in scrape(metrics) if name == "bot_model_info"}
    assert models == {frozenset({"name": "Phi-3-mini-int4"}.items())}


def test_export_runs_are_counted_by_outcome() -> None:
    metrics = Metrics()
    metrics.export_run("succeeded")
    metrics.export_run("failed")
    metrics.export_run("failed")
    samples = scrape(metrics)
    assert value(samples, "bot_exports_total", outcome="succeeded") == 1
    assert value(samples, "bot_exports_total", outcome="failed") == 2


def test_every_series_is_prefixed_and_two_instances_share_nothing() -> None:
    first, second = Metrics(), Metrics()
    first.message("slack", "failed")
    names = {name for name, _ in scrape(first)}
    assert names and all(name.startswith("bot_") for name in names), names
    assert not any(name == "bot_messages_total" for name, _ in scrape(second))


# --- the KV cache reading, on the real bundled model ---


@pytest.fixture(scope="module")
async def process_engine(bundled_model: Path) -> AsyncIterator[ProcessEngine]:
    engine = await asyncio.to_thread(load_process_engine, bundled_model, "CPU", {"NUM_STREAMS": "1"})
    yield engine
    await engine.aclose()


async def one_reply(engine: ProcessEngine | OpenVINOEngine) -> None:
    prompt = engine.apply_chat_template([ChatMessage("user", "Tell me about the sea.")])
    async for _ in engine.stream(prompt, GenerationParams(max_new_tokens=16)):
        pass


@pytest.mark.model
async def test_kv_cache_use_of_the_process_engine_is_a_share_after_a_reply(process_engine: ProcessEngine) -> None:
    await one_reply(process_engine)
    used = kv_cache_use(process_engine)
    assert used is not None and 0 < used <= 1, used
    metrics = Metrics()
    metrics.track(waiting=lambda: 0, generating=lambda: 0, kv_cache_use=lambda: EngineSlot(process_engine).kv_cache_use)
    assert value(scrape(metrics), "bot_kv_cache_usage_ratio") == pytest.approx(used)


@pytest.mark.model
async def test_the_pipeline_engine_has_no_kv_cache_reading(engine: OpenVINOEngine) -> None:
    await one_reply(engine)
    assert kv_cache_use(engine) is None
    assert EngineSlot(engine).kv_cache_use is None
