"""Incoming text made safe to store, tokenize and log, once in the core for every adapter.

Chat platforms pass on whatever a client sends: NUL bytes and other control characters,
and (through JSON's ``\\ud800`` escapes) lone UTF-16 surrogates.  A lone surrogate cannot
be encoded as UTF-8, so SQLite, the tokenizer and a log handler would each raise on it;
NUL bytes truncate C strings.  Everything else (RTL text, emoji, combining marks,
zero-width joiners) is the user's text and passes unchanged.
"""

from __future__ import annotations

import dataclasses
import re

from bot.types import Incoming, Said

# C0 controls except tab, newline and carriage return, DEL, and the C1 controls: no user means them.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    """``text`` with surrogate pairs joined, lone surrogates as U+FFFD, control characters dropped, CRLF as LF."""
    # UTF-16 round trip: a valid pair becomes its character, a lone half the replacement character.
    joined = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return _CONTROL.sub("", joined).replace("\r\n", "\n").replace("\r", "\n")


def clean_incoming(message: Incoming) -> Incoming:
    """``message`` with its text, command, author's name and the discussion it hands over cleaned.

    The same object when nothing changed.
    """
    text = clean_text(message.text)
    command = None if message.command is None else clean_text(message.command)
    author = dataclasses.replace(message.author, name=clean_text(message.author.name))
    context = tuple(Said(clean_text(said.author), clean_text(said.text)) for said in message.context)
    if (text, command, author.name, context) == (message.text, message.command, message.author.name, message.context):
        return message
    return dataclasses.replace(message, text=text, command=command, author=author, context=context)
