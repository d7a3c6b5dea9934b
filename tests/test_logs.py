"""Secrets never reach a log line, tracebacks included."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime

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


# --- JSON lines (BOT_LOG_FORMAT=json) ---

REPLY_FIELDS = {
    "conversation": "slack:T1:C1",
    "platform": "slack",
    "outcome": "answered",
    "latency_s": 2.5,
    "first_token_s": 0.4,
    "tokens_in": 120,
    "tokens_out": 37,
}


def json_lines(err: str) -> list[dict[str, object]]:
    lines = err.strip().splitlines()
    assert lines
    return [json.loads(line) for line in lines]  # every line is one whole JSON object


def test_json_lines_carry_the_standard_fields_and_every_extra(logs: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", [SecretStr(SECRET)], "json")
    logging.getLogger("bot.replies").info("reply", extra=REPLY_FIELDS)
    [line] = json_lines(logs.readouterr().err)
    assert {key: line[key] for key in ("level", "logger", "message")} == {
        "level": "INFO",
        "logger": "bot.replies",
        "message": "reply",
    }
    assert datetime.fromisoformat(str(line["time"])).tzinfo is not None
    assert {key: line[key] for key in REPLY_FIELDS} == REPLY_FIELDS


def test_json_lines_redact_secrets_in_the_message_the_extras_and_the_traceback(
    logs: pytest.CaptureFixture[str],
) -> None:
    quoted = 'sk-"quoted\\secret'  # JSON escapes it: the escaped form must be redacted too
    configure_logging("DEBUG", [SecretStr(SECRET), SecretStr(quoted)], "json")
    log = logging.getLogger("adapters.x")
    log.debug("token=%s", SECRET, extra={"header": f"Bearer {SECRET}", "other": quoted})
    try:
        raise RuntimeError(f"server rejected token={SECRET}")
    except RuntimeError:
        log.exception("A platform failed")
    err = logs.readouterr().err
    first, second = json_lines(err)
    assert SECRET not in err and "quoted" not in err
    assert (first["message"], first["header"], first["other"]) == (f"token={REDACTED}", f"Bearer {REDACTED}", REDACTED)
    assert "Traceback" in str(second["exc_info"]) and f"token={REDACTED}" in str(second["exc_info"])


def test_text_stays_the_default_format(logs: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", [])
    logging.getLogger("bot.replies").info("reply", extra=REPLY_FIELDS)
    line = logs.readouterr().err.strip()
    assert line.endswith(" INFO bot.replies: reply") and not line.startswith("{")
