"""Markdown from the model to Slack mrkdwn, with every control character escaped.

The conversion is slackify-markdown's (a markdown-it renderer).  Its own escaping keeps
``<!channel>``, ``<!here>`` and ``<@U…>`` intact on purpose, which would let the model
notify a whole channel, and it leaves code untouched; the renderer below escapes ``&``,
``<`` and ``>`` everywhere and only lets safe links through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from markdown_it.token import Token
from slackify_markdown.slackify import SlackifyMarkdown  # type: ignore[import-untyped]  # ships no types

# Link targets Slack shows as links; anything else (``!here``, ``@U1``, relative paths) is text.
SAFE_SCHEMES = frozenset({"http", "https", "mailto"})

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def escape(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` so Slack shows them literally and never parses a mention."""
    return text.translate(_ESCAPES)


def to_mrkdwn(markdown: str) -> str:
    """Convert Markdown to Slack mrkdwn; the result never contains a Slack control sequence.

    Falls back to the escaped source when the conversion leaves nothing visible
    (for example a lone thematic break), so a message is never blank.
    """
    converted = _EscapingRenderer(markdown).slackify().strip()
    return converted if converted else escape(markdown).strip()


def is_safe_link(href: str) -> bool:
    """Whether ``href`` is an absolute link Slack should render as a link."""
    parsed = urlparse(href)
    if parsed.scheme.lower() not in SAFE_SCHEMES:
        return False
    return parsed.scheme.lower() == "mailto" or bool(parsed.netloc)


def _link_target(href: str) -> str:
    # Inside <target|label> a "|" or ">" would end the target early.
    return escape(href).replace("|", "%7C")


class _EscapingRenderer(SlackifyMarkdown):  # type: ignore[misc]  # untyped base class
    """slackify-markdown's renderer with strict escaping of text, code and link targets."""

    def __init__(self, markdown_text: str) -> None:
        super().__init__(markdown_text)
        # One entry per open link: whether it was rendered as a Slack link.
        self._links: list[bool] = []

    def text(self, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        return escape(tokens[idx].content)

    def code_inline(self, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        return f"`{escape(tokens[idx].content)}`"

    def fence(self, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        # Slack shows entities inside code blocks decoded, so escaping keeps the code as written.
        code = escape(tokens[idx].content)
        if not code.endswith("\n"):  # a block still being streamed has no closing line yet
            code += "\n"
        return f"```\n{code}```\n"

    def code_block(self, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        return self.fence(tokens, idx, options, env)

    def link_open(self, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        href = str(tokens[idx].attrs.get("href", ""))
        safe = is_safe_link(href)
        self._links.append(safe)
        if not safe:
            return ""
        label_follows = idx + 1 < len(tokens) and tokens[idx + 1].nesting != -1
        return f"<{_link_target(href)}|" if label_follows else f"<{_link_target(href)}"

    def link_close(self, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        safe = self._links.pop() if self._links else False
        return ">" if safe else ""

    def image(self, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        token = tokens[idx]
        label = escape(token.content or str(token.attrs.get("title", "") or ""))
        src = str(token.attrs.get("src", ""))
        if not is_safe_link(src):
            return label
        return f"<{_link_target(src)}|{label}>" if label else f"<{_link_target(src)}>"
