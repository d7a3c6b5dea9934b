"""Phi-3's prompt format, byte-identical to the chat template of Phi-3-mini-4k-instruct.

The template is the one in the checkpoint's ``tokenizer_config.json``; the tests
compare against that Jinja template.  The control tokens listed here are the ones
the format uses, so the core can keep user text from forging them.
"""

from __future__ import annotations

from collections.abc import Sequence

from model.engine import ChatMessage

PHI3_ROLE_TAGS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
PHI3_END = "<|end|>"
PHI3_CONTROL_TOKENS = frozenset(
    {"<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>", "<s>", "</s>", "<unk>"}
)


def render_phi3(messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
    """Render ``messages`` exactly as Phi-3-mini-4k-instruct's chat template does."""
    parts = [f"{PHI3_ROLE_TAGS[m.role]}\n{m.content}{PHI3_END}\n" for m in messages]
    parts.append("<|assistant|>\n" if add_generation_prompt else "<|endoftext|>")
    return "".join(parts)
