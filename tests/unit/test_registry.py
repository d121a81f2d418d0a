"""Model registry: manifest validation and JSON round trip, atomic writes, integrity and spec checks."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.contracts.events import SLICES
from app.features import FEATURE_NAMES, FEATURE_VERSION, FeatureSpecError
from models.exceptions import (
    DuplicateModel,
    FeatureMismatch,
    IncompatibleModel,
    ManifestError,
    ModelError,
    ModelIntegrityError,
    ModelNotFound,
)
from models.registry import MANIFEST_FILE, MODEL_FILE, Manifest, Registry
from models.tiny import ReferenceModel, build_reference_model, fit_reference

SHA = "0" * 64


@pytest.fixture(scope="module")
def ref() -> ReferenceModel:
    return fit_reference()


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models")


def register(reg: Registry, ref: ReferenceModel, version: str, **kw: Any) -> Manifest:
    args: dict[str, Any] = {
        "version": version,
        "train_start_ms": 1_000,
        "train_end_ms": 2_000,
        "default_threshold": 0.5,
        "preprocessing": ref.preprocessing,
        "metrics": {"auc": 0.9},
    }
    args.update(kw)
    return reg.register(ref.onnx_bytes, **args)


def manifest(**kw: Any) -> Manifest:
    args: dict[str, Any] = {
        "version": "m-1",
        "feature_version": FEATURE_VERSION,
        "feature_names": FEATURE_NAMES,
        "onnx_sha256": SHA,
        "input_name": "features",
        "output_name": "probabilities",
        "default_threshold": 0.5,
        "train_start_ms": 0,
        "train_end_ms": 10,
        "created_at": "2026-11-22T10:00:00.000Z",
    }
    args.update(kw)
    return Manifest(**args)


# --------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------


def test_manifest_json_round_trip_and_read_only() -> None:
    m = manifest(
        thresholds={"mobile/anon": 0.3, "desktop/in": 0.7},
        preprocessing={"applied_in": "graph", "mean": [0.0] * 32, "scale": [1.0] * 32},
        metrics={"auc": 0.91, "per_slice": {"app/in": {"ivr": 0.1}}, "curve": [1, 2, 3]},
        parent="m-0",
        status="active",
    )
    back = Manifest.from_json(m.to_json())
    assert back == m
    assert back.to_json() == m.to_json()
    assert list(back.thresholds) == ["desktop/in", "mobile/anon"]  # stored sorted
    with pytest.raises(TypeError):
        m.thresholds["app/in"] = 0.1  # type: ignore[index]
    with pytest.raises(TypeError):
        m.metrics["per_slice"]["app/in"]["ivr"] = 0.2  # type: ignore[index]
    assert hash(m) == hash(back)
    assert m.threshold_for("mobile/anon") == 0.3 and m.threshold_for("app/anon") == 0.5


def test_manifest_json_has_every_documented_field() -> None:
    doc = orjson.loads(manifest().to_json())
    assert set(doc) == {
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
    }
    assert doc["training_window"] == {"start_ms": 0, "end_ms": 10}


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"version": "../evil"}, "version"),
        ({"version": ".hidden"}, "version"),
        ({"version": ""}, "version"),
        ({"feature_names": ("a", "a")}, "repeated: a"),
        ({"feature_names": ()}, "feature_names: empty"),
        ({"onnx_sha256": "ABC"}, "onnx_sha256"),
        ({"default_threshold": 1.5}, "default_threshold"),
        ({"default_threshold": True}, "default_threshold"),
        ({"default_threshold": float("nan")}, "default_threshold"),
        ({"thresholds": {"tv/in": 0.5}}, "unknown slice 'tv/in'"),
        ({"thresholds": {"app/in": -0.1}}, "thresholds['app/in']"),
        ({"thresholds": {"default": 0.4}}, "disagrees with default_threshold"),
        ({"train_start_ms": 20, "train_end_ms": 10}, "start 20 is after end 10"),
        ({"train_start_ms": 1.5}, "train_start_ms"),
        ({"created_at": "2026-11-22T10:00:00"}, "UTC"),
        ({"created_at": "2026-11-22T10:00:00+02:00"}, "UTC"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"status": "live"}, "status"),
        ({"parent": "m-1"}, "own parent"),
        ({"output_kind": "label"}, "output_kind"),
        ({"preprocessing": {"applied_in": "somewhere"}}, "applied_in"),
        ({"preprocessing": {"applied_in": "scorer"}}, "preprocessing.mean: required"),
        ({"preprocessing": {"applied_in": "scorer", "mean": [0.0] * 32, "scale": [0.0] * 32}}, "> 0"),
        ({"preprocessing": {"applied_in": "graph", "mean": [0.0] * 3}}, "expected 32 finite numbers"),
        ({"metrics": {"auc": float("inf")}}, "metrics.auc"),
        ({"metrics": {"obj": object()}}, "not a JSON value"),
        ({"format": 2}, "format"),
    ],
)
def test_manifest_validation_names_the_problem(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(ManifestError, match=None) as info:
        manifest(**changes)
    assert needle in str(info.value), str(info.value)


def test_manifest_lists_every_problem_at_once() -> None:
    with pytest.raises(ManifestError) as info:
        manifest(status="x", default_threshold=2.0, onnx_sha256="nope")
    msg = str(info.value)
    assert "status" in msg and "default_threshold" in msg and "onnx_sha256" in msg


def test_default_alias_in_thresholds_is_folded() -> None:
    m = manifest(thresholds={"default": 0.5, "app/in": 0.2})
    assert dict(m.thresholds) == {"app/in": 0.2}


def test_from_json_is_strict_about_fields() -> None:
    doc = orjson.loads(manifest().to_json())
    doc["surprise"] = 1
    del doc["status"]
    del doc["onnx_sha256"]
    with pytest.raises(ManifestError) as info:
        Manifest.from_json(orjson.dumps(doc))
    msg = str(info.value)
    assert "missing field(s): status, onnx_sha256" in msg and "unknown field(s): surprise" in msg
    with pytest.raises(ManifestError, match="not JSON"):
        Manifest.from_json(b"{nope")
    with pytest.raises(ManifestError, match="JSON object"):
        Manifest.from_json(b"[]")
    doc = orjson.loads(manifest().to_json())
    doc["training_window"] = {"start_ms": 0}
    with pytest.raises(ManifestError, match="training_window"):
        Manifest.from_json(orjson.dumps(doc))


@settings(max_examples=60, deadline=None)
@given(
    thresholds=st.dictionaries(st.sampled_from(SLICES), st.floats(0, 1)),
    default=st.floats(0, 1),
    metrics=st.dictionaries(
        st.text(max_size=8),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**53), 2**53),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=8),
        ),
        max_size=5,
    ),
    status=st.sampled_from(("candidate", "active", "retired", "rolled_back")),
)
def test_property_json_round_trip(
    thresholds: dict[str, float], default: float, metrics: dict[str, Any], status: str
) -> None:
    m = manifest(thresholds=thresholds, default_threshold=default, metrics=metrics, status=status)
    assert Manifest.from_json(m.to_json()) == m


def test_exception_tree() -> None:
    assert issubclass(FeatureMismatch, FeatureSpecError) and issubclass(FeatureMismatch, IncompatibleModel)
    assert issubclass(ModelIntegrityError, ModelError) and issubclass(ModelNotFound, LookupError)
    assert issubclass(ManifestError, ValueError)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def test_register_then_load_round_trip(reg: Registry, ref: ReferenceModel) -> None:
    m = register(reg, ref, "v1", thresholds={"app/anon": 0.25})
    assert m.onnx_sha256 == hashlib.sha256(ref.onnx_bytes).hexdigest()
    assert (m.input_name, m.output_name, m.status, m.parent) == (
        "features",
        "probabilities",
        "candidate",
        None,
    )
    assert m.feature_names == FEATURE_NAMES and m.feature_version == FEATURE_VERSION
    loaded, data = reg.load("v1")
    assert loaded == m and data == ref.onnx_bytes
    assert sorted(p.name for p in (reg.root / "v1").iterdir()) == [MANIFEST_FILE, MODEL_FILE]
    assert reg.versions() == ["v1"] and reg.exists("v1") and not reg.exists("v2")


def test_register_from_a_path(reg: Registry, ref: ReferenceModel, tmp_path: Path) -> None:
    path = tmp_path / "exported.onnx"
    path.write_bytes(ref.onnx_bytes)
    m = reg.register(path, version="from-path", train_start_ms=0, train_end_ms=0, default_threshold=0.5)
    assert m.onnx_sha256 == hashlib.sha256(ref.onnx_bytes).hexdigest()
    assert reg.load("from-path")[1] == ref.onnx_bytes
    str_m = reg.register(
        str(path), version="from-str", train_start_ms=0, train_end_ms=0, default_threshold=0.5
    )
    assert str_m.onnx_sha256 == m.onnx_sha256


def test_duplicate_version_is_refused_and_nothing_is_left_behind(reg: Registry, ref: ReferenceModel) -> None:
    register(reg, ref, "v1")
    before = (reg.root / "v1" / MANIFEST_FILE).read_bytes()
    with pytest.raises(DuplicateModel, match="'v1' already exists"):
        register(reg, ref, "v1", default_threshold=0.9)
    assert (reg.root / "v1" / MANIFEST_FILE).read_bytes() == before
    assert [p.name for p in reg.root.iterdir()] == ["v1"]


def test_a_failed_write_leaves_no_version_and_no_temp(
    reg: Registry, ref: ReferenceModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "rename", boom)
    with pytest.raises(OSError, match="disk full"):
        register(reg, ref, "v1")
    monkeypatch.undo()
    assert list(reg.root.iterdir()) == []
    assert reg.versions() == []


def test_registration_checks_the_graph(reg: Registry, ref: ReferenceModel) -> None:
    with pytest.raises(IncompatibleModel, match="takes 32 features but the manifest lists 31"):
        register(reg, ref, "v1", feature_names=FEATURE_NAMES[:-1])
    with pytest.raises(IncompatibleModel, match="input 'x' not in the graph"):
        register(reg, ref, "v1", input_name="x")
    with pytest.raises(IncompatibleModel, match="output 'score' not in the graph"):
        register(reg, ref, "v1", output_name="score")
    with pytest.raises(IncompatibleModel, match="not a valid ONNX model"):
        reg.register(b"not onnx", version="v1", train_start_ms=0, train_end_ms=0, default_threshold=0.5)
    with pytest.raises(ManifestError, match="no default_threshold"):
        register(reg, ref, "v1", default_threshold=None)
    with pytest.raises(ModelNotFound, match="parent 'ghost'"):
        register(reg, ref, "v1", parent="ghost")
    assert reg.versions() == []


def test_default_threshold_from_thresholds(reg: Registry, ref: ReferenceModel) -> None:
    m = register(reg, ref, "v1", default_threshold=None, thresholds={"default": 0.6, "app/in": 0.4})
    assert m.default_threshold == 0.6 and dict(m.thresholds) == {"app/in": 0.4}


def test_checksum_tamper_is_refused_naming_expected_and_actual(reg: Registry, ref: ReferenceModel) -> None:
    m = register(reg, ref, "v1")
    path = reg.root / "v1" / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(ModelIntegrityError) as info:
        reg.load("v1")
    assert m.onnx_sha256 in str(info.value) and actual in str(info.value)
    path.unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        reg.load("v1")


def test_manifest_in_the_wrong_folder_is_refused(reg: Registry, ref: ReferenceModel) -> None:
    register(reg, ref, "v1")
    (reg.root / "v1").rename(reg.root / "v9")
    with pytest.raises(ModelIntegrityError, match="folder 'v9' holds a manifest for version 'v1'"):
        reg.load("v9")


def test_load_checks_the_feature_spec(reg: Registry, ref: ReferenceModel) -> None:
    swapped = list(FEATURE_NAMES)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    register(reg, ref, "order", feature_names=swapped)
    with pytest.raises(FeatureSpecError, match="misordered 2"):
        reg.load("order")
    register(reg, ref, "old", feature_version="v0")
    with pytest.raises(FeatureMismatch, match="feature version 'v0'"):
        reg.load("old")
    renamed = list(FEATURE_NAMES)
    renamed[-1] = "device_tv"
    register(reg, ref, "renamed", feature_names=renamed)
    with pytest.raises(FeatureMismatch, match="missing 1: device_app.*extra 1: device_tv"):
        reg.load("renamed")
    assert reg.manifest("old").feature_version == "v0"  # still readable for audit


def test_missing_and_invalid_names(reg: Registry) -> None:
    with pytest.raises(ModelNotFound, match="no model version 'ghost'"):
        reg.load("ghost")
    with pytest.raises(ModelNotFound):
        reg.load("../etc")
    assert reg.versions() == [] and reg.latest() is None


def test_corrupt_manifest_is_a_manifest_error(reg: Registry, ref: ReferenceModel) -> None:
    register(reg, ref, "v1")
    (reg.root / "v1" / MANIFEST_FILE).write_text('{"version": "v1"}')
    with pytest.raises(ManifestError, match="missing field"):
        reg.load("v1")


def test_versions_latest_and_status(reg: Registry, ref: ReferenceModel) -> None:
    register(reg, ref, "b", created_at="2026-11-20T00:00:00.000Z")
    register(reg, ref, "a", created_at="2026-11-21T00:00:00.000Z")
    register(reg, ref, "c", created_at="2026-11-21T00:00:00.000Z")
    (reg.root / ".tmp-half-written").mkdir()  # an interrupted writer's leftovers are not versions
    assert reg.versions() == ["b", "a", "c"]
    assert reg.latest().version == "c"  # type: ignore[union-attr]
    assert reg.latest("active") is None
    updated = reg.set_status("b", "active")
    assert updated.status == "active" and reg.manifest("b") == updated
    assert reg.latest("active").version == "b"  # type: ignore[union-attr]
    assert reg.versions("candidate") == ["a", "c"]
    _, data = reg.load("b")  # the graph is untouched by a status change
    assert data == ref.onnx_bytes
    with pytest.raises(ManifestError, match="status"):
        reg.set_status("b", "promoted")
    with pytest.raises(ManifestError, match="status"):
        reg.versions("promoted")
    with pytest.raises(ModelNotFound):
        reg.set_status("ghost", "active")
    assert sorted(p.name for p in (reg.root / "b").iterdir()) == [MANIFEST_FILE, MODEL_FILE]


def test_with_thresholds_makes_a_child_version(reg: Registry, ref: ReferenceModel) -> None:
    parent = register(reg, ref, "v1", thresholds={"app/in": 0.4}, status="active")
    child = reg.with_thresholds("v1", "v1-cal", {"mobile/anon": 0.2, "desktop/in": 0.8})
    assert child.parent == "v1" and child.status == "candidate"
    assert child.onnx_sha256 == parent.onnx_sha256
    assert dict(child.thresholds) == {"desktop/in": 0.8, "mobile/anon": 0.2}
    assert child.default_threshold == parent.default_threshold
    assert child.metrics == parent.metrics and child.preprocessing == parent.preprocessing
    assert reg.load("v1-cal")[1] == ref.onnx_bytes
    assert reg.manifest("v1") == parent  # the parent is untouched
    other = reg.with_thresholds("v1", "v1-cal2", {"default": 0.7}, metrics={"fpr": 0.01})
    assert other.default_threshold == 0.7 and dict(other.metrics) == {"fpr": 0.01}
    with pytest.raises(ManifestError, match="unknown slice"):
        reg.with_thresholds("v1", "v1-bad", {"nowhere": 0.1})
    with pytest.raises(DuplicateModel):
        reg.with_thresholds("v1", "v1-cal", {})
    (reg.root / "v1" / MODEL_FILE).write_bytes(b"tampered")
    with pytest.raises(ModelIntegrityError):
        reg.with_thresholds("v1", "v1-cal3", {})


def test_build_reference_model_registers_a_checked_export(reg: Registry) -> None:
    m = build_reference_model(reg, thresholds={"app/anon": 0.4})
    assert m.version == "ref-0001" and m.preprocessing["applied_in"] == "graph"
    assert m.metrics["onnx_max_abs_diff"] <= 1e-4
    assert m.metrics["holdout_accuracy"] > 0.9
    assert reg.load("ref-0001")[0] == m
    assert replace(m, status="active").status == "active"


def test_reference_model_bootstrap_tolerates_a_process_that_registered_it_first(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two worker processes on an empty registry: the one that loses the race serves the winner's."""
    from models.tiny import REFERENCE_VERSION, ensure_reference_model

    winner = ensure_reference_model(reg)
    monkeypatch.setattr(Registry, "exists", lambda self, version: False)  # checked before the other wrote
    assert ensure_reference_model(reg) == winner
    assert [p.name for p in reg.root.iterdir()] == [REFERENCE_VERSION]  # one version, no temp left
