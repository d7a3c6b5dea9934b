"""The stand-in's assistant and chat streaming Web API methods, and the events and clicks of an assistant thread.

``AssistantApi(standin)`` registers ``assistant.threads.setStatus`` / ``setTitle`` /
``setSuggestedPrompts`` and ``chat.startStream`` / ``appendStream`` / ``stopStream`` into
``SlackStandIn.methods``.  A streamed message shows up in the stand-in's ``messages`` and
``timeline`` like a posted one, with every text it had (each append adds one).
``refuse`` makes the next calls of one of them answer with one of Slack's errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.slack.standin import APP_ID, BOT_ID, BOT_USER_ID, CLOSED_CHANNEL, TEAM_ID, Posted, SlackStandIn

# Slack shows at most this many suggested prompts and refuses more.
MAX_PROMPTS = 4


@dataclass
class AssistantApi:
    """What the assistant methods were told, and how ``chat.startStream`` answers (``refusal``: an error)."""

    standin: SlackStandIn
    refusal: str | None = None
    statuses: list[tuple[str, str, str]] = field(default_factory=list)  # (channel, thread_ts, status)
    titles: dict[tuple[str, str], str] = field(default_factory=dict)
    prompts: dict[tuple[str, str], list[dict[str, str]]] = field(default_factory=dict)
    streaming: set[str] = field(default_factory=set)  # the ts of streams not stopped yet
    final_blocks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by ts, from chat.stopStream
    refusals: dict[str, list[str]] = field(default_factory=dict)  # by method, the errors its next calls answer

    def __post_init__(self) -> None:
        methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "assistant.threads.setStatus": self._set_status,
            "assistant.threads.setTitle": self._set_title,
            "assistant.threads.setSuggestedPrompts": self._set_prompts,
            "chat.startStream": self._start,
            "chat.appendStream": self._append,
            "chat.stopStream": self._stop,
        }
        self.standin.methods.update({name: self._refusing(name, method) for name, method in methods.items()})

    def refuse(self, method: str, error: str, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with ``{"ok": false, "error": error}``, carrying none out."""
        self.refusals.setdefault(method, []).extend([error] * times)

    def _refusing(
        self, name: str, method: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def answer(params: dict[str, Any]) -> dict[str, Any]:
            waiting = self.refusals.get(name)
            return {"ok": False, "error": waiting.pop(0)} if waiting else method(params)

        return answer

    def _set_status(self, params: dict[str, Any]) -> dict[str, Any]:
        thread = _thread(params)
        if thread is None:
            return {"ok": False, "error": "invalid_arguments"}
        self.statuses.append((*thread, str(params.get("status") or "")))
        return {"ok": True}

    def _set_title(self, params: dict[str, Any]) -> dict[str, Any]:
        thread, title = _thread(params), str(params.get("title") or "")
        if thread is None or not title:
            return {"ok": False, "error": "invalid_arguments"}
        self.titles[thread] = title
        return {"ok": True}

    def _set_prompts(self, params: dict[str, Any]) -> dict[str, Any]:
        thread, prompts = _thread(params), params.get("prompts")
        if thread is None or not isinstance(prompts, list) or not 0 < len(prompts) <= MAX_PROMPTS:
            return {"ok": False, "error": "invalid_arguments"}
        if not all(prompt.get("title") and prompt.get("message") for prompt in prompts):
            return {"ok": False, "error": "invalid_arguments"}
        self.prompts[thread] = prompts
        return {"ok": True}

    def _start(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, thread_ts = str(params.get("channel") or ""), str(params.get("thread_ts") or "")
        if self.refusal is not None:
            return {"ok": False, "error": self.refusal}
        if not channel or not thread_ts:
            return {"ok": False, "error": "invalid_arguments"}
        if channel == CLOSED_CHANNEL:
            return {"ok": False, "error": "not_in_channel"}
        ts = self.standin.next_ts()
        posted = Posted(channel, ts, thread_ts, [_text(params)])
        self.standin.messages[ts] = posted
        self.standin.timeline.append(posted)
        self.streaming.add(ts)
        return {"ok": True, "channel": channel, "ts": ts}

    def _append(self, params: dict[str, Any]) -> dict[str, Any]:
        posted = self._streamed(params)
        if posted is None:
            return {"ok": False, "error": "message_not_in_streaming_state"}
        text = _text(params)
        if not text:
            return {"ok": False, "error": "no_text"}
        posted.texts.append(posted.text + text)
        return {"ok": True, "channel": posted.channel, "ts": posted.ts}

    def _stop(self, params: dict[str, Any]) -> dict[str, Any]:
        posted = self._streamed(params)
        if posted is None:
            return {"ok": False, "error": "message_not_in_streaming_state"}
        if text := _text(params):
            posted.texts.append(posted.text + text)
        self.streaming.discard(posted.ts)
        self.final_blocks[posted.ts] = list(params.get("blocks") or [])
        message = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "text": posted.text, "ts": posted.ts}
        return {"ok": True, "channel": posted.channel, "ts": posted.ts, "message": message}

    def _streamed(self, params: dict[str, Any]) -> Posted | None:
        posted = self.standin.messages.get(str(params.get("ts") or ""))
        if posted is None or posted.ts not in self.streaming or posted.channel != params.get("channel"):
            return None
        return posted


def _thread(params: dict[str, Any]) -> tuple[str, str] | None:
    channel, thread_ts = str(params.get("channel_id") or ""), str(params.get("thread_ts") or "")
    return (channel, thread_ts) if channel and thread_ts else None


def _text(params: dict[str, Any]) -> str:
    """The Markdown a streaming call carries: ``markdown_text`` and the ``markdown_text`` chunks, in order."""
    chunks = params.get("chunks") or []
    return str(params.get("markdown_text") or "") + "".join(
        str(chunk.get("text") or "") for chunk in chunks if chunk.get("type") == "markdown_text"
    )


def thread_started(user: str, channel: str, thread_ts: str) -> dict[str, Any]:
    """An ``assistant_thread_started`` event: ``user`` opened a new assistant thread (a DM ``channel``)."""
    return {
        "type": "assistant_thread_started",
        "assistant_thread": {
            "user_id": user,
            "context": {"channel_id": "CGENERAL1", "team_id": TEAM_ID, "enterprise_id": None},
            "channel_id": channel,
            "thread_ts": thread_ts,
        },
        "event_ts": thread_ts,
    }


def feedback_click(user: str, channel: str, thread_ts: str, message_ts: str, value: str) -> dict[str, Any]:
    """The ``block_actions`` payload of a click on a feedback button (``value``) under the message ``message_ts``."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM_ID},
        "api_app_id": APP_ID,
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
            "thread_ts": thread_ts,
        },
        "trigger_id": f"{int(time.time())}.trigger",
        "team": {"id": TEAM_ID, "domain": "standin"},
        "channel": {"id": channel, "name": "directmessage"},
        "message": {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "ts": message_ts, "thread_ts": thread_ts},
        "actions": [
            {
                "type": "feedback_buttons",
                "action_id": "reply_feedback",
                "block_id": "feedback",
                "value": value,
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
