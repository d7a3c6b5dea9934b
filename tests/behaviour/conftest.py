"""What both behaviour suites share: every harness, each a running adapter over the core under test."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest

from bot.core import Core
from tests.behaviour.harness import Harness

HarnessFactory = Callable[[Core], AbstractAsyncContextManager[Harness]]
# adapter -> (module, factory); Discord's and Slack's need their extras.
HARNESSES = {
    "memory": ("tests.behaviour.local_harness", "memory_harness"),
    "console": ("tests.behaviour.local_harness", "console_harness"),
    "discord": ("tests.behaviour.discord_harness", "discord_harness"),
    "slack": ("tests.behaviour.slack_harness", "slack_harness"),
}


@pytest.fixture(params=list(HARNESSES))
def adapter(request: pytest.FixtureRequest) -> HarnessFactory:
    module_name, factory = HARNESSES[request.param]
    module = pytest.importorskip(module_name, reason=f"the {request.param} extra is not installed")
    return getattr(importlib.import_module(module.__name__), factory)  # type: ignore[no-any-return]
