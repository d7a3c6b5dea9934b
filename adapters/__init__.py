"""Thin translators between chat platforms and the conversation core."""
