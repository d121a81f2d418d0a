"""Malformed click events, one kind of breakage each, for demos and DLQ drills.

Real producers send garbage sometimes: truncated JSON, wrong types, naive timestamps, broken IPs,
oversized payloads. Mixing some into simulated traffic shows the DLQ path working next to the good one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import orjson

__all__ = ["MALFORMED_KINDS", "malformed_event"]


def _base(i: int) -> dict[str, object]:
    return {
        "click_id": f"malformed-{i}",
        "event_time": "2026-11-22T10:00:00.000Z",
        "ip": "198.51.100.7",
        "session_id": f"ms-{i}",
        "user_id": None,
        "logged_in": False,
        "device_type": "desktop",
        "user_agent": "curl/8.0",
        "ad_id": "ad-0",
        "campaign_id": "cmp-0",
        "advertiser_id": "adv-0",
    }


def _with(i: int, **changes: object) -> bytes:
    doc = _base(i)
    doc.update(changes)
    return orjson.dumps(doc)


#: name -> maker of the i-th event of that kind.
MALFORMED_KINDS: Final[dict[str, Callable[[int], bytes]]] = {
    "truncated-json": lambda i: _with(i)[:-7],
    "not-utf8": lambda i: b"\xff\xfe\x00" + str(i).encode(),
    "missing-id": lambda i: orjson.dumps({k: v for k, v in _base(i).items() if k != "click_id"}),
    "naive-time": lambda i: _with(i, event_time="2026-11-22 10:00:00"),
    "bad-ip": lambda i: _with(i, ip=f"10.0.0.{256 + i % 100}"),
    "wrong-type": lambda i: _with(i, logged_in="no"),
    "oversize": lambda i: _with(i, user_agent="A" * 5000, filler="F" * 5000),
}


def malformed_event(i: int) -> bytes:
    """The i-th malformed event, cycling through every kind."""
    makers = list(MALFORMED_KINDS.values())
    return makers[i % len(makers)](i)
