"""Tests of the Slack adapter against a local Slack stand-in."""
