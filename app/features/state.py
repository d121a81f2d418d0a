"""Per-key state of the two feature stages, each one compact value with its own byte form.

Faust writes one changelog record per table ``set``; a key's whole state is therefore one value that
is read, updated and written once per click. Tables and keys (the live agents follow this):

=============  ==========================  ============================  =======================
state          table key                   stage partitioned by          holds
=============  ==========================  ============================  =======================
IpState        ``click.ip``                IP                            clicks, users, sessions
UserState      ``click.entity_key``        entity key (user, else        clicks
                                           session)
SessionState   ``click.session_id``        entity key, as above          clicks, first, total
=============  ==========================  ============================  =======================

A session belongs to one user, so keying the user/session stage by the entity key puts a session's
clicks on one partition, except for a session that logs in half-way: its anonymous clicks were routed
by ``s:<session>`` and its later ones by ``u:<user>``, so the session's state starts again on the
user's partition. We accept that (it is what the partitioning can give without another hop).

Bytes: a two-byte tag (kind, format version) then the parts, little endian, no field names; the tag
makes a value from the wrong table, or from a newer release, fail loudly (:class:`StateDecodeError`)
instead of decoding as garbage.

How each stops growing:

* every value is bounded: counters keep a fixed number of buckets (:mod:`app.features.buckets`),
  distinct windows a fixed number of fixed-size sketches (:mod:`app.features.distinct`), the session
  total saturates at 2**32 - 1;
* the number of keys is bounded by a TTL on event time: a state whose newest click is more than
  :data:`IDLE_TTL_MS` (25 h) before a click is treated by the stages *as absent* (a new user, IP or
  session). At that age every window is empty anyway and the time since the previous click is at its
  cap, so only a session's lifetime features change: a session silent for 25 h starts over. Because
  the stages already ignore such a state, a sweeper may delete keys with
  ``last_event_ms < watermark - IDLE_TTL_MS - margin`` (``peek_last_event_ms`` reads it from the
  bytes) and no feature changes unless a click arrives more than ``margin`` late. The live agents
  need such a sweeper (a Faust timer over each table);
  :class:`~app.features.engine.OfflineFeatureEngine` sweeps its dicts itself, with a 1 h margin.
"""

from __future__ import annotations

import struct
from typing import ClassVar, Final

from app.features.buckets import DEFAULT_LAYOUT, HOUR_MS, BucketCounter, Layout
from app.features.distinct import DistinctWindows
from app.features.spec import StateDecodeError

__all__ = [
    "IDLE_TTL_MS",
    "USER_LAYOUT",
    "SESSION_LAYOUT",
    "IP_LAYOUT",
    "IpState",
    "UserState",
    "SessionState",
]

IDLE_TTL_MS: Final = 25 * HOUR_MS
USER_LAYOUT: Final[Layout] = DEFAULT_LAYOUT
IP_LAYOUT: Final[Layout] = DEFAULT_LAYOUT
#: Sessions need no 24 h window: the 10 s and minute levels only.
SESSION_LAYOUT: Final[Layout] = DEFAULT_LAYOUT[:2]

_FORMAT: Final = 1
_SESSION_FIELDS = struct.Struct("<qI")
_INT64 = struct.Struct("<q")


def _check_tag(data: bytes, tag: bytes, kind: str) -> None:
    if data[:2] != tag:
        raise StateDecodeError(
            f"{kind}: value starts with {bytes(data[:2])!r}, expected {tag!r} (wrong table or format)"
        )


class UserState:
    """Clicks of one entity (a user, or a session when the click has no user)."""

    __slots__ = ("clicks",)
    TAG: ClassVar[bytes] = bytes((ord("U"), _FORMAT))

    def __init__(self, clicks: BucketCounter | None = None) -> None:
        self.clicks = clicks if clicks is not None else BucketCounter(USER_LAYOUT)

    @property
    def last_event_ms(self) -> int:
        """Newest event time seen, -1 for a new state."""
        return self.clicks.max_ms

    @classmethod
    def peek_last_event_ms(cls, data: bytes) -> int:
        """``last_event_ms`` of a stored value without decoding it (for a TTL sweeper)."""
        _check_tag(data, cls.TAG, "UserState")
        return _INT64.unpack_from(data, 2)[0]

    def copy(self) -> UserState:
        return UserState(self.clicks.copy())

    def __eq__(self, other: object) -> bool:
        return type(other) is UserState and self.clicks == other.clicks

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"UserState({self.clicks!r})"

    def to_bytes(self) -> bytes:
        return self.TAG + self.clicks.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> UserState:
        _check_tag(data, cls.TAG, "UserState")
        clicks, end = BucketCounter.unpack_from(data, USER_LAYOUT, 2)
        _check_end(data, end, "UserState")
        return cls(clicks)


class SessionState:
    """Clicks of one session, its first click time and its lifetime click total."""

    __slots__ = ("clicks", "first_ms", "total")
    TAG: ClassVar[bytes] = bytes((ord("S"), _FORMAT))

    def __init__(self, clicks: BucketCounter | None = None, first_ms: int = -1, total: int = 0) -> None:
        self.clicks = clicks if clicks is not None else BucketCounter(SESSION_LAYOUT)
        #: earliest event time seen in the session, -1 for a new state
        self.first_ms = first_ms
        #: clicks since the session started, saturating at 2**32 - 1
        self.total = total

    @property
    def last_event_ms(self) -> int:
        return self.clicks.max_ms

    @classmethod
    def peek_last_event_ms(cls, data: bytes) -> int:
        """``last_event_ms`` of a stored value without decoding it (for a TTL sweeper)."""
        _check_tag(data, cls.TAG, "SessionState")
        return _INT64.unpack_from(data, 2 + _SESSION_FIELDS.size)[0]

    def copy(self) -> SessionState:
        return SessionState(self.clicks.copy(), self.first_ms, self.total)

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is SessionState
            and self.first_ms == other.first_ms
            and self.total == other.total
            and self.clicks == other.clicks
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"SessionState(first_ms={self.first_ms}, total={self.total}, {self.clicks!r})"

    def to_bytes(self) -> bytes:
        return self.TAG + _SESSION_FIELDS.pack(self.first_ms, self.total) + self.clicks.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionState:
        _check_tag(data, cls.TAG, "SessionState")
        try:
            first_ms, total = _SESSION_FIELDS.unpack_from(data, 2)
        except struct.error as exc:
            raise StateDecodeError(f"SessionState: truncated value ({exc})") from exc
        clicks, end = BucketCounter.unpack_from(data, SESSION_LAYOUT, 2 + _SESSION_FIELDS.size)
        _check_end(data, end, "SessionState")
        return cls(clicks, first_ms, total)


class IpState:
    """Clicks of one IP and the distinct users and sessions seen on it."""

    __slots__ = ("clicks", "users", "sessions")
    TAG: ClassVar[bytes] = bytes((ord("I"), _FORMAT))

    def __init__(
        self,
        clicks: BucketCounter | None = None,
        users: DistinctWindows | None = None,
        sessions: DistinctWindows | None = None,
    ) -> None:
        self.clicks = clicks if clicks is not None else BucketCounter(IP_LAYOUT)
        self.users = users if users is not None else DistinctWindows()
        self.sessions = sessions if sessions is not None else DistinctWindows()

    @property
    def last_event_ms(self) -> int:
        return self.clicks.max_ms

    @classmethod
    def peek_last_event_ms(cls, data: bytes) -> int:
        """``last_event_ms`` of a stored value without decoding it (for a TTL sweeper)."""
        _check_tag(data, cls.TAG, "IpState")
        return _INT64.unpack_from(data, 2)[0]

    def copy(self) -> IpState:
        return IpState(self.clicks.copy(), self.users.copy(), self.sessions.copy())

    def __eq__(self, other: object) -> bool:
        return type(other) is IpState and self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"IpState({self.clicks!r}, users={self.users!r}, sessions={self.sessions!r})"

    def to_bytes(self) -> bytes:
        return b"".join((self.TAG, self.clicks.to_bytes(), self.users.to_bytes(), self.sessions.to_bytes()))

    @classmethod
    def from_bytes(cls, data: bytes) -> IpState:
        _check_tag(data, cls.TAG, "IpState")
        clicks, off = BucketCounter.unpack_from(data, IP_LAYOUT, 2)
        users, off = DistinctWindows.unpack_from(data, off)
        sessions, off = DistinctWindows.unpack_from(data, off)
        _check_end(data, off, "IpState")
        return cls(clicks, users, sessions)


def _check_end(data: bytes, end: int, kind: str) -> None:
    if end != len(data):
        raise StateDecodeError(f"{kind}: {len(data) - end} bytes left over after decoding")
