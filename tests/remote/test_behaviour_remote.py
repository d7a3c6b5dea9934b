"""The core's behaviour suite (tests/behaviour/test_behaviour.py) with the remote engine."""

from __future__ import annotations

import tests.behaviour.test_behaviour as suite
from tests.remote.suites import adapter, adopt, engine  # noqa: F401  (pytest collects the fixtures here)

adopt(suite, globals())
