"""Rendering a conversation into the prompt text a model was trained on.

Phi-3 prompts are rendered here, byte-identical to the chat template shipped in
Phi-3-mini-4k-instruct's ``tokenizer_config.json`` (the tests compare against that
Jinja template).  Other model families use the model's own template through the
engine.  Before rendering, text that did not come from the operator is defused so
that it can never turn into a chat-control token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

from bot.types import ChatMessage

# Inserted after the '<' of a control-token look-alike: invisible when displayed,
# but the tokenizer no longer matches the special token.
WORD_JOINER = "\u2060"

PHI3_ROLE_TAGS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
PHI3_END = "<|end|>"
PHI3_CONTROL_TOKENS = frozenset(
    {"<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>", "<s>", "</s>", "<unk>"}
)

Renderer = Callable[[Sequence[ChatMessage]], str]


def render_phi3(messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
    """Render ``messages`` exactly as Phi-3-mini-4k-instruct's chat template does."""
    parts = [f"{PHI3_ROLE_TAGS[m.role]}\n{m.content}{PHI3_END}\n" for m in messages]
    parts.append("<|assistant|>\n" if add_generation_prompt else "<|endoftext|>")
    return "".join(parts)


class ControlTokenGuard:
    """Defuses every control-token string a tokenizer would match in raw text."""

    def __init__(self, control_tokens: Iterable[str]) -> None:
        tokens = sorted({t for t in control_tokens if len(t) > 1}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(t) for t in tokens)) if tokens else None

    def defuse(self, text: str) -> str:
        """``text`` with each control-token look-alike broken by an invisible joiner."""
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda match: match[0][0] + WORD_JOINER + match[0][1:], text)

    def defuse_messages(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        """Defuse all turns except the operator's system prompt."""
        return [m if m.role == "system" else ChatMessage(m.role, self.defuse(m.content)) for m in messages]


@lru_cache(maxsize=8)
def guard_for(control_tokens: frozenset[str]) -> ControlTokenGuard:
    """The guard for one model's control tokens, built once rather than for every reply."""
    return ControlTokenGuard(control_tokens)
