"""Who said what: user turns of a conversation with several people, named in a form only the bot writes.

Each named turn starts with ``⟦Name⟧``.  The brackets are rare characters the bot removes from
everything people write (their text and their names), so no message can pass itself off as
another person's; a name also loses line breaks and control characters, and the control-token
guard then runs over the whole turn, name included, so a name can never open a role or end a turn.
Platform ids never appear: adapters hand over display names only.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from bot.types import Said
from model.engine import ChatMessage

OPEN, CLOSE = "\u27e6", "\u27e7"  # ⟦ ⟧
# What a bracket typed by a person becomes: it still reads as a bracket, but no longer as the bot's form.
_TYPED = str.maketrans({OPEN: "[", CLOSE: "]"})
NAME_LIMIT = 64
UNKNOWN = "someone"
_SPACES = re.compile(r"\s+")

# A typed request for a catch-up: "summarize", "summarise this thread", "tl;dr" ... (after the mention is removed).
_SUMMARY_REQUEST = re.compile(
    r"^\s*(?:please\s+)?(?:summari[sz]e|sum\s+up|tl;?dr|catch\s+me\s+up)(?:\s+(?:this|the))?"
    r"(?:\s+(?:thread|discussion|conversation|channel))?\s*(?:please)?\s*[.!?]*\s*$",
    re.IGNORECASE,
)
SUMMARY_QUESTION = "Summarize the discussion above: the main points, what was decided, and what is still open."


def clean_name(name: str) -> str:
    """A display name as the model reads it: one line, printable, without the bot's brackets, not too long."""
    printable = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in name.translate(_TYPED))
    flat = _SPACES.sub(" ", printable).strip()
    return flat[:NAME_LIMIT].rstrip() or UNKNOWN


def typed(text: str) -> str:
    """What a person wrote, with the bot's own brackets turned into plain ones."""
    return text.translate(_TYPED)


def named(name: str, text: str) -> str:
    """``text`` written by ``name``, in the form only the bot writes."""
    return f"{OPEN}{clean_name(name)}{CLOSE} {typed(text)}"


def _who(turn: ChatMessage) -> str | None:
    """Which person wrote a user turn: their id where it is known, else their name; ``None``: unnamed."""
    if turn.role != "user" or not turn.name:
        return None
    return turn.speaker or f"name:{clean_name(turn.name)}"


def labels(turns: Sequence[ChatMessage]) -> dict[str, str]:
    """The name each person who wrote ``turns`` is shown by, keyed as ``_who`` keys them.

    Two people of the same name (two Alexes, or a member who renamed themselves after someone) are
    told apart: the second to speak is "Alex (2)", the third "Alex (3)".
    """
    shown: dict[str, str] = {}
    holders: dict[str, int] = {}
    for turn in turns:
        who = _who(turn)
        if who is None or who in shown:
            continue
        name = clean_name(turn.name or UNKNOWN)
        holders[name] = holders.get(name, 0) + 1
        shown[who] = name if holders[name] == 1 else f"{name} ({holders[name]})"
    return shown


def attribute(turns: Sequence[ChatMessage]) -> list[ChatMessage]:
    """The turns as the model reads them: every user turn named when more than one person wrote them.

    A conversation with one person (a DM, or a channel where one person talks to the bot) stays unnamed;
    the bot's brackets are taken out of what people typed all the same, so nobody can write a name in.
    """
    people = labels(turns)
    if len(people) < 2:
        return [ChatMessage("user", typed(t.content), t.name, t.speaker) if t.role == "user" else t for t in turns]
    return [
        ChatMessage("user", named(people.get(_who(turn) or "", UNKNOWN), turn.content)) if turn.role == "user" else turn
        for turn in turns
    ]


def transcript(said: Sequence[Said]) -> list[ChatMessage]:
    """A discussion to catch up on as user turns, one per message, each named (the trimmer drops the oldest)."""
    return [ChatMessage("user", named(message.author, message.text)) for message in said if message.text.strip()]


def with_files(text: str, file_names: Sequence[str]) -> str:
    """A discussion message's text with the names of the files it shared (their contents are not read)."""
    if not file_names:
        return text
    return f"{text}\n[shared files: {', '.join(file_names)}]".strip()


def is_summary_request(text: str) -> bool:
    """Whether a message typed to the bot asks it to summarize the thread it is in."""
    return bool(_SUMMARY_REQUEST.match(text))
