"""Files as context: which attachments are read, how much of them, and what the user is told."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from bot.attachments import CUT_MARK, FILES_READ, NOT_TEXT, NOT_UTF8, TOO_MANY, TRIMMED, UNREADABLE, read_files
from bot.types import Attachment


def served(data: bytes) -> Callable[[int], Awaitable[bytes]]:
    """A file's bytes as a platform serves them: at most ``limit`` of them per read."""

    async def read(limit: int) -> bytes:
        return data[:limit]

    return read


def attachment(name: str, data: bytes, content_type: str | None = None) -> Attachment:
    return Attachment(name, len(data), content_type, served(data))


async def test_a_text_file_is_read_into_a_named_code_block() -> None:
    read = await read_files([attachment("app.log", b"ERROR disk full\nretrying\n")])
    assert read.notices == []
    assert read.text == "\n\nFile app.log:\n```\nERROR disk full\nretrying\n```"


async def test_a_file_known_by_its_type_only_is_read() -> None:
    read = await read_files([attachment("notes", b'{"a": 1}', "application/json; charset=utf-8")])
    assert '{"a": 1}' in read.text


async def test_a_file_over_the_limit_is_cut_with_a_notice() -> None:
    read = await read_files([attachment("big.txt", b"line\n" * 1000)], limit_bytes=50)
    assert read.notices == [TRIMMED.format(name="big.txt", limit=50)]
    assert read.text.count("line") == 10 and CUT_MARK in read.text


async def test_a_character_cut_at_the_limit_is_dropped_not_garbled() -> None:
    read = await read_files([attachment("é.md", "é".encode() * 10)], limit_bytes=5)
    assert "éé\n" in read.text and "\ufffd" not in read.text


@pytest.mark.parametrize(
    ("name", "data", "notice"),
    [
        ("photo.png", b"\x89PNG\r\n\x1a\n", NOT_TEXT),
        ("data.csv", b"\xff\xfe\x00a", NOT_UTF8),
        ("dump.txt", b"abc\x00def", NOT_UTF8),
    ],
)
async def test_files_that_are_not_text_are_refused_politely(name: str, data: bytes, notice: str) -> None:
    read = await read_files([attachment(name, data)])
    assert read.text == ""
    assert read.notices == [notice.format(name=name)]


async def test_a_fence_inside_the_file_cannot_close_its_block() -> None:
    read = await read_files([attachment("README.md", b"```python\nprint(1)\n```\n")])
    assert read.text.startswith("\n\nFile README.md:\n````\n") and read.text.endswith("\n````")


async def test_a_download_that_fails_is_told_and_the_others_still_read() -> None:
    async def broken(limit: int) -> bytes:
        raise ConnectionError("connection reset")

    files = [Attachment("a.txt", 3, None, broken), attachment("b.txt", b"bee")]
    read = await read_files(files)
    assert read.notices == [UNREADABLE.format(name="a.txt", error="connection reset")]
    assert "bee" in read.text


async def test_only_so_many_files_are_read() -> None:
    read = await read_files([attachment(f"{i}.txt", b"x") for i in range(FILES_READ + 2)])
    assert read.text.count("File ") == FILES_READ
    assert read.notices == [TOO_MANY.format(count=FILES_READ)]
