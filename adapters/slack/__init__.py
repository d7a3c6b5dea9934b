"""Slack adapter: a slack-bolt app translating between Slack and the conversation core."""

from adapters.slack.app import SlackAdapter
from adapters.slack.connection import SlackConfig, SlackStartupError

__all__ = ["SlackAdapter", "SlackConfig", "SlackStartupError"]
