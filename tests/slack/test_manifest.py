"""slack-manifest.yaml asks Slack for exactly what the adapter handles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no types

from adapters.slack.assistant import MAX_PROMPTS
from adapters.slack.catchup import ASK, SUMMARIZE
from adapters.slack.translate import COMMANDS

MANIFEST = Path(__file__).resolve().parents[2] / "slack-manifest.yaml"


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    return loaded


def test_every_slash_command_the_adapter_handles_is_declared(manifest: dict[str, Any]) -> None:
    declared = [command["command"] for command in manifest["features"]["slash_commands"]]
    assert sorted(declared) == sorted(COMMANDS)
    assert all(command["description"] for command in manifest["features"]["slash_commands"])


def test_events_cover_mentions_dms_and_channel_threads(manifest: dict[str, Any]) -> None:
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_mention", "message.im", "message.channels", "message.groups"} <= events


def test_each_event_has_the_scope_slack_requires(manifest: dict[str, Any]) -> None:
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    needed = {
        "app_mention": "app_mentions:read",
        "assistant_thread_started": "assistant:write",
        "assistant_thread_context_changed": "assistant:write",
        "message.channels": "channels:history",
        "message.groups": "groups:history",
        "message.im": "im:history",
        "message.mpim": "mpim:history",
    }
    for event in manifest["settings"]["event_subscriptions"]["bot_events"]:
        assert needed[event] in scopes
    assert {"chat:write", "commands"} <= scopes


def test_socket_mode_is_on_and_users_can_message_the_bot(manifest: dict[str, Any]) -> None:
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
    assert manifest["features"]["app_home"]["messages_tab_read_only_enabled"] is False


def test_the_assistant_view_is_declared_with_its_events_and_scopes(manifest: dict[str, Any]) -> None:
    view = manifest["features"]["assistant_view"]
    assert view["assistant_description"]
    assert 0 < len(view["suggested_prompts"]) <= MAX_PROMPTS
    assert all(prompt["title"] and prompt["message"] for prompt in view["suggested_prompts"])
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"assistant_thread_started", "assistant_thread_context_changed", "message.im"} <= events
    assert "assistant:write" in manifest["oauth_config"]["scopes"]["bot"]


def test_the_team_features_have_their_scopes(manifest: dict[str, Any]) -> None:
    # Names (users.info), threads read for catch-up (conversations.replies) and attached files.
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"users:read", "channels:history", "groups:history", "im:history", "mpim:history", "files:read"} <= scopes


def test_interactivity_is_on_for_the_message_shortcuts_and_feedback_buttons(manifest: dict[str, Any]) -> None:
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    shortcuts = {shortcut["callback_id"]: shortcut for shortcut in manifest["features"]["shortcuts"]}
    assert set(shortcuts) == {SUMMARIZE, ASK}
    assert shortcuts[SUMMARIZE]["name"] == "Summarize this thread"
    assert shortcuts[ASK]["name"] == "Ask about this"
    assert all(shortcut["type"] == "message" and shortcut["description"] for shortcut in shortcuts.values())
