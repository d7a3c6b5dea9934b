"""Neutral types shared by the core, the model engine and every adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ConversationKey:
    """Identifies one conversation: a platform, a channel and optionally a thread in it."""

    platform: str
    channel: str
    thread: str | None = None

    def __str__(self) -> str:
        suffix = f"/{self.thread}" if self.thread else ""
        return f"{self.platform}:{self.channel}{suffix}"


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation as the model sees it."""

    role: Role
    content: str


@dataclass(frozen=True)
class ReplyStats:
    """Measurements of one generated reply."""

    model_name: str
    prompt_tokens: int
    generated_tokens: int
    ttft_s: float
    tpot_s: float

    @property
    def tokens_per_s(self) -> float:
        """Decoding speed after the first token (0 when too few tokens were generated)."""
        return 1.0 / self.tpot_s if self.tpot_s > 0 else 0.0
