"""The feature contract: names, order, version and dtype of the vector every model is trained on.

A model version stores the names and version it was trained with; before it scores a single click
it is checked against this module with :func:`check_compatible`, which refuses it with a message that
lists what is missing, extra or out of order. Training reads the vectors logged with each verdict,
so this one tuple is what keeps train and serve from drifting apart.

Rules for changing it:

* any change to a name, to the order, or to what a feature means (window, transform, cap) bumps
  :data:`FEATURE_VERSION`; a test pins the exact tuple so the bump cannot be forgotten;
* IP features come first because the IP stage computes them on another partition and hands them on
  (:func:`app.features.engine.ip_stage`); the user/session stage appends the rest.

Transforms are applied in the engine, not in the model's preprocessing: heavy-tailed counts, rates
and durations are ``log1p`` of the raw value (natural log), so the logged vector is already what a
model wants, a baseline can get the raw value back with ``expm1``, and the model's manifest only
needs to hold standardisation constants. :data:`LOG1P_FEATURES` names them. Every value is float32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from app.contracts.events import DEVICE_TYPES
from app.contracts.exceptions import IvtError

__all__ = [
    "FEATURE_VERSION",
    "FEATURE_NAMES",
    "IP_FEATURE_NAMES",
    "ENTITY_FEATURE_NAMES",
    "FEATURE_DOCS",
    "LOG1P_FEATURES",
    "FeatureSpec",
    "SPEC",
    "check_compatible",
    "FeatureSpecError",
    "StateDecodeError",
]

FEATURE_VERSION: Final = "v1"

#: Name -> one-line definition. Windows are on event time; "covers" gives the span of history the
#: bucket rule adds up (see :mod:`app.features.buckets`). The scored click counts itself everywhere.
FEATURE_DOCS: Final[Mapping[str, str]] = {
    # IP stage (partitioned by IP)
    "ip_clicks_1m": "log1p clicks from the IP, current 10 s bucket + 6 before (covers 60-70 s)",
    "ip_clicks_10m": "log1p clicks from the IP, current minute bucket + 10 before (10-11 min)",
    "ip_clicks_1h": "log1p clicks from the IP, current minute bucket + 60 before (60-61 min)",
    "ip_clicks_24h": "log1p clicks from the IP, current hour bucket + 24 before (24-25 h)",
    "ip_users_1h": "log1p distinct user_ids seen on the IP, current hour bucket + 1 before (HLL)",
    "ip_users_24h": "log1p distinct user_ids seen on the IP, current hour bucket + 24 before (HLL)",
    "ip_sessions_1h": "log1p distinct session_ids seen on the IP, current hour bucket + 1 before (HLL)",
    "ip_sessions_24h": "log1p distinct session_ids seen on the IP, current hour bucket + 24 before (HLL)",
    # user stage (partitioned by Click.entity_key: the user, or the session when anonymous)
    "user_clicks_1m": "log1p clicks of the entity (user, else session), 1 min window as ip_clicks_1m",
    "user_clicks_10m": "log1p clicks of the entity, 10 min window",
    "user_clicks_1h": "log1p clicks of the entity, 1 h window",
    "user_clicks_24h": "log1p clicks of the entity, 24 h window",
    "user_velocity_1m": "log1p clicks/min of the entity over its active span in the 1 min window",
    "user_velocity_10m": "log1p clicks/min of the entity over its active span in the 10 min window",
    "user_velocity_1h": "log1p clicks/min of the entity over its active span in the 1 h window",
    "user_velocity_24h": "log1p clicks/min of the entity over its active span in the 24 h window",
    "user_secs_since_prev": "log1p seconds since the entity's latest earlier click, capped at 86400",
    # session (same stage)
    "session_clicks_1m": "log1p clicks in the session, 1 min window",
    "session_clicks_10m": "log1p clicks in the session, 10 min window",
    "session_clicks_1h": "log1p clicks in the session, 1 h window",
    "session_clicks_total": "log1p clicks in the session since its first click",
    "session_duration_s": "log1p seconds from the session's first click to this one",
    "session_velocity": "log1p clicks/min over the session's life (duration floored at 1 min)",
    # the click itself
    "hour_sin": "sin(2*pi*h/24), h = hour of day in UTC (integer 0-23)",
    "hour_cos": "cos(2*pi*h/24)",
    "dow_sin": "sin(2*pi*d/7), d = day of week in UTC, Monday = 0",
    "dow_cos": "cos(2*pi*d/7)",
    "logged_in": "1 if the click is from a logged-in user, else 0",
    "has_user_id": "1 if the click carries a user_id (logged in or recognised), else 0",
    "device_desktop": "1 if device_type == 'desktop', else 0",
    "device_mobile": "1 if device_type == 'mobile', else 0",
    "device_app": "1 if device_type == 'app', else 0",
}

IP_FEATURE_NAMES: Final[tuple[str, ...]] = (
    "ip_clicks_1m",
    "ip_clicks_10m",
    "ip_clicks_1h",
    "ip_clicks_24h",
    "ip_users_1h",
    "ip_users_24h",
    "ip_sessions_1h",
    "ip_sessions_24h",
)

ENTITY_FEATURE_NAMES: Final[tuple[str, ...]] = (
    "user_clicks_1m",
    "user_clicks_10m",
    "user_clicks_1h",
    "user_clicks_24h",
    "user_velocity_1m",
    "user_velocity_10m",
    "user_velocity_1h",
    "user_velocity_24h",
    "user_secs_since_prev",
    "session_clicks_1m",
    "session_clicks_10m",
    "session_clicks_1h",
    "session_clicks_total",
    "session_duration_s",
    "session_velocity",
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "logged_in",
    "has_user_id",
    "device_desktop",
    "device_mobile",
    "device_app",
)

FEATURE_NAMES: Final[tuple[str, ...]] = IP_FEATURE_NAMES + ENTITY_FEATURE_NAMES

LOG1P_FEATURES: Final[frozenset[str]] = frozenset(
    n for n in FEATURE_NAMES if n.startswith(("ip_", "user_", "session_"))
)

# The one-hot block is written out above so the tuple reads as the contract; it must still follow
# the event contract's device list, or a new device type would silently map to all zeros.
if tuple(f"device_{d}" for d in DEVICE_TYPES) != FEATURE_NAMES[-len(DEVICE_TYPES) :]:
    raise RuntimeError(
        "app.contracts.events.DEVICE_TYPES changed: update the device_* features and bump the version"
    )
if set(FEATURE_DOCS) != set(FEATURE_NAMES) or len(set(FEATURE_NAMES)) != len(FEATURE_NAMES):
    raise RuntimeError("FEATURE_DOCS and FEATURE_NAMES disagree, or a name is repeated")


class FeatureSpecError(IvtError, ValueError):
    """A model (or a logged vector) does not match the feature contract; the message says how."""


class StateDecodeError(IvtError, ValueError):
    """Stored state bytes could not be decoded (wrong table, newer format, truncated value)."""


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """What a feature vector is: its names in order, the version of their definitions, its dtype."""

    version: str = FEATURE_VERSION
    names: tuple[str, ...] = FEATURE_NAMES
    dtype: str = "float32"
    log1p: frozenset[str] = field(default=LOG1P_FEATURES)

    @property
    def size(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Position of ``name`` in the vector (``ValueError`` if it is not a feature)."""
        return self.names.index(name)

    def to_dict(self) -> dict[str, object]:
        """Plain form for a model manifest."""
        return {
            "version": self.version,
            "names": list(self.names),
            "dtype": self.dtype,
            "log1p": sorted(self.log1p),
        }

    def check_compatible(self, names: Sequence[str], version: str) -> None:
        """Raise :class:`FeatureSpecError` unless ``names``/``version`` are exactly this spec's."""
        names = tuple(names)
        problems: list[str] = []
        if version != self.version:
            problems.append(f"feature version {version!r} != engine's {self.version!r}")
        if names != self.names:
            mine, theirs = set(self.names), set(names)
            missing = [n for n in self.names if n not in theirs]
            extra = [n for n in names if n not in mine]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if missing:
                problems.append(f"missing {len(missing)}: {', '.join(missing)}")
            if extra:
                problems.append(f"extra {len(extra)}: {', '.join(extra)}")
            if dupes:
                problems.append(f"repeated: {', '.join(dupes)}")
            if not (missing or extra or dupes):
                moved = [
                    f"{n} at {i} (engine has it at {self.names.index(n)})"
                    for i, n in enumerate(names)
                    if self.names[i] != n
                ]
                problems.append(
                    f"misordered {len(moved)}: {'; '.join(moved[:8])}" + (" ..." if len(moved) > 8 else "")
                )
        if problems:
            raise FeatureSpecError("incompatible features: " + " | ".join(problems))


SPEC: Final = FeatureSpec()


def check_compatible(names: Sequence[str], version: str, spec: FeatureSpec = SPEC) -> None:
    """Refuse a model whose feature names/order/version differ from the engine's (see module doc)."""
    spec.check_compatible(names, version)
