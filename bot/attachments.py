"""Files as context: text attachments are read (up to a size limit) into the message they came with.

Every platform hands the core the same ``Attachment`` (a name, what the platform says of its size
and type, and a way to read its first bytes); what is read, what is refused and what users are
told lives here, once.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from bot.attribution import clean_name, typed
from bot.types import Attachment

log = logging.getLogger(__name__)

DEFAULT_LIMIT_BYTES = 100_000
FILES_READ = 5
_SUFFIXES = (
    ".txt .md .markdown .rst .log .csv .tsv .json .jsonl .yaml .yml .toml .ini .cfg .conf .env .xml .html .htm .css"
    " .py .pyi .js .mjs .ts .tsx .jsx .java .kt .scala .go .rs .c .h .cc .cpp .hpp .cs .rb .php .pl .lua .r .swift"
    " .sh .bash .zsh .ps1 .bat .sql .graphql .proto .tex .diff .patch .gradle .properties .dockerfile"
)
TEXT_SUFFIXES = frozenset(_SUFFIXES.split(" "))
TEXT_NAMES = frozenset({"dockerfile", "makefile", "readme", "license", "changelog", ".gitignore"})
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-yaml", "application/yaml")

NOT_TEXT = "I can read text files only: {name} was not read."
NOT_UTF8 = "{name} is not UTF-8 text, so I did not read it."
TRIMMED = "{name} is longer than {limit:,} bytes: I read only its beginning."
TOO_MANY = "I read the first {count} files only."
UNREADABLE = "I could not download {name}: {error}"
CUT_MARK = "[… the rest of the file was not read: it is over the size limit]"


@dataclass
class FilesRead:
    """What the files add to the message, and what the user is told about them."""

    text: str = ""
    notices: list[str] = field(default_factory=list)

    @property
    def any_read(self) -> bool:
        """Whether at least one file's text was included."""
        return bool(self.text)


def is_text(attachment: Attachment) -> bool:
    """Whether the file looks like text by its name or its type (its bytes decide in the end)."""
    path = PurePosixPath(attachment.name.lower())
    if path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES:
        return True
    content_type = (attachment.content_type or "").lower()
    return content_type.startswith(_TEXT_TYPES)


async def read_files(attachments: Sequence[Attachment], limit_bytes: int = DEFAULT_LIMIT_BYTES) -> FilesRead:
    """Read the text files among ``attachments`` (each up to ``limit_bytes``) as blocks to add to the message."""
    read = FilesRead()
    for attachment in attachments[:FILES_READ]:
        block, notice = await _read_one(attachment, limit_bytes)
        read.text += block
        if notice:
            read.notices.append(notice)
    if len(attachments) > FILES_READ:
        read.notices.append(TOO_MANY.format(count=FILES_READ))
    return read


async def _read_one(attachment: Attachment, limit_bytes: int) -> tuple[str, str | None]:
    name = clean_name(attachment.name)
    if not is_text(attachment):
        return "", NOT_TEXT.format(name=name)
    try:
        data = await attachment.read(limit_bytes + 1)  # one byte more tells whether it goes on
    except Exception as error:  # a network or platform error: the message is answered without the file
        log.warning("Could not download an attachment (%s): %s", name, error)
        return "", UNREADABLE.format(name=name, error=error)
    cut = len(data) > limit_bytes or (attachment.size or 0) > limit_bytes
    content = _decoded(data[:limit_bytes], complete=not cut)
    if content is None:
        return "", NOT_UTF8.format(name=name)
    if cut:
        content = content.rstrip("\n") + "\n" + CUT_MARK
    notice = TRIMMED.format(name=name, limit=limit_bytes) if cut else None
    return file_block(name, content), notice


def _decoded(data: bytes, *, complete: bool) -> str | None:
    """UTF-8 text (a character cut at the limit is dropped), or ``None`` for anything else (binary included)."""
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(data, final=complete)
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def file_block(name: str, content: str) -> str:
    """A file's text as it follows the message: its name, then the text in a code block no content can close."""
    fence = "```"
    while fence in content:
        fence += "`"
    return f"\n\nFile {typed(name)}:\n{fence}\n{typed(content).rstrip(chr(10))}\n{fence}"
