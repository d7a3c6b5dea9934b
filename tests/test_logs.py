"""Secrets never reach a log line, tracebacks included."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from bot.logs import REDACTED, configure_logging

SECRET = "xapp-1-A0000-secret-value"


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    yield capsys
    logging.getLogger().handlers.clear()


def test_configured_secret_is_redacted_from_log_messages(logs: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", [SecretStr(SECRET)])  # here: stderr is only captured during the test itself
    logging.getLogger("any.module").info("connecting with token=%s", SECRET)
    logging.getLogger("other").warning(f"url wss://x/?token={SECRET}&v=1")
    err = logs.readouterr().err
    assert SECRET not in err
    assert err.count(REDACTED) == 2


def test_secret_in_an_exception_traceback_is_redacted(logs: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", [SecretStr(SECRET)])
    try:
        raise RuntimeError(f"server rejected token={SECRET}")
    except RuntimeError:
        logging.getLogger("adapters.x").exception("A platform failed")
    err = logs.readouterr().err
    assert "Traceback" in err and "server rejected token=" in err
    assert SECRET not in err
