"""The model registry: immutable, checksummed model versions in plain folders.

Layout (``root`` is a parameter; the live worker and the CLI pass ``settings.data_dir / "models"``)::

    <root>/<version>/model.onnx      the graph, byte for byte what was exported and checked
    <root>/<version>/manifest.json   :class:`Manifest`: what the graph expects and how to use it

A version is written into a hidden temporary folder beside the others and renamed into place in one
step, so a reader sees either nothing or a complete version; a name is never reused. Only the
manifest's ``status`` may change later (:meth:`Registry.set_status`, an atomic file replace). New
thresholds make a new version that points at its parent (:meth:`Registry.with_thresholds`), so a
verdict's ``model_version`` always names one exact (graph, thresholds) pair.

:meth:`Registry.load` is the gate before scoring: it recomputes the ONNX file's SHA-256 against the
manifest (:class:`~models.exceptions.ModelIntegrityError` names expected and actual) and checks the
feature names, order and version against the engine's spec
(:class:`~models.exceptions.FeatureMismatch`, a ``FeatureSpecError``). Registering does not demand
the engine's current spec, so versions trained on an older spec stay readable for audit and replay.

Preprocessing: feature transforms (``log1p``, the unit circle) happen in the feature engine, so a
manifest only carries standardisation. ``preprocessing["applied_in"]`` says where it happens:

* ``"graph"``: folded into the ONNX graph (the reference model's StandardScaler + MLP pipeline);
  ``mean``/``scale``, if present, are a record only and the scorer does not apply them again;
* ``"scorer"``: the scorer computes ``(x - mean) / scale`` before the graph; both are required;
* ``"none"``: the graph takes the engine's vector as it is.

Thresholds: a click is invalid when ``score >= threshold`` of its slice (``app.contracts.events.SLICES``),
else of ``default_threshold``. A ``"default"`` key in ``thresholds`` is accepted as an alias if it
equals ``default_threshold`` and is not stored twice.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import orjson

from app.contracts.events import SLICES, format_time
from app.features.spec import SPEC, FeatureSpec, FeatureSpecError
from models.exceptions import (
    DuplicateModel,
    FeatureMismatch,
    IncompatibleModel,
    ManifestError,
    ModelIntegrityError,
    ModelNotFound,
)

__all__ = [
    "MANIFEST_FORMAT",
    "MODEL_FILE",
    "MANIFEST_FILE",
    "STATUSES",
    "OUTPUT_KINDS",
    "PREPROCESSING_PLACES",
    "Manifest",
    "Registry",
    "sha256_hex",
    "now_rfc3339",
]

MANIFEST_FORMAT: Final = 1
MODEL_FILE: Final = "model.onnx"
MANIFEST_FILE: Final = "manifest.json"
STATUSES: Final[tuple[str, ...]] = ("candidate", "active", "retired", "rolled_back")
#: ``probabilities``: the output is P(bot): a [n, 2] tensor (column 1), a [n] or [n, 1] tensor, or a
#: ZipMap (sequence of {class: p}, class 1). ``logit``: [n] / [n, 1] raw logit (sigmoid applied) or
#: [n, 2] class logits (softmax, column 1).
OUTPUT_KINDS: Final[tuple[str, ...]] = ("probabilities", "logit")
PREPROCESSING_PLACES: Final[tuple[str, ...]] = ("graph", "scorer", "none")
#: Folder-safe, no leading dot (temporary folders start with one), at most 64 characters.
VERSION_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SHA_RE: Final = re.compile(r"^[0-9a-f]{64}$")
_TMP_PREFIX: Final = ".tmp-"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def now_rfc3339() -> str:
    """Current time as the manifests write it: RFC 3339 UTC with milliseconds."""
    return format_time(time.time_ns() // 1_000_000)


# --------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------


def _freeze(value: Any, path: str, problems: list[str]) -> Any:
    """JSON-like value -> read-only form (mappings -> MappingProxyType, lists -> tuples)."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                problems.append(f"{path}: key {k!r} is not a string")
                continue
            out[k] = _freeze(v, f"{path}.{k}", problems)
        return MappingProxyType(out)
    if isinstance(value, list | tuple):
        return tuple(_freeze(v, f"{path}[{i}]", problems) for i, v in enumerate(value))
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            problems.append(f"{path}: {value} is not a finite number (JSON has no NaN/inf)")
        return value
    problems.append(f"{path}: {type(value).__name__} is not a JSON value")
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _is_number(x: object) -> bool:
    return type(x) in (int, float) and math.isfinite(x)  # type: ignore[arg-type]


def _check_vector(prep: Mapping[str, Any], key: str, n: int, problems: list[str], positive: bool) -> None:
    vec = prep[key]
    if not isinstance(vec, tuple) or len(vec) != n or not all(_is_number(x) for x in vec):
        problems.append(f"preprocessing.{key}: expected {n} finite numbers (one per feature)")
    elif positive and not all(x > 0 for x in vec):
        problems.append(f"preprocessing.{key}: every value must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """What a model version is and how to use it; validated on construction (:class:`ManifestError`).

    Mappings are stored read-only (``MappingProxyType``, lists as tuples); :meth:`to_dict` gives
    plain JSON types back. ``created_at`` is RFC 3339 in UTC (``...Z`` or ``...+00:00``).
    """

    version: str
    feature_version: str
    feature_names: tuple[str, ...]
    onnx_sha256: str
    input_name: str
    output_name: str
    default_threshold: float
    train_start_ms: int
    train_end_ms: int
    created_at: str
    thresholds: Mapping[str, float] = field(default_factory=dict, hash=False)
    output_kind: str = "probabilities"
    preprocessing: Mapping[str, Any] = field(default_factory=lambda: {"applied_in": "none"}, hash=False)
    metrics: Mapping[str, Any] = field(default_factory=dict, hash=False)
    parent: str | None = None
    status: str = "candidate"
    format: int = MANIFEST_FORMAT

    def __post_init__(self) -> None:
        problems: list[str] = []
        s = object.__setattr__

        if not isinstance(self.version, str) or not VERSION_RE.match(self.version):
            problems.append(
                f"version: {self.version!r} must be 1-64 of [A-Za-z0-9._-], not starting with '.', '_' or '-'"
            )
        if self.format != MANIFEST_FORMAT or type(self.format) is not int:
            problems.append(f"format: {self.format!r} is not {MANIFEST_FORMAT} (this code reads only that)")
        if not isinstance(self.feature_version, str) or not self.feature_version:
            problems.append("feature_version: expected a non-empty string")

        names = self.feature_names
        if isinstance(names, str) or not isinstance(names, Sequence):
            problems.append("feature_names: expected a list of strings")
            names = ()
        else:
            names = tuple(names)
            s(self, "feature_names", names)
            if not names:
                problems.append("feature_names: empty")
            bad = [n for n in names if not isinstance(n, str) or not n]
            if bad:
                problems.append(f"feature_names: not non-empty strings: {bad[:5]!r}")
            dupes = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
            if dupes:
                problems.append(f"feature_names: repeated: {', '.join(dupes)}")

        if not isinstance(self.onnx_sha256, str) or not _SHA_RE.match(self.onnx_sha256):
            problems.append(f"onnx_sha256: {self.onnx_sha256!r} is not 64 lowercase hex digits")
        for name in ("input_name", "output_name"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                problems.append(f"{name}: expected a non-empty string")
        if self.output_kind not in OUTPUT_KINDS:
            problems.append(f"output_kind: {self.output_kind!r} not one of {', '.join(OUTPUT_KINDS)}")

        default_ok = _is_number(self.default_threshold) and 0.0 <= self.default_threshold <= 1.0
        if default_ok:
            s(self, "default_threshold", float(self.default_threshold))
        else:
            problems.append(f"default_threshold: {self.default_threshold!r} is not a number in [0, 1]")
        if not isinstance(self.thresholds, Mapping):
            problems.append("thresholds: expected an object {slice: threshold}")
            s(self, "thresholds", MappingProxyType({}))
        else:
            th: dict[str, float] = {}
            for key, value in self.thresholds.items():
                if not (_is_number(value) and 0.0 <= value <= 1.0):
                    problems.append(f"thresholds[{key!r}]: {value!r} is not a number in [0, 1]")
                elif key == "default":
                    if default_ok and float(value) != self.default_threshold:
                        problems.append(
                            f"thresholds['default'] = {value} disagrees with default_threshold = "
                            f"{self.default_threshold}"
                        )
                elif key not in SLICES:
                    problems.append(f"thresholds: unknown slice {key!r} (slices: {', '.join(SLICES)})")
                else:
                    th[key] = float(value)
            s(self, "thresholds", MappingProxyType(dict(sorted(th.items()))))

        for name in ("train_start_ms", "train_end_ms"):
            v = getattr(self, name)
            if type(v) is not int or v < 0:
                problems.append(f"{name}: {v!r} is not a non-negative integer (epoch ms)")
        if (
            type(self.train_start_ms) is int
            and type(self.train_end_ms) is int
            and self.train_start_ms > self.train_end_ms
        ):
            problems.append(f"training window: start {self.train_start_ms} is after end {self.train_end_ms}")

        if not isinstance(self.preprocessing, Mapping):
            problems.append("preprocessing: expected an object with 'applied_in'")
            s(self, "preprocessing", MappingProxyType({"applied_in": "none"}))
        else:
            prep = _freeze(self.preprocessing, "preprocessing", problems)
            s(self, "preprocessing", prep)
            place = prep.get("applied_in")
            if place not in PREPROCESSING_PLACES:
                problems.append(
                    f"preprocessing.applied_in: {place!r} not one of {', '.join(PREPROCESSING_PLACES)}"
                )
            if place == "scorer":
                for key in ("mean", "scale"):
                    if key not in prep:
                        problems.append(f"preprocessing.{key}: required when applied_in is 'scorer'")
            for key in ("mean", "scale"):
                if key in prep:
                    _check_vector(prep, key, len(names), problems, positive=key == "scale")

        if not isinstance(self.metrics, Mapping):
            problems.append("metrics: expected an object")
            s(self, "metrics", MappingProxyType({}))
        else:
            s(self, "metrics", _freeze(self.metrics, "metrics", problems))

        if self.parent is not None and (
            not isinstance(self.parent, str) or not VERSION_RE.match(self.parent)
        ):
            problems.append(f"parent: {self.parent!r} is not null or a version name")
        elif self.parent is not None and self.parent == self.version:
            problems.append("parent: a version cannot be its own parent")
        _check_created_at(self.created_at, problems)
        if self.status not in STATUSES:
            problems.append(f"status: {self.status!r} not one of {', '.join(STATUSES)}")

        if problems:
            who = self.version if isinstance(self.version, str) else "?"
            raise ManifestError(f"manifest of {who!r} is invalid: " + "; ".join(problems))

    # --- use ------------------------------------------------------------------------------------

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def created_at_ms(self) -> int:
        return int(datetime.fromisoformat(self.created_at).timestamp() * 1000)

    def threshold_for(self, slice_: str) -> float:
        """The slice's threshold, else the default."""
        return self.thresholds.get(slice_, self.default_threshold)

    def check_features(self, spec: FeatureSpec = SPEC) -> None:
        """Raise :class:`FeatureMismatch` unless this model was trained on ``spec`` exactly."""
        try:
            spec.check_compatible(self.feature_names, self.feature_version)
        except FeatureSpecError as exc:
            raise FeatureMismatch(f"model {self.version!r}: {exc}") from None

    # --- JSON -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, in reading order."""
        return {
            "format": self.format,
            "version": self.version,
            "status": self.status,
            "created_at": self.created_at,
            "parent": self.parent,
            "feature_version": self.feature_version,
            "feature_names": list(self.feature_names),
            "input_name": self.input_name,
            "output_name": self.output_name,
            "output_kind": self.output_kind,
            "preprocessing": _thaw(self.preprocessing),
            "default_threshold": self.default_threshold,
            "thresholds": dict(self.thresholds),
            "training_window": {"start_ms": self.train_start_ms, "end_ms": self.train_end_ms},
            "metrics": _thaw(self.metrics),
            "onnx_sha256": self.onnx_sha256,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Manifest:
        """Strict: every field of :meth:`to_dict` is required and no other is allowed."""
        if not isinstance(doc, Mapping):
            raise ManifestError(f"manifest: expected a JSON object, got {type(doc).__name__}")
        expected = set(_JSON_KEYS)
        missing = [k for k in _JSON_KEYS if k not in doc]
        unknown = sorted(set(doc) - expected)
        problems = []
        if missing:
            problems.append(f"missing field(s): {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown field(s): {', '.join(unknown)}")
        window = doc.get("training_window")
        if "training_window" in doc and (
            not isinstance(window, Mapping) or set(window) != {"start_ms", "end_ms"}
        ):
            problems.append("training_window: expected {start_ms, end_ms}")
        if problems:
            raise ManifestError(f"manifest of {doc.get('version', '?')!r} is invalid: " + "; ".join(problems))
        fn = doc["feature_names"]
        kwargs = {k: doc[k] for k in _JSON_KEYS if k != "training_window"}
        kwargs["feature_names"] = tuple(fn) if isinstance(fn, list) else fn
        return cls(train_start_ms=window["start_ms"], train_end_ms=window["end_ms"], **kwargs)

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ManifestError(f"manifest is not JSON: {exc}") from None
        return cls.from_dict(doc)


_JSON_KEYS: Final[tuple[str, ...]] = (
    "format",
    "version",
    "status",
    "created_at",
    "parent",
    "feature_version",
    "feature_names",
    "input_name",
    "output_name",
    "output_kind",
    "preprocessing",
    "default_threshold",
    "thresholds",
    "training_window",
    "metrics",
    "onnx_sha256",
)
if {f.name for f in fields(Manifest)} != (set(_JSON_KEYS) - {"training_window"}) | {
    "train_start_ms",
    "train_end_ms",
}:
    raise RuntimeError("Manifest fields and their JSON keys disagree")


def _check_created_at(value: object, problems: list[str]) -> None:
    if not isinstance(value, str) or len(value) > 40:
        problems.append(f"created_at: {value!r} is not an RFC 3339 string")
        return
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        problems.append(f"created_at: {value!r} is not RFC 3339")
        return
    if "T" not in value or dt.tzinfo is None or dt.utcoffset() != timedelta(0):
        problems.append(f"created_at: {value!r} must be RFC 3339 in UTC ('Z' or '+00:00')")


# --------------------------------------------------------------------------------------------------
# ONNX graph inspection (registration-time checks)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Io:
    name: str
    kind: str  # "tensor" or "sequence"/"map"/...
    elem_type: int  # onnx.TensorProto data type for tensors, else 0
    shape: tuple[int | str | None, ...]


def _graph_io(onnx_bytes: bytes) -> tuple[list[_Io], list[_Io]]:
    import onnx

    try:
        model = onnx.load_model_from_string(onnx_bytes)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ...
        raise IncompatibleModel(f"not a valid ONNX model: {type(exc).__name__}: {str(exc)[:300]}") from None
    inits = {i.name for i in model.graph.initializer}

    def io(v: Any) -> _Io:
        kind = v.type.WhichOneof("value") or "?"
        if kind == "tensor_type":
            t = v.type.tensor_type
            dims = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
            )
            return _Io(v.name, "tensor", t.elem_type, dims)
        return _Io(v.name, kind.removesuffix("_type"), 0, ())

    inputs = [io(v) for v in model.graph.input if v.name not in inits]
    outputs = [io(v) for v in model.graph.output]
    return inputs, outputs


_PREFERRED_OUTPUTS: Final = ("probabilities", "output_probability", "probability", "proba", "logit", "logits")


def _pick_io(
    onnx_bytes: bytes, n_features: int, input_name: str | None, output_name: str | None
) -> tuple[str, str]:
    """Check the graph against the manifest; fill in input/output names when not given."""
    inputs, outputs = _graph_io(onnx_bytes)
    if input_name is None:
        if len(inputs) != 1:
            raise IncompatibleModel(f"graph has {len(inputs)} inputs ({[i.name for i in inputs]}); name one")
        inp = inputs[0]
    else:
        match = [i for i in inputs if i.name == input_name]
        if not match:
            raise IncompatibleModel(
                f"input {input_name!r} not in the graph (inputs: {[i.name for i in inputs]})"
            )
        if len(inputs) != 1:
            raise IncompatibleModel(f"graph must have exactly one input, has {[i.name for i in inputs]}")
        inp = match[0]
    if inp.kind != "tensor" or inp.elem_type != 1 or len(inp.shape) != 2:
        raise IncompatibleModel(
            f"input {inp.name!r} must be a float32 [batch, {n_features}] tensor, got {inp.kind} "
            f"elem_type={inp.elem_type} shape={list(inp.shape)}"
        )
    width = inp.shape[1]
    if isinstance(width, int) and width != n_features:
        raise IncompatibleModel(
            f"input {inp.name!r} takes {width} features but the manifest lists {n_features}"
        )
    names = [o.name for o in outputs]
    if output_name is None:
        pick = next((n for n in _PREFERRED_OUTPUTS if n in names), None)
        if pick is None and len(names) == 1:
            pick = names[0]
        if pick is None:
            raise IncompatibleModel(f"cannot tell which output is the score among {names}; name one")
        output_name = pick
    elif output_name not in names:
        raise IncompatibleModel(f"output {output_name!r} not in the graph (outputs: {names})")
    return inp.name, output_name


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class Registry:
    """Model versions under ``root`` (see the module doc). Safe for concurrent readers; writers of
    distinct versions never collide, and two writers of one version: one wins, one gets
    :class:`DuplicateModel`."""

    def __init__(self, root: Path | str, *, spec: FeatureSpec = SPEC) -> None:
        self.root = Path(root)
        self.spec = spec

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    def path(self, version: str) -> Path:
        if not isinstance(version, str) or not VERSION_RE.match(version):
            raise ModelNotFound(f"{version!r} is not a valid version name")
        return self.root / version

    def exists(self, version: str) -> bool:
        return (self.path(version) / MANIFEST_FILE).is_file()

    # --- write ----------------------------------------------------------------------------------

    def register(
        self,
        onnx_model: bytes | Path | str,
        *,
        version: str,
        train_start_ms: int,
        train_end_ms: int,
        default_threshold: float | None = None,
        thresholds: Mapping[str, float] | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        parent: str | None = None,
        status: str = "candidate",
        feature_names: Sequence[str] | None = None,
        feature_version: str | None = None,
        input_name: str | None = None,
        output_name: str | None = None,
        output_kind: str = "probabilities",
        created_at: str | None = None,
    ) -> Manifest:
        """Store a new version and return its manifest.

        ``onnx_model`` is the serialized graph or a path to it. Feature names/version default to the
        engine's spec; input/output names default to what the graph declares (one input; the output
        named ``probabilities``, ``output_probability``, ... or the only one). ``default_threshold``
        may instead come as ``thresholds["default"]``. The graph is checked (valid ONNX, one float32
        [batch, F] input with F = len(feature_names), the output exists) before anything is written.
        """
        data = onnx_model if isinstance(onnx_model, bytes) else Path(onnx_model).read_bytes()
        names = tuple(feature_names) if feature_names is not None else self.spec.names
        th = dict(thresholds or {})
        if default_threshold is None:
            if "default" not in th:
                raise ManifestError(f"manifest of {version!r} is invalid: no default_threshold given")
            default_threshold = th["default"]
        in_name, out_name = _pick_io(data, len(names), input_name, output_name)
        manifest = Manifest(
            version=version,
            feature_version=feature_version if feature_version is not None else self.spec.version,
            feature_names=names,
            onnx_sha256=sha256_hex(data),
            input_name=in_name,
            output_name=out_name,
            output_kind=output_kind,
            default_threshold=default_threshold,  # type: ignore[arg-type]
            thresholds=th,
            preprocessing=preprocessing if preprocessing is not None else {"applied_in": "none"},
            train_start_ms=train_start_ms,
            train_end_ms=train_end_ms,
            metrics=metrics or {},
            parent=parent,
            status=status,
            created_at=created_at or now_rfc3339(),
        )
        if parent is not None and not self.exists(parent):
            raise ModelNotFound(f"parent {parent!r} of {version!r} is not in {self.root}")
        self._write_new(manifest, data)
        return manifest

    def _write_new(self, manifest: Manifest, data: bytes) -> None:
        final = self.path(manifest.version)
        if final.exists():
            raise DuplicateModel(f"version {manifest.version!r} already exists in {self.root}")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{_TMP_PREFIX}{manifest.version}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            _write_file(tmp / MODEL_FILE, data)
            _write_file(tmp / MANIFEST_FILE, manifest.to_json())
            _fsync_dir(tmp)
            if final.exists():  # lost a race since the first check
                raise DuplicateModel(f"version {manifest.version!r} already exists in {self.root}")
            try:
                os.rename(tmp, final)  # fails on a non-empty target: a concurrent writer won
            except OSError as exc:
                if final.exists():
                    raise DuplicateModel(
                        f"version {manifest.version!r} already exists in {self.root}"
                    ) from exc
                raise
            _fsync_dir(self.root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def set_status(self, version: str, status: str) -> Manifest:
        """Change a version's status (the only mutable field); returns the new manifest.

        The registry does not enforce "one active": promotion is announced on the control topic,
        which is what workers follow; the status here is the record of it.
        """
        current = self.manifest(version)
        updated = replace(current, status=status)  # validates the status
        folder = self.path(version)
        tmp = folder / f"{_TMP_PREFIX}{MANIFEST_FILE}-{uuid.uuid4().hex[:8]}"
        try:
            _write_file(tmp, updated.to_json())
            os.replace(tmp, folder / MANIFEST_FILE)
            _fsync_dir(folder)
        finally:
            tmp.unlink(missing_ok=True)
        return updated

    def with_thresholds(
        self,
        version: str,
        new_version: str,
        thresholds: Mapping[str, float],
        *,
        default_threshold: float | None = None,
        metrics: Mapping[str, Any] | None = None,
        created_at: str | None = None,
    ) -> Manifest:
        """A new candidate version: the same ONNX bytes (checksum verified), new thresholds.

        ``parent`` is ``version``; the default threshold is kept unless given (or given as
        ``thresholds["default"]``); metrics are kept unless given (calibration passes its own).
        """
        old, data = self._read_verified(version)
        th = dict(thresholds)
        if default_threshold is None:
            default_threshold = th.get("default", old.default_threshold)
        return self.register(
            data,
            version=new_version,
            train_start_ms=old.train_start_ms,
            train_end_ms=old.train_end_ms,
            default_threshold=default_threshold,
            thresholds=th,
            preprocessing=old.preprocessing,
            metrics=old.metrics if metrics is None else metrics,
            parent=old.version,
            status="candidate",
            feature_names=old.feature_names,
            feature_version=old.feature_version,
            input_name=old.input_name,
            output_name=old.output_name,
            output_kind=old.output_kind,
            created_at=created_at,
        )

    # --- read -----------------------------------------------------------------------------------

    def manifest(self, version: str) -> Manifest:
        """The version's manifest, validated, without reading the graph."""
        path = self.path(version) / MANIFEST_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ModelNotFound(f"no model version {version!r} in {self.root}") from None
        manifest = Manifest.from_json(raw)
        if manifest.version != version:
            raise ModelIntegrityError(f"folder {version!r} holds a manifest for version {manifest.version!r}")
        return manifest

    def _read_verified(self, version: str) -> tuple[Manifest, bytes]:
        manifest = self.manifest(version)
        try:
            data = (self.path(version) / MODEL_FILE).read_bytes()
        except FileNotFoundError:
            raise ModelIntegrityError(f"model {version!r}: {MODEL_FILE} is missing") from None
        actual = sha256_hex(data)
        if actual != manifest.onnx_sha256:
            raise ModelIntegrityError(
                f"model {version!r}: {MODEL_FILE} sha256 is {actual}, manifest expects "
                f"{manifest.onnx_sha256} ({len(data)} bytes read)"
            )
        return manifest, data

    def load(self, version: str) -> tuple[Manifest, bytes]:
        """Manifest and ONNX bytes, after the checksum and the feature-spec checks (module doc)."""
        manifest, data = self._read_verified(version)
        manifest.check_features(self.spec)
        return manifest, data

    def manifests(self, status: str | None = None) -> list[Manifest]:
        """Every version's manifest, oldest first (by created_at, then name)."""
        if status is not None and status not in STATUSES:
            raise ManifestError(f"status: {status!r} not one of {', '.join(STATUSES)}")
        if not self.root.is_dir():
            return []
        out = [
            self.manifest(p.name)
            for p in self.root.iterdir()
            if not p.name.startswith(".") and (p / MANIFEST_FILE).is_file()
        ]
        out.sort(key=lambda m: (m.created_at_ms, m.version))
        return [m for m in out if status is None or m.status == status]

    def versions(self, status: str | None = None) -> list[str]:
        """Version names, oldest first."""
        return [m.version for m in self.manifests(status)]

    def latest(self, status: str | None = None) -> Manifest | None:
        """The most recently created version (with that status), or None."""
        found = self.manifests(status)
        return found[-1] if found else None
