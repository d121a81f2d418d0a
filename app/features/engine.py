"""The feature engine: a click plus its keys' state in, the new state and the feature vector out.

One engine for every caller, so training and serving cannot drift apart:

* the live agents call the two stage functions, :func:`ip_stage` on the stream partitioned by IP and
  :func:`entity_stage` on the stream partitioned by :attr:`Click.entity_key`, with state read from and
  written back to their Faust tables as bytes;
* offline dataset building and replay use :class:`OfflineFeatureEngine`, which runs the same two
  stages over an ordered iterable of clicks with the state held in dicts.

The stage functions are pure: they never mutate the state they are given (a state object is copied;
bytes are decoded into a fresh one) and read no clock; event time is the click's own
``event_time_ms``. Given the same clicks in the same order they give the same vectors, bit for bit,
whether the state went through bytes or not (a test runs both).

Definitions (the names and one-line meanings are in :data:`app.features.spec.FEATURE_DOCS`):

* **The scored click counts itself** in every count, distinct count and rate: the state is updated
  first, then read (a click later than a level's slack, below, is missing from that level). A model then sees "this is the 5th click in a minute", never a 0 for a first
  click that is indistinguishable from an empty window.
* **Windows** are the bucket windows of :mod:`app.features.buckets`: 1 min = current 10 s bucket + 6
  before, 10 min and 1 h = current minute bucket + 10 / 60 before, 24 h = current hour + 24 before.
  Distinct users/sessions per IP use hour buckets: 1 h = current hour + 1 before, 24 h = + 24 before.
* **Velocity** of a window is clicks per minute over the window's active span: from the start of
  its oldest non-empty bucket to the click, floored at one bucket (10 s, 1 min, 1 min, 1 h). Unlike
  count / window length it separates a fresh burst from the same count spread over the window.
  **Session velocity** is session clicks per minute since the session's first click, with the
  duration floored at one minute.
* **Time since the previous click** is measured from the entity's newest earlier click (its
  ``max`` event time): 0 for a click that arrives after a later one, capped at 24 h, and 24 h when
  there is no previous click within the 25 h state TTL, so "new" and "quiet for a day" look alike.
* **Hour of day and day of week** are UTC, integers (0-23, Monday = 0), each put on the unit circle
  (sin, cos) so 23:00 sits next to 00:00 and Sunday next to Monday. Integers, not fractions of an hour,
  so the features match the (hour, day) cells that training weights by.
* **Transform**: counts, rates and durations are ``log1p`` of the raw value in the engine (see
  :mod:`app.features.spec`); flags and the one-hot device are 0/1; the vector is float32.
* **Anonymous clicks**: the "user" of a click without ``user_id`` is its session (the entity key), so
  ``user_*`` features describe the best identity the click has; ``has_user_id`` tells them apart.
  Distinct users per IP count ``user_id`` values only; distinct sessions count every click.
* **Out of order**: a late click is scored against the windows ending at its own time, with what the
  state still keeps (slack of 2 min at 10 s resolution, 10 min at 1 min, 1 h at 1 h); it never moves
  the state's clock back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Final, TypeVar

import numpy as np

from app.contracts.events import DEVICE_TYPES, Click
from app.features.buckets import HOUR_MS, MINUTE_MS
from app.features.spec import FEATURE_NAMES, IP_FEATURE_NAMES
from app.features.state import IDLE_TTL_MS, USER_LAYOUT, IpState, SessionState, UserState

__all__ = [
    "ip_stage",
    "entity_stage",
    "OfflineFeatureEngine",
    "N_FEATURES",
    "N_IP_FEATURES",
    "SECS_SINCE_PREV_CAP",
]

N_FEATURES: Final = len(FEATURE_NAMES)
N_IP_FEATURES: Final = len(IP_FEATURE_NAMES)
SECS_SINCE_PREV_CAP: Final = 86_400.0
DAY_MS: Final = 24 * HOUR_MS

# (level, span) of the 1 min, 10 min, 1 h and 24 h windows in the counters' layout (see .state)
_WINDOWS: Final = ((0, 6), (1, 10), (1, 60), (2, 24))
_SESSION_WINDOWS: Final = _WINDOWS[:3]
# velocity floors: one bucket of the window's level
_RES_1M, _RES_10M, _RES_1H, _RES_24H = (USER_LAYOUT[level].res_ms for level, _ in _WINDOWS)

_MAX_TOTAL: Final = 2**32 - 1
_LOG_CAP: Final = math.log1p(SECS_SINCE_PREV_CAP)
_HOUR_SIN: Final = tuple(math.sin(2 * math.pi * h / 24) for h in range(24))
_HOUR_COS: Final = tuple(math.cos(2 * math.pi * h / 24) for h in range(24))
_DOW_SIN: Final = tuple(math.sin(2 * math.pi * d / 7) for d in range(7))
_DOW_COS: Final = tuple(math.cos(2 * math.pi * d / 7) for d in range(7))
_DEVICE_ONE_HOT: Final = {d: tuple(float(d == e) for e in DEVICE_TYPES) for d in DEVICE_TYPES}

_log1p = math.log1p
_S = TypeVar("_S", IpState, UserState, SessionState)


def _take(cls: type[_S], state: _S | bytes | bytearray | memoryview | None, t_ms: int) -> _S:
    """A state of our own to update: decoded or copied, new if absent or idle past the TTL."""
    if state is None:
        return cls()
    if type(state) is bytes or isinstance(state, bytearray | memoryview):
        own = cls.from_bytes(state)
        return own if t_ms - own.last_event_ms <= IDLE_TTL_MS else cls()
    if type(state) is not cls:
        raise TypeError(f"expected {cls.__name__}, bytes or None, got {type(state).__name__}")
    return state.copy() if t_ms - state.last_event_ms <= IDLE_TTL_MS else cls()  # type: ignore[return-value]


def ip_stage(click: Click, ip_state: IpState | bytes | None) -> tuple[IpState, np.ndarray]:
    """IP stage: ``(new IpState, float32 vector of IP_FEATURE_NAMES)``; ``ip_state`` is not changed.

    ``ip_state`` is the state stored under ``click.ip`` (an :class:`IpState`, its bytes, or None).
    """
    st = _take(IpState, ip_state, click.event_time_ms)
    return st, _update_ip(click, st)


def entity_stage(
    click: Click,
    user_state: UserState | bytes | None,
    session_state: SessionState | bytes | None,
    ip_features: np.ndarray,
) -> tuple[UserState, SessionState, np.ndarray]:
    """User/session stage: ``(new UserState, new SessionState, float32 vector of FEATURE_NAMES)``.

    ``user_state`` is stored under ``click.entity_key``, ``session_state`` under ``click.session_id``;
    ``ip_features`` is what :func:`ip_stage` returned for this click. Inputs are not changed.
    """
    t = click.event_time_ms
    user = _take(UserState, user_state, t)
    session = _take(SessionState, session_state, t)
    return user, session, _update_entity(click, user, session, ip_features)


def _update_ip(click: Click, st: IpState) -> np.ndarray:
    t = click.event_time_ms
    st.clicks.add(t)
    c1m, _, c10m, _, c1h, _, c24h, _ = st.clicks.windows(t, _WINDOWS)
    users_1h, users_24h = st.users.observe(click.user_id, t)
    sessions_1h, sessions_24h = st.sessions.observe(click.session_id, t)
    return np.array(
        (
            _log1p(c1m),
            _log1p(c10m),
            _log1p(c1h),
            _log1p(c24h),
            _log1p(users_1h),
            _log1p(users_24h),
            _log1p(sessions_1h),
            _log1p(sessions_24h),
        ),
        dtype=np.float32,
    )


def _update_entity(
    click: Click, user: UserState, session: SessionState, ip_features: np.ndarray
) -> np.ndarray:
    if len(ip_features) != N_IP_FEATURES:
        raise ValueError(f"ip_features has {len(ip_features)} values, expected {N_IP_FEATURES}")
    one_hot = _DEVICE_ONE_HOT.get(click.device_type)
    if one_hot is None:
        raise ValueError(f"device_type {click.device_type!r} not one of {', '.join(DEVICE_TYPES)}")
    t = click.event_time_ms

    uc = user.clicks
    prev = uc.max_ms
    gap = _LOG_CAP if prev < 0 else _log1p(min(max(t - prev, 0) / 1000.0, SECS_SINCE_PREV_CAP))
    uc.add(t)
    u1m, s1m, u10m, s10m, u1h, s1h, u24h, s24h = uc.windows(t, _WINDOWS)
    # velocity: clicks per minute from the oldest non-empty bucket's start, floored at one bucket
    s1m, s10m, s1h, s24h = t - s1m, t - s10m, t - s1h, t - s24h

    if session.first_ms < 0 or t < session.first_ms:
        session.first_ms = t
    if session.total < _MAX_TOTAL:
        session.total += 1
    session.clicks.add(t)
    n1m, _, n10m, _, n1h, _ = session.clicks.windows(t, _SESSION_WINDOWS)
    duration = t - session.first_ms

    hour = t // HOUR_MS % 24
    dow = (t // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday
    vec = np.empty(N_FEATURES, dtype=np.float32)
    vec[:N_IP_FEATURES] = ip_features
    vec[N_IP_FEATURES:] = (
        _log1p(u1m),
        _log1p(u10m),
        _log1p(u1h),
        _log1p(u24h),
        _log1p(u1m * MINUTE_MS / (s1m if s1m > _RES_1M else _RES_1M)),
        _log1p(u10m * MINUTE_MS / (s10m if s10m > _RES_10M else _RES_10M)),
        _log1p(u1h * MINUTE_MS / (s1h if s1h > _RES_1H else _RES_1H)),
        _log1p(u24h * MINUTE_MS / (s24h if s24h > _RES_24H else _RES_24H)),
        gap,
        _log1p(n1m),
        _log1p(n10m),
        _log1p(n1h),
        _log1p(session.total),
        _log1p(duration / 1000.0),
        _log1p(session.total * MINUTE_MS / (duration if duration > MINUTE_MS else MINUTE_MS)),
        _HOUR_SIN[hour],
        _HOUR_COS[hour],
        _DOW_SIN[dow],
        _DOW_COS[dow],
        1.0 if click.logged_in else 0.0,
        0.0 if click.user_id is None else 1.0,
        *one_hot,
    )
    return vec


class OfflineFeatureEngine:
    """Both stages over ordered clicks with in-memory state: offline datasets and replay.

    ``through_bytes=True`` stores every state as bytes and decodes it per click, exactly as the live
    agents do with their tables (slower; the vectors are identical either way). States idle for more
    than the TTL plus :attr:`SWEEP_MARGIN_MS` behind the newest event time are dropped every
    ``sweep_every`` clicks, which keeps memory bounded on long replays and changes no vector unless a
    click arrives more than that margin late.
    """

    SWEEP_MARGIN_MS: Final = HOUR_MS

    def __init__(self, *, through_bytes: bool = False, sweep_every: int | None = 100_000) -> None:
        self.through_bytes = through_bytes
        self.sweep_every = sweep_every
        self.ip_states: dict[str, IpState | bytes] = {}
        self.user_states: dict[str, UserState | bytes] = {}
        self.session_states: dict[str, SessionState | bytes] = {}
        #: newest event time processed, -1 before the first click
        self.max_event_ms = -1
        self._until_sweep = sweep_every

    def process(self, click: Click) -> np.ndarray:
        """Feature vector of one click; updates the engine's state."""
        t = click.event_time_ms
        ip_key, user_key, session_key = click.ip, click.entity_key, click.session_id
        if self.through_bytes:
            ip, ip_features = ip_stage(click, self.ip_states.get(ip_key))  # type: ignore[arg-type]
            user, session, vec = entity_stage(
                click,
                self.user_states.get(user_key),  # type: ignore[arg-type]
                self.session_states.get(session_key),  # type: ignore[arg-type]
                ip_features,
            )
            self.ip_states[ip_key] = ip.to_bytes()
            self.user_states[user_key] = user.to_bytes()
            self.session_states[session_key] = session.to_bytes()
        else:
            # The states are ours alone, so update them in place instead of copying (same functions).
            ip_features = _update_ip(click, _own(self.ip_states, ip_key, IpState, t))
            vec = _update_entity(
                click,
                _own(self.user_states, user_key, UserState, t),
                _own(self.session_states, session_key, SessionState, t),
                ip_features,
            )
        if t > self.max_event_ms:
            self.max_event_ms = t
        if self._until_sweep is not None:
            self._until_sweep -= 1
            if self._until_sweep <= 0:
                self.sweep()
        return vec

    def run(self, clicks: Iterable[Click]) -> Iterator[tuple[Click, np.ndarray]]:
        """Yield ``(click, vector)`` for each click, in order."""
        for click in clicks:
            yield click, self.process(click)

    def warm_up(self, clicks: Iterable[Click]) -> int:
        """Feed clicks without keeping their vectors (replay's look-back); returns how many."""
        n = 0
        for click in clicks:
            self.process(click)
            n += 1
        return n

    def sweep(self, watermark_ms: int | None = None) -> int:
        """Drop states idle past the TTL (+ margin) behind ``watermark_ms``; returns how many."""
        self._until_sweep = self.sweep_every
        w = self.max_event_ms if watermark_ms is None else watermark_ms
        cutoff = w - IDLE_TTL_MS - self.SWEEP_MARGIN_MS
        dropped = 0
        for table, cls in (
            (self.ip_states, IpState),
            (self.user_states, UserState),
            (self.session_states, SessionState),
        ):
            old = [k for k, v in table.items() if _last_event_ms(cls, v) < cutoff]  # type: ignore[type-var]
            for k in old:
                del table[k]
            dropped += len(old)
        return dropped


def _own(table: dict, key: str, cls: type[_S], t_ms: int) -> _S:
    st = table.get(key)
    if st is None or t_ms - st.last_event_ms > IDLE_TTL_MS:
        st = table[key] = cls()
    return st


def _last_event_ms(cls: type[_S], value: _S | bytes) -> int:
    return cls.peek_last_event_ms(value) if isinstance(value, bytes) else value.last_event_ms
