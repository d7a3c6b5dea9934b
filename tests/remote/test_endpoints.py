"""Which server a conversation goes to: the ring on its own, then two real llama.cpp servers."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from entry.llama_server import LlamaServer, llama_server
from model.endpoints import Endpoint, EndpointRing, address
from model.openvino_engine import ChatTokenizer
from tests.remote.conftest import SHORT, Clock, connect

STORY = "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
URLS = [f"http://10.0.0.{n}:8000/v3" for n in range(1, 5)]


def ring_of(urls: list[str], clock: Clock, capacity: int = 1) -> EndpointRing[None]:
    return EndpointRing([Endpoint(url, None, asyncio.Semaphore(capacity)) for url in urls], retry_s=10.0, clock=clock)


def test_a_key_keeps_to_one_endpoint_and_keys_spread() -> None:
    ring = ring_of(URLS, Clock())
    firsts = {ring.order(f"conversation {n}")[0].url for n in range(40)}
    assert firsts == set(URLS)  # 40 conversations use every server
    again = ring_of(list(reversed(URLS)), Clock())  # another process, endpoints listed in another order
    assert [e.url for e in again.order("c")] == [e.url for e in ring.order("c")]


def test_a_failed_endpoint_is_skipped_until_retry_s_has_passed() -> None:
    clock = Clock()
    ring = ring_of(URLS, clock)
    sticky, second = ring.order("c")[:2]
    ring.mark_down(sticky)
    assert ring.pick("c") is second
    clock.now = 10.0
    assert ring.pick("c") is sticky
    for endpoint in ring.endpoints:
        clock.now += 1.0
        ring.mark_down(endpoint)
    # All failed lately: the one whose pause ends first is tried rather than none; none once each was tried.
    assert ring.pick("c") is ring.endpoints[0]
    assert ring.pick("c", exclude=ring.endpoints) is None
    assert ring.addresses() == ", ".join(f"10.0.0.{n}:8000" for n in range(1, 5))


async def test_a_full_endpoint_hands_the_request_to_the_next_free_one() -> None:
    ring = ring_of(URLS[:2], Clock())
    sticky, other = ring.order("c")
    await sticky.slots.acquire()
    assert ring.pick("c") is other
    await other.slots.acquire()
    assert ring.pick("c") is sticky  # all full: it waits for its own


def test_addresses_name_host_and_port_only() -> None:
    assert address("http://user:secret@ovms:8000/v3") == "ovms:8000"
    assert address("https://models.example.com/v1") == "models.example.com:443"


def completions(server: LlamaServer) -> int:
    return server.log_text().count("POST /v1/completions")


async def test_a_conversation_keeps_to_one_server_and_moves_when_it_dies(
    bundled_model: Path, chat_tokenizer: ChatTokenizer
) -> None:
    clock = Clock()
    async with llama_server(bundled_model) as first, llama_server(bundled_model) as second:
        engine = connect([first.url, second.url], chat_tokenizer, clock=clock, retry_s=30.0)
        key = next(f"c{n}" for n in range(100) if engine.ring.order(f"c{n}")[0].url == first.url)
        for _ in range(2):
            assert [chunk async for chunk in engine.stream(STORY, replace(SHORT, affinity=key))]
        assert (completions(first), completions(second)) == (2, 0)
        port = first.port
        first.kill()
        assert [chunk async for chunk in engine.stream(STORY, replace(SHORT, affinity=key))]
        assert completions(second) == 1
        async with llama_server(bundled_model, port=port) as back:
            assert [chunk async for chunk in engine.stream(STORY, replace(SHORT, affinity=key))]
            assert (completions(back), completions(second)) == (0, 2)  # still left out: retry_s has not passed
            clock.now += 30.0
            assert [chunk async for chunk in engine.stream(STORY, replace(SHORT, affinity=key))]
            assert (completions(back), completions(second)) == (1, 2)  # back on its own server
        await engine.aclose()
