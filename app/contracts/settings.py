"""The one place that reads the environment.

Precedence: an explicit argument (CLI flag, ``Settings.from_env(**overrides)``) beats the environment,
which beats the default. Every field's comment names its variable, unit and default; the README's
configuration table says the same (a test keeps them in step).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from app.contracts.exceptions import ConfigError

__all__ = ["Settings", "ENV_PREFIX"]

ENV_PREFIX = "IVT_"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    """Typed, frozen configuration. Build it with :meth:`from_env`."""

    #: IVT_BOOTSTRAP_SERVERS: Kafka bootstrap servers, comma separated. Default ``127.0.0.1:9092``
    #: (the port ``ivt broker start`` listens on).
    bootstrap_servers: str = "127.0.0.1:9092"
    #: IVT_TOPIC_PREFIX: prefix put before every topic name, to run isolated copies side by side
    #: (tests use a fresh one each). Default empty.
    topic_prefix: str = ""
    #: IVT_APP_ID: Faust application id, also the consumer group and the changelog topic prefix.
    #: Default ``ivt``.
    app_id: str = "ivt"
    #: IVT_DATA_DIR: folder for worker state (RocksDB tables) and simulator output. Default ``./var``.
    data_dir: Path = field(default_factory=lambda: Path("var"))
    #: IVT_CLICK_PARTITIONS: partitions of ``clicks`` and of the stages keyed like it. Default 6.
    click_partitions: int = 6
    #: IVT_CLICKS_KEYED_BY_IP: ``true`` when every producer keys ``clicks`` by the click's IP, as the
    #: simulator does. Validation then runs inside the IP-counter stage and the repartition hop through
    #: ``clicks-by-ip`` is skipped; a click whose key is not its IP goes to the DLQ. Default false.
    clicks_keyed_by_ip: bool = False
    #: IVT_MAX_EVENT_BYTES: largest accepted event, in bytes; larger ones go to the DLQ. Default 8192.
    max_event_bytes: int = 8192
    #: IVT_BROKER_PORT: client port of the local broker (``ivt broker start``). Default 9092.
    broker_port: int = 9092
    #: IVT_BROKER_CONTROLLER_PORT: KRaft controller port of the local broker. Default 9093.
    broker_controller_port: int = 9093
    #: IVT_BROKER_HEAP: JVM heap of the local broker, as java's -Xmx takes it. Default ``768m``.
    broker_heap: str = "768m"
    #: IVT_KAFKA_VERSION: Apache Kafka version the local broker runs (jars from Maven). Default ``4.1.1``.
    kafka_version: str = "4.1.1"
    #: IVT_CACHE_DIR: where the broker jars and local broker state live. Default ``./.cache``.
    cache_dir: Path = field(default_factory=lambda: Path(".cache"))
    #: IVT_LOG_LEVEL: log level of workers and tools. Default ``info``.
    log_level: str = "info"
    #: IVT_MODEL_DIR: model registry folder (one sub-folder per version). Default ``$IVT_DATA_DIR/models``.
    model_dir: Path | None = None
    #: IVT_MODEL_VERSION: model version the worker serves. Default empty: the newest ``active`` one
    #: (a reference model is registered when the registry is empty).
    model_version: str = ""
    #: IVT_ONNX_PROVIDER: ``auto`` (CUDA when it really runs, else CPU), ``cpu`` or ``cuda``. Default ``auto``.
    onnx_provider: str = "auto"
    #: IVT_BATCH_MAX_EVENTS: largest scoring micro-batch, in clicks. Default 32.
    batch_max_events: int = 32
    #: IVT_BATCH_MAX_WAIT_MS: longest a click waits for its micro-batch to fill, in ms. Default 5.
    batch_max_wait_ms: float = 5.0
    #: IVT_FETCH_MAX_WAIT_MS: longest the broker holds a worker's fetch when it has nothing new, in ms
    #: (Faust fixes 1500, which stalled the worker's next stage). Default 20.
    fetch_max_wait_ms: int = 20
    #: IVT_SESSION_TIMEOUT_S: seconds without a heartbeat before the group gives a worker's
    #: partitions to the others. A killed worker's partitions, and the worker restarted in its place,
    #: wait this long. The broker accepts 6-1800. Default 60 (Faust's).
    session_timeout_s: float = 60.0
    #: IVT_TABLE_STANDBY_REPLICAS: standby copies of each table partition kept warm on other workers of
    #: the group, for a fast take-over. ``ivt worker --split-stages`` runs its processes with 0 (see
    #: app/cli/worker.py). Default 1 (Faust's).
    table_standby_replicas: int = 1
    #: IVT_COMPILED_FEATURES: ``auto`` runs the feature engine compiled with mypyc when ``make install``
    #: built it from the current sources, ``off`` its Python modules. Read by app/features/compiled.py
    #: when the package is imported. Default ``auto``.
    compiled_features: str = "auto"
    #: IVT_COMPILED_DIR: where the compiled feature engine is built and looked for. Default empty:
    #: ``build/mypyc`` in the repository.
    compiled_dir: Path | None = None
    #: IVT_ROCKSDB_BLOCK_CACHE_MB: RocksDB block cache per table partition, MiB (Faust's default is
    #: 2 GiB each, which grows with tables x partitions). Default 8.
    rocksdb_block_cache_mb: int = 8
    #: IVT_ROCKSDB_WRITE_BUFFER_MB: RocksDB write buffer per table partition, MiB (two of them). Default 4.
    rocksdb_write_buffer_mb: int = 4
    #: IVT_STATE_SWEEP_S: seconds between two sweeps of a table partition, in event time and in wall
    #: time both; a sweep deletes keys idle for longer than the feature state TTL (25 h) plus an hour.
    #: Default 300.
    state_sweep_s: float = 300.0
    #: IVT_REORDER_MAX_WAIT_MS: longest a click waits, in wall time, for every partition of the IP
    #: stage to pass its event time, so the user and session state sees clicks in event-time order
    #: (agents/ordering.py); 0 turns the ordering off (arrival order). Default 1000.
    reorder_max_wait_ms: float = 1000.0
    #: IVT_REPLAY_NICE: niceness the replay worker adds to itself (0-19), so the live worker wins the
    #: CPU whenever both want it. Default 19 (the lowest priority).
    replay_nice: int = 19
    #: IVT_REPLAY_LOOKBACK_S: default look-back, in seconds of clicks before a recompute job's range,
    #: that warms its counters up (25 h covers the longest window and the state TTL). Default 90000.
    replay_lookback_s: float = 90000.0
    #: IVT_REPLAY_LATENESS_S: slack, in seconds, around an event-time range when it is resolved to
    #: offsets through record timestamps (and before the first click when verdicts are indexed).
    #: Default 300.
    replay_lateness_s: float = 300.0
    #: IVT_REPLAY_CHUNK_CLICKS: clicks a replay job scores in one ONNX call and publishes before it
    #: checkpoints its progress. Default 5000.
    replay_chunk_clicks: int = 5000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``IVT_*`` variables from ``env`` (default ``os.environ``); ``overrides`` win."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in overrides and overrides[f.name] is not None:
                values[f.name] = overrides[f.name]
                continue
            raw = source.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, f.type, raw)
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        settings = cls(**values)
        settings.validate()
        return settings

    @property
    def registry_dir(self) -> Path:
        return self.model_dir if self.model_dir is not None else self.data_dir / "models"

    def validate(self) -> None:
        if self.onnx_provider not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"IVT_ONNX_PROVIDER must be auto, cpu or cuda, got {self.onnx_provider!r}")
        if self.batch_max_events < 1 or self.batch_max_wait_ms < 0:
            raise ConfigError("IVT_BATCH_MAX_EVENTS must be >= 1 and IVT_BATCH_MAX_WAIT_MS >= 0")
        if not 6 <= self.session_timeout_s <= 1800:
            raise ConfigError(
                f"IVT_SESSION_TIMEOUT_S must be within 6-1800 (the broker's limits), got {self.session_timeout_s}"
            )
        if self.compiled_features not in ("auto", "off"):
            raise ConfigError(f"IVT_COMPILED_FEATURES must be auto or off, got {self.compiled_features!r}")
        if self.table_standby_replicas < 0:
            raise ConfigError(f"IVT_TABLE_STANDBY_REPLICAS must be >= 0, got {self.table_standby_replicas}")
        if self.fetch_max_wait_ms < 0:
            raise ConfigError(f"IVT_FETCH_MAX_WAIT_MS must be >= 0, got {self.fetch_max_wait_ms}")
        if self.reorder_max_wait_ms < 0:
            raise ConfigError(f"IVT_REORDER_MAX_WAIT_MS must be >= 0, got {self.reorder_max_wait_ms}")
        if self.click_partitions < 1:
            raise ConfigError("IVT_CLICK_PARTITIONS must be >= 1")
        if self.max_event_bytes < 256:
            raise ConfigError("IVT_MAX_EVENT_BYTES must be >= 256")
        if not 0 <= self.replay_nice <= 19:
            raise ConfigError(f"IVT_REPLAY_NICE must be 0..19, got {self.replay_nice}")
        if self.replay_lookback_s < 0 or self.replay_lateness_s < 0 or self.replay_chunk_clicks < 1:
            raise ConfigError(
                "IVT_REPLAY_LOOKBACK_S and IVT_REPLAY_LATENESS_S must be >= 0, IVT_REPLAY_CHUNK_CLICKS >= 1"
            )
        for name in ("broker_port", "broker_controller_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ConfigError(f"IVT_{name.upper()} must be a TCP port, got {port}")

    def to_env(self) -> dict[str, str]:
        """The ``IVT_*`` variables that reproduce these settings in a child process."""
        return {
            ENV_PREFIX + f.name.upper(): "" if getattr(self, f.name) is None else str(getattr(self, f.name))
            for f in fields(self)
        }

    def topic(self, base: str) -> str:
        """The real topic name for a base name from :mod:`app.contracts.topics`."""
        return f"{self.topic_prefix}{base}"


def _parse(name: str, annotation: Any, raw: str) -> Any:
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    var = ENV_PREFIX + name.upper()
    if kind == "int":
        try:
            return int(raw)
        except ValueError as exc:
            raise ConfigError(f"{var} must be an integer, got {raw!r}") from exc
    if kind == "float":
        try:
            return float(raw)
        except ValueError as exc:
            raise ConfigError(f"{var} must be a number, got {raw!r}") from exc
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{var} must be true/false, got {raw!r}")
    if kind in ("Path", "Path | None"):
        return Path(raw)
    return raw
