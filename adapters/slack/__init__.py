"""Slack adapter: a slack-bolt app translating between Slack and the conversation core."""

from adapters.slack.app import SlackOptions, SlackStartupError, serve

__all__ = ["SlackOptions", "SlackStartupError", "serve"]
