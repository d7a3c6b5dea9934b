"""Secrets never reach a log line."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from bot.logs import REDACTED, configure_logging

SECRET = "xapp-1-A0000-secret-value"


def test_configured_secret_is_redacted_from_log_output(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", [SecretStr(SECRET)])
    logging.getLogger("any.module").info("connecting with token=%s", SECRET)
    logging.getLogger("other").warning(f"url wss://x/?token={SECRET}&v=1")
    err = capsys.readouterr().err
    assert SECRET not in err
    assert err.count(REDACTED) == 2
    logging.getLogger().handlers.clear()
