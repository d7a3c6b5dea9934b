"""Run a suite of the core's behaviour tests with the remote engine, through the in-memory adapter.

A module adopts every test and fixture of a suite (so a test added there runs here too) and these two fixtures:
``engine`` is the remote engine over the session's llama.cpp server, and ``adapter`` the in-memory one alone (the
adapters do not see which engine answers, and each of them runs the suites on the in-process engine already).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from model.remote_engine import RemoteEngine
from tests.behaviour.conftest import HarnessFactory
from tests.behaviour.local_harness import memory_harness


def adopt(suite: ModuleType, namespace: dict[str, Any]) -> None:
    """Put ``suite``'s own tests and fixtures into ``namespace`` (a test module's globals), which pytest collects."""
    namespace.update(
        {
            name: item
            for name, item in vars(suite).items()
            if getattr(item, "__module__", None) == suite.__name__ and name not in ("engine", "adapter")
        }
    )


@pytest.fixture
def engine(remote_engine: RemoteEngine) -> RemoteEngine:
    """The remote engine in place of the in-process one."""
    return remote_engine


@pytest.fixture
def adapter() -> HarnessFactory:
    """The in-memory adapter only."""
    return memory_harness
