"""Readiness of the bot: the model is loaded and every configured platform is connected.

Adapters report their connection (``connected``), the entry point reports the model
(``model_loaded``) and names the platforms it started (``expect``); ``/healthz`` answers
200 only while ``ready`` is true.  Nothing here awaits or locks: every call runs on the
bot's own event loop, and a reading is a snapshot.
"""

from __future__ import annotations


class Health:
    """What must be up for the bot to be ready to answer, and what is up now."""

    def __init__(self) -> None:
        self._expected: set[str] = set()
        self._connected: dict[str, bool] = {}
        self._model_loaded = False

    def expect(self, platform: str) -> None:
        """Name a configured ``platform`` that must be connected for the bot to be ready."""
        self._expected.add(platform)
        self._connected.setdefault(platform, False)

    def connected(self, platform: str, up: bool) -> None:
        """Record that ``platform`` is now connected (``up``) or disconnected."""
        self._connected[platform] = up

    def model_loaded(self, loaded: bool) -> None:
        """Record whether the model is loaded and can answer."""
        self._model_loaded = loaded

    @property
    def ready(self) -> bool:
        """True when the model is loaded and every expected platform is connected."""
        return self._model_loaded and all(self._connected.get(name, False) for name in self._expected)

    def report(self) -> dict[str, object]:
        """A JSON-ready account: ``ready``, ``model_loaded`` and each platform's connection."""
        return {
            "ready": self.ready,
            "model_loaded": self._model_loaded,
            "platforms": {
                name: self._connected.get(name, False) for name in sorted(self._expected | set(self._connected))
            },
        }
