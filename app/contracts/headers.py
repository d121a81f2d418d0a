"""Kafka headers that travel with a click from stage to stage."""

from __future__ import annotations

__all__ = ["forward_headers"]


def forward_headers(headers: object) -> list[tuple[str, bytes]]:
    """Our own ``ivt-*`` headers (e.g. the simulator's intended send time) travel with the click,
    so latency can be measured end to end; anything else a producer set stays behind."""
    if not headers:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(k, v) for k, v in items if isinstance(k, str) and k.startswith("ivt-")]  # type: ignore[union-attr]
