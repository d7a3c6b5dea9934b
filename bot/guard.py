"""Keeping chat text from forging a model's control tokens.

Before a prompt is rendered, text that did not come from the operator is defused so
that it can never turn into a chat-control token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from model.engine import ChatMessage

# Inserted after the '<' of a control-token look-alike: invisible when displayed,
# but the tokenizer no longer matches the special token.
WORD_JOINER = "\u2060"


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
