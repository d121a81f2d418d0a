"""Feature engine: click + per-key state -> fixed, versioned float32 feature vector (after SLIDR).

The same code serves the live agents (:func:`ip_stage`, :func:`entity_stage`, state as table bytes)
and offline dataset building and replay (:class:`OfflineFeatureEngine`). Definitions and the reasons
behind them are in the modules' docstrings: :mod:`.spec` (names, version, transforms),
:mod:`.buckets` (event-time windows), :mod:`.distinct` (HLL distinct counts), :mod:`.state` (what
each table holds, how it stays bounded), :mod:`.engine` (each feature's definition).

The first four run compiled to C when ``make install`` could build them and they are current
(:mod:`.compiled`); :data:`COMPILED` says which ran.
"""

from app.features.compiled import use_compiled_modules

#: Whether the engine's modules are the mypyc-compiled ones (else the Python sources).
COMPILED: bool = use_compiled_modules(__path__)

from app.features.buckets import BucketCounter, Level  # noqa: E402
from app.features.distinct import DistinctWindows  # noqa: E402
from app.features.engine import (  # noqa: E402
    N_FEATURES,
    N_IP_FEATURES,
    OfflineFeatureEngine,
    entity_stage,
    ip_stage,
)
from app.features.spec import (  # noqa: E402
    ENTITY_FEATURE_NAMES,
    FEATURE_DOCS,
    FEATURE_NAMES,
    FEATURE_VERSION,
    IP_FEATURE_NAMES,
    LOG1P_FEATURES,
    SPEC,
    FeatureSpec,
    FeatureSpecError,
    StateDecodeError,
    check_compatible,
)
from app.features.state import IDLE_TTL_MS, IpState, SessionState, UserState  # noqa: E402

__all__ = [
    "COMPILED",
    "FEATURE_VERSION",
    "FEATURE_NAMES",
    "IP_FEATURE_NAMES",
    "ENTITY_FEATURE_NAMES",
    "FEATURE_DOCS",
    "LOG1P_FEATURES",
    "N_FEATURES",
    "N_IP_FEATURES",
    "SPEC",
    "FeatureSpec",
    "check_compatible",
    "FeatureSpecError",
    "StateDecodeError",
    "ip_stage",
    "entity_stage",
    "OfflineFeatureEngine",
    "IpState",
    "UserState",
    "SessionState",
    "IDLE_TTL_MS",
    "BucketCounter",
    "Level",
    "DistinctWindows",
]
