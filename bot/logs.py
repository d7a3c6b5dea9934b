"""Logging set-up that keeps secrets out of every log line, as text or as JSON."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

from pydantic import SecretStr
from pythonjsonlogger.json import JsonFormatter

REDACTED = "[redacted]"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LogFormat = Literal["text", "json"]

# The JSON keys of the standard fields; every ``extra`` field of a record is added under its own name.
_JSON_FIELDS = "{asctime}{levelname}{name}{message}"
_JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger"}


class _Redactor:
    """Replaces every configured secret (4 characters or more) in a finished log line."""

    def __init__(self, secrets: Iterable[str], *, json_escaped: bool = False) -> None:
        found = {s for s in secrets if len(s) >= 4}
        if json_escaped:
            # A JSON line holds a secret as its escaped form; the raw form too, for secrets that need no escaping.
            found |= {json.dumps(s)[1:-1] for s in found}
        self._secrets = sorted(found, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


class RedactingFormatter(logging.Formatter):
    """Formats records, then replaces every configured secret with ``[redacted]``.

    Redacting the formatted text, not just the message, also covers tracebacks and
    exception messages that quote a token.
    """

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self._redact = _Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class RedactingJsonFormatter(JsonFormatter):
    """One JSON object per line (time, level, logger, message, any ``extra`` fields, exc_info), secrets redacted.

    Like the text formatter it redacts the finished line, so a secret in an extra field or
    a traceback is covered too.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__(_JSON_FIELDS, style="{", rename_fields=_JSON_NAMES)
        self._redact = _Redactor(secrets, json_escaped=True)

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """ISO 8601 in UTC with milliseconds, which log collectors parse without a format string."""
        return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")


# Libraries whose INFO lines repeat what the bot's own log says better.
QUIET_LIBRARIES = ("httpx", "httpx2", "openai")


def make_formatter(log_format: LogFormat, secrets: Iterable[str]) -> logging.Formatter:
    """The formatter for ``log_format`` ("text" or "json") that redacts ``secrets``."""
    if log_format == "json":
        return RedactingJsonFormatter(secrets)
    return RedactingFormatter(TEXT_FORMAT, secrets)


def configure_logging(level: str, secrets: Iterable[SecretStr], log_format: LogFormat = "text") -> None:
    """Log to stderr at ``level`` as text or JSON lines, redacting every given secret."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format, [s.get_secret_value() for s in secrets]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The HTTP clients under the model-server client log every request at INFO: one line per reply, no news.
    for chatty in QUIET_LIBRARIES:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
