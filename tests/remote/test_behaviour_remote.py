"""The core's whole behaviour suite with the remote engine, through the in-memory adapter.

The suite's own test functions and fixtures, imported as they are; only two fixtures change: ``engine`` is the
remote engine over the session's llama.cpp server, and ``adapter`` is the in-memory one alone (the adapters do
not see which engine answers, and each of them runs the suite on the in-process engine already).
"""

from __future__ import annotations

import pytest

from model.remote_engine import RemoteEngine
from tests.behaviour.conftest import HarnessFactory
from tests.behaviour.local_harness import memory_harness
from tests.behaviour.test_behaviour import (  # noqa: F401  (pytest collects what is imported here)
    actions,
    harness,
    test_a_mention_alone_gets_the_help,
    test_a_mention_is_answered,
    test_a_persona_is_set_by_admins_and_shapes_the_next_answer,
    test_a_reply_failing_mid_stream_is_explained,
    test_a_reply_waiting_for_the_one_slot_ends_as_one_complete_reply,
    test_a_stop_lets_the_reply_being_written_finish,
    test_a_typed_export_is_a_command_not_chat,
    test_chatter_is_ignored,
    test_export_by_a_member_is_refused_and_audited,
    test_export_by_an_admin_runs_with_progress,
    test_reset_forgets_and_the_next_answer_starts_fresh,
    test_stats_name_the_model_and_its_speed,
    test_the_platforms_own_commands_share_one_conversation,
)


@pytest.fixture
def engine(remote_engine: RemoteEngine) -> RemoteEngine:
    """The remote engine in place of the in-process one."""
    return remote_engine


@pytest.fixture
def adapter() -> HarnessFactory:
    """The in-memory adapter only."""
    return memory_harness
