"""Logging set-up that keeps secrets out of every log line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

from pydantic import SecretStr

REDACTED = "[redacted]"


class RedactingFormatter(logging.Formatter):
    """Formats records, then replaces every configured secret with ``[redacted]``.

    Redacting the formatted text, not just the message, also covers tracebacks and
    exception messages that quote a token.
    """

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


def configure_logging(level: str, secrets: Iterable[SecretStr]) -> None:
    """Log to stderr at ``level``, redacting every given secret."""
    handler = logging.StreamHandler(sys.stderr)
    values = [s.get_secret_value() for s in secrets]
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", values))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
