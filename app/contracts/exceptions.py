"""Every error ivt raises on purpose derives from :class:`IvtError`.

Tree::

    IvtError
    ├── ConfigError            bad environment variable or argument
    ├── BrokerError            the local Kafka broker could not be fetched, started or stopped
    └── InvalidEvent           bytes on a topic that break the event contract (they go to the DLQ)
"""

from __future__ import annotations

__all__ = ["IvtError", "ConfigError", "BrokerError", "InvalidEvent"]


class IvtError(Exception):
    """Base class of all ivt errors."""


class ConfigError(IvtError):
    """A setting could not be parsed; the message names the variable and the expected form."""


class BrokerError(IvtError):
    """The local broker failed; the message points at its log file."""


class InvalidEvent(IvtError):
    """An event broke its contract. ``reason`` is short and readable; it is written to the DLQ."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
