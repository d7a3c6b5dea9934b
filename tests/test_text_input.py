"""Incoming messages are cleaned once in the core: the author's name and a handed-over discussion too."""

from __future__ import annotations

from bot.text_input import clean_incoming
from bot.types import ConversationKey, Identity, Incoming, Said

KEY = ConversationKey("memory", "general")


def test_names_and_a_discussion_are_cleaned_like_the_text() -> None:
    message = Incoming(
        KEY,
        Identity("memory", "u1", name="Al\x00ice\ud800"),
        "hi\r\n",
        context=(Said("B\x07ob", "line\r\nnext\ud83d"),),
    )
    cleaned = clean_incoming(message)
    assert cleaned.author.name == "Alice\ufffd" and cleaned.author == message.author
    assert cleaned.context == (Said("Bob", "line\nnext\ufffd"),)
    assert cleaned.text == "hi\n"


def test_a_clean_message_is_the_same_object() -> None:
    message = Incoming(KEY, Identity("memory", "u1", name="Alice"), "hi", context=(Said("Bob", "ok"),))
    assert clean_incoming(message) is message
