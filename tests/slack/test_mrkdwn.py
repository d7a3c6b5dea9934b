"""Markdown to Slack mrkdwn: formatting is converted, nothing the model writes can notify anyone."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.slack.mrkdwn import escape, is_safe_link, to_mrkdwn
from adapters.slack.surfaces import render
from bot.streaming import split_message
from bot.surface import Kind

# After conversion a "<" may only open a link the renderer made itself.
_CONTROL = re.compile(r"<(?!(?:https?://|mailto:))")


def test_escape_replaces_the_three_control_characters() -> None:
    assert escape("a & b <c> d") == "a &amp; b &lt;c&gt; d"


@pytest.mark.parametrize("mention", ["<!channel>", "<!here>", "<!everyone>", "<@U012AB3CD>", "<#C123|general>"])
def test_mentions_written_by_the_model_never_notify(mention: str) -> None:
    converted = to_mrkdwn(f"Hello {mention} and **you**")
    assert mention not in converted
    assert escape(mention) in converted
    assert "*you*" in converted


@pytest.mark.parametrize("mention", ["<!channel>", "<@U012AB3CD>"])
def test_mentions_in_code_are_escaped_too(mention: str) -> None:
    converted = to_mrkdwn(f"Use `{mention}`:\n\n```\nsay('{mention}')\n```")
    assert mention not in converted
    assert f"`{escape(mention)}`" in converted
    assert f"```\nsay('{escape(mention)}')\n```" in converted


def test_entities_written_by_the_model_stay_literal() -> None:
    assert to_mrkdwn("&lt;!here&gt;") == "&lt;!here&gt;"


def test_markdown_formatting_becomes_mrkdwn() -> None:
    converted = to_mrkdwn("# Title\n\n**bold**, *italic*, ~~gone~~ and [docs](https://example.com/a?b=1&c=2)")
    assert converted.startswith("*Title*")
    assert "*bold*" in converted and "_italic_" in converted and "~gone~" in converted
    assert "<https://example.com/a?b=1&amp;c=2|docs>" in converted


@pytest.mark.parametrize("target", ["!here", "@U012AB3CD", "#C123", "javascript:alert(1)", "relative/path"])
def test_links_to_anything_but_the_web_or_mail_show_only_their_label(target: str) -> None:
    converted = to_mrkdwn(f"[click me]({target})")
    assert "click me" in converted
    assert "<" not in converted


def test_a_bar_in_a_link_target_cannot_forge_a_label() -> None:
    converted = to_mrkdwn("[x](https://example.com/a|<!channel>)")
    assert "<!channel>" not in converted
    assert not _CONTROL.search(converted)


def test_images_become_links_or_their_text() -> None:
    assert to_mrkdwn("![a chart](https://example.com/c.png)") == "<https://example.com/c.png|a chart>"
    assert to_mrkdwn("![a <!here> chart](c.png)") == "a &lt;!here&gt; chart"


def test_code_keeps_its_lines_and_characters() -> None:
    converted = to_mrkdwn("```python\nif a < b and c > d:\n    x = a & b\n```")
    assert converted == "```\nif a &lt; b and c &gt; d:\n    x = a &amp; b\n```"


def test_a_code_block_still_being_streamed_is_shown_closed() -> None:
    assert to_mrkdwn("Here:\n```\nprint(1)") == "Here:\n\n```\nprint(1)\n```"


def test_lists_and_line_breaks_survive() -> None:
    assert to_mrkdwn("- one\n- two\n\nend") == "•   one\n•   two\n\nend"


def test_text_with_nothing_visible_after_conversion_falls_back_to_the_escaped_source() -> None:
    assert to_mrkdwn("---") == "---"


@pytest.mark.parametrize(
    ("href", "safe"),
    [("https://example.com", True), ("mailto:a@b.c", True), ("http://", False), ("!here", False), ("ftp://x", False)],
)
def test_safe_links(href: str, safe: bool) -> None:
    assert is_safe_link(href) is safe


def test_code_blocks_stay_intact_across_split_messages() -> None:
    code = "\n".join(f"line_{i} = {i} < {i + 1}" for i in range(60))
    text = f"Intro.\n\n```python\n{code}\n```\n\nOutro <!channel>."
    parts = [to_mrkdwn(part) for part in split_message(text, 400)]
    assert len(parts) > 2
    for part in parts:
        assert part.count("```") % 2 == 0, part
        assert not _CONTROL.search(part)
    joined = "\n".join(parts)
    for i in range(60):
        assert f"line_{i} = {i} &lt; {i + 1}" in joined


@given(st.text(alphabet=st.sampled_from(list("<>&!@#|*_`~[]()/: \nabcUCH123.-")), max_size=200))
def test_no_control_sequence_survives_any_input(text: str) -> None:
    converted = to_mrkdwn(text)
    assert not _CONTROL.search(converted), converted
    assert not re.search(r"<[!@#]", converted)


@pytest.mark.parametrize("kind", list(Kind))
def test_no_kind_of_text_the_core_sends_can_ping(kind: Kind) -> None:
    shown = render("<!channel> <@U1> a & b", kind)
    assert "<" not in shown and "&lt;!channel&gt;" in shown
    if kind is Kind.NOTICE:
        assert shown.startswith("_") and shown.endswith("_")
