"""Scorer contract: what every model version must satisfy before and while it scores live clicks.

Pure, deterministic, input untouched, refuses what does not fit the feature spec or its manifest,
loads back from the registry to identical outputs, per-slice thresholds with a default fallback;
and the output forms it accepts (probability tensor, ZipMap, logits). Here there is no GPU, so the
provider reported must be CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper

import models.scorer as scorer_mod
from app.contracts.events import SLICES
from app.features import FEATURE_NAMES, FEATURE_VERSION, FeatureSpecError
from models.exceptions import (
    FeatureMismatch,
    IncompatibleModel,
    ModelIntegrityError,
    ProviderUnavailable,
)
from models.registry import MODEL_FILE, Manifest, Registry, sha256_hex
from models.scorer import CPU, Scorer
from models.tiny import build_reference_model, fit_reference, reference_dataset, reference_pipeline

F = len(FEATURE_NAMES)
NO_GPU = not Path("/dev/nvidia0").exists()


def make_manifest(data: bytes, **kw: Any) -> Manifest:
    args: dict[str, Any] = {
        "version": "t-1",
        "feature_version": FEATURE_VERSION,
        "feature_names": FEATURE_NAMES,
        "onnx_sha256": sha256_hex(data),
        "input_name": "features",
        "output_name": "probabilities",
        "default_threshold": 0.5,
        "train_start_ms": 0,
        "train_end_ms": 0,
        "created_at": "2026-11-22T10:00:00.000Z",
    }
    args.update(kw)
    return Manifest(**args)


def linear_logit_onnx(
    weights: np.ndarray, bias: float, width: int | None = None, out_shape: str = "n1"
) -> bytes:
    """x [n, width] -> x @ w + b, as [n, 1] (``n1``), [n] (``n``) or [n, 2] class logits (``n2``)."""
    width = width or len(weights)
    w = helper.make_tensor("w", TensorProto.FLOAT, [width, 1], weights.astype(np.float32).ravel().tolist())
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [bias])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["z"])]
    if out_shape == "n1":
        nodes.append(helper.make_node("Identity", ["z"], ["logit"]))
        out = helper.make_tensor_value_info("logit", TensorProto.FLOAT, [None, 1])
    elif out_shape == "n":
        axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
        nodes.append(helper.make_node("Squeeze", ["z", "axes"], ["logit"]))
        out = helper.make_tensor_value_info("logit", TensorProto.FLOAT, [None])
    else:  # [n, 2]: class 0 logit 0, class 1 logit z
        nodes.append(helper.make_node("Mul", ["z", "zero"], ["z0"]))
        nodes.append(helper.make_node("Concat", ["z0", "z"], ["logit"], axis=1))
        out = helper.make_tensor_value_info("logit", TensorProto.FLOAT, [None, 2])
    inits = [w, b]
    if out_shape == "n":
        inits.append(axes)
    if out_shape == "n2":
        inits.append(helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, width])], [out], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def ref_scorer() -> Scorer:
    ref = fit_reference()
    m = make_manifest(ref.onnx_bytes, preprocessing=ref.preprocessing)
    return Scorer(m, ref.onnx_bytes, "cpu")


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return reference_dataset(300, seed=77)[0]


# --------------------------------------------------------------------------------------------------
# Providers
# --------------------------------------------------------------------------------------------------


def test_cpu_provider_and_session_settings(ref_scorer: Scorer) -> None:
    assert ref_scorer.provider == CPU
    assert ref_scorer.intra_op_threads == 1
    assert "t-1" in repr(ref_scorer) and CPU in repr(ref_scorer)


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present: auto may pick CUDA")
def test_auto_falls_back_to_cpu_when_cuda_cannot_run() -> None:
    ref = fit_reference()
    s = Scorer(make_manifest(ref.onnx_bytes), ref.onnx_bytes, "auto")
    assert s.provider == CPU
    assert scorer_mod.cuda_usable() is False  # probed once, remembered
    assert Scorer(make_manifest(ref.onnx_bytes), ref.onnx_bytes).provider == CPU


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present")
def test_auto_probes_cuda_quietly_and_explicit_cuda_keeps_onnxruntimes_reasons(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    ref = fit_reference()
    monkeypatch.setattr(scorer_mod, "_cuda_state", None)  # probe again in this test
    capfd.readouterr()
    assert Scorer(make_manifest(ref.onnx_bytes), ref.onnx_bytes, "auto").provider == CPU
    assert "CUDAExecutionProvider" not in capfd.readouterr().err  # only our own one-line warning
    monkeypatch.setattr(scorer_mod, "_cuda_state", None)
    with pytest.raises(ProviderUnavailable, match="CUDA requested"):
        Scorer(make_manifest(ref.onnx_bytes), ref.onnx_bytes, "cuda")
    if "CUDAExecutionProvider" in scorer_mod.ort.get_available_providers():  # the GPU build: ORT says why
        assert "CUDAExecutionProvider" in capfd.readouterr().err


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present")
def test_explicit_cuda_is_refused_without_a_gpu() -> None:
    ref = fit_reference()
    with pytest.raises(ProviderUnavailable, match="CUDA requested"):
        Scorer(make_manifest(ref.onnx_bytes), ref.onnx_bytes, "cuda")


def test_provider_arguments() -> None:
    ref = fit_reference()
    m = make_manifest(ref.onnx_bytes)
    assert Scorer(m, ref.onnx_bytes, [CPU]).provider == CPU
    with pytest.raises(ProviderUnavailable, match="NopeExecutionProvider"):
        Scorer(m, ref.onnx_bytes, ["NopeExecutionProvider"])
    with pytest.raises(ValueError, match="providers"):
        Scorer(m, ref.onnx_bytes, "tpu")
    with pytest.raises(ValueError, match="intra_op_threads"):
        Scorer(m, ref.onnx_bytes, "cpu", intra_op_threads=0)


# --------------------------------------------------------------------------------------------------
# Scoring contract
# --------------------------------------------------------------------------------------------------


def test_scores_match_the_sklearn_model(ref_scorer: Scorer, rows: np.ndarray) -> None:
    got = ref_scorer.score(rows)
    assert got.dtype == np.float32 and got.shape == (len(rows),)
    assert np.all((got >= 0) & (got <= 1))
    want = reference_pipeline().predict_proba(rows)[:, 1]
    assert np.max(np.abs(got - want)) <= 1e-4
    X, y = reference_dataset(300, seed=78)
    assert ((ref_scorer.score(X) >= 0.5) == y).mean() > 0.9  # it learnt the velocity rule


def test_scoring_does_not_mutate_input(ref_scorer: Scorer, rows: np.ndarray) -> None:
    before = rows.copy()
    ref_scorer.score(rows)
    assert np.array_equal(rows, before)
    frozen = rows.copy()
    frozen.setflags(write=False)  # a read-only view is fine: nothing writes to it
    assert np.array_equal(ref_scorer.score(frozen), ref_scorer.score(before))


def test_deterministic_and_batch_invariant(ref_scorer: Scorer, rows: np.ndarray) -> None:
    a = ref_scorer.score(rows)
    assert np.array_equal(a, ref_scorer.score(rows))
    one_by_one = np.concatenate([ref_scorer.score(rows[i : i + 1]) for i in range(len(rows))])
    assert np.max(np.abs(one_by_one - a)) <= 1e-6
    fortran = np.asfortranarray(rows)
    strided = np.repeat(rows, 2, axis=1)[:, ::2]
    assert np.array_equal(ref_scorer.score(fortran), a)
    assert np.array_equal(ref_scorer.score(strided), a)


def test_a_second_scorer_and_more_threads_agree(ref_scorer: Scorer, rows: np.ndarray) -> None:
    ref = fit_reference()
    other = Scorer(make_manifest(ref.onnx_bytes), ref.onnx_bytes, "cpu", intra_op_threads=2)
    assert np.max(np.abs(other.score(rows) - ref_scorer.score(rows))) <= 1e-6


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 40), st.just(F)),
        elements=st.floats(-20, 20, width=32),
    )
)
def test_property_pure_scoring(ref_scorer: Scorer, batch: np.ndarray) -> None:
    before = batch.copy()
    a = ref_scorer.score(batch)
    assert np.array_equal(batch, before)
    assert a.shape == (len(batch),) and np.all(np.isfinite(a)) and np.all((a >= 0) & (a <= 1))
    assert np.array_equal(a, ref_scorer.score(batch))


def test_bad_batches_are_refused(ref_scorer: Scorer, rows: np.ndarray) -> None:
    assert ref_scorer.score(np.empty((0, F), np.float32)).shape == (0,)
    with pytest.raises(ValueError, match=r"\[n, 32\].*\[5, 31\]"):
        ref_scorer.score(rows[:5, :31])
    with pytest.raises(ValueError):
        ref_scorer.score(rows[0])
    with pytest.raises(ValueError):
        ref_scorer.score(rows.tolist())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="float64"):
        ref_scorer.score(rows.astype(np.float64))


# --------------------------------------------------------------------------------------------------
# Refusals before scoring
# --------------------------------------------------------------------------------------------------


def test_wrong_feature_order_is_refused() -> None:
    ref = fit_reference()
    names = list(FEATURE_NAMES)
    names[12], names[13] = names[13], names[12]
    with pytest.raises(FeatureMismatch, match="misordered 2: user_velocity_10m at 12") as info:
        Scorer(make_manifest(ref.onnx_bytes, feature_names=names), ref.onnx_bytes, "cpu")
    assert isinstance(info.value, FeatureSpecError)


def test_missing_feature_is_refused() -> None:
    data = linear_logit_onnx(np.ones(F - 1), 0.0)
    m = make_manifest(
        data, feature_names=FEATURE_NAMES[:-1], input_name="x", output_name="logit", output_kind="logit"
    )
    with pytest.raises(FeatureMismatch, match="missing 1: device_app"):
        Scorer(m, data, "cpu")
    with pytest.raises(FeatureMismatch, match="feature version 'v0'"):
        Scorer(make_manifest(data, feature_version="v0"), data, "cpu")


def test_graph_width_must_match_the_manifest() -> None:
    data = linear_logit_onnx(np.ones(F - 1), 0.0)  # 31 inputs, manifest lists the 32 engine features
    m = make_manifest(data, input_name="x", output_name="logit", output_kind="logit")
    with pytest.raises(IncompatibleModel, match="takes 31 features, manifest lists 32"):
        Scorer(m, data, "cpu")


def test_graph_names_must_match_the_manifest() -> None:
    ref = fit_reference()
    with pytest.raises(
        IncompatibleModel, match=r"graph inputs \['features'\], manifest expects exactly \['x'\]"
    ):
        Scorer(make_manifest(ref.onnx_bytes, input_name="x"), ref.onnx_bytes, "cpu")
    with pytest.raises(IncompatibleModel, match="output 'score' not in the graph"):
        Scorer(make_manifest(ref.onnx_bytes, output_name="score"), ref.onnx_bytes, "cpu")
    with pytest.raises(IncompatibleModel, match="int64"):  # the label output is not a score
        Scorer(make_manifest(ref.onnx_bytes, output_name="label"), ref.onnx_bytes, "cpu")


def test_bytes_must_match_the_checksum() -> None:
    ref = fit_reference()
    m = make_manifest(ref.onnx_bytes)
    tampered = bytearray(ref.onnx_bytes)
    tampered[-10] ^= 0xFF
    with pytest.raises(ModelIntegrityError, match=m.onnx_sha256):
        Scorer(m, bytes(tampered), "cpu")


def test_a_logit_declared_as_probabilities_is_caught() -> None:
    data = linear_logit_onnx(np.zeros(F), 2.0)  # dummy batch gives 2.0: not a probability
    m = make_manifest(data, input_name="x", output_name="logit", output_kind="probabilities")
    with pytest.raises(IncompatibleModel, match="is the output a logit"):
        Scorer(m, data, "cpu")


# --------------------------------------------------------------------------------------------------
# Registry round trip
# --------------------------------------------------------------------------------------------------


def test_saved_model_loads_back_to_identical_outputs(
    tmp_path: Path, rows: np.ndarray, ref_scorer: Scorer
) -> None:
    reg = Registry(tmp_path)
    build_reference_model(reg, "ref-a")
    loaded = Scorer.from_registry(reg, "ref-a", "cpu")
    assert loaded.version == "ref-a" and loaded.provider == CPU
    assert np.array_equal(loaded.score(rows), ref_scorer.score(rows))
    again = Scorer.from_registry(Registry(tmp_path), "ref-a", "cpu")
    assert np.array_equal(again.score(rows), loaded.score(rows))


def test_tampered_model_on_disk_is_refused(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    build_reference_model(reg, "ref-a")
    path = tmp_path / "ref-a" / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256 is"):
        Scorer.from_registry(reg, "ref-a", "cpu")


# --------------------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------------------


def test_per_slice_thresholds_with_default_fallback(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    build_reference_model(reg, "ref-t", default_threshold=0.9, thresholds={"mobile/anon": 0.2, "app/in": 0.5})
    s = Scorer.from_registry(reg, "ref-t", "cpu")
    scores = np.array([0.5, 0.5, 0.5, 0.95, 0.2, 0.19999], dtype=np.float32)
    slices = ["mobile/anon", "desktop/in", "app/in", "desktop/anon", "mobile/anon", "mobile/anon"]
    invalid, thresholds = s.decide(scores, slices)
    assert invalid.tolist() == [True, False, True, True, True, False]  # score == threshold is invalid
    assert thresholds.tolist() == [0.2, 0.9, 0.5, 0.9, 0.2, 0.2]  # exact manifest values, for verdicts
    assert s.threshold_for("tv/in") == 0.9  # an unknown slice gets the default
    assert [s.threshold_for(x) for x in SLICES] == [s.manifest.threshold_for(x) for x in SLICES]
    empty_invalid, empty_th = s.decide(np.empty(0, np.float32), [])
    assert empty_invalid.shape == empty_th.shape == (0,)
    with pytest.raises(ValueError, match="slices"):
        s.decide(scores, slices[:-1])


# --------------------------------------------------------------------------------------------------
# Accepted output forms
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["n1", "n", "n2"])
def test_logit_outputs_get_a_sigmoid(shape: str, rows: np.ndarray) -> None:
    w = np.linspace(-0.5, 0.5, F)
    data = linear_logit_onnx(w, -0.3, out_shape=shape)
    m = make_manifest(data, input_name="x", output_name="logit", output_kind="logit")
    got = Scorer(m, data, "cpu").score(rows)
    want = 1 / (1 + np.exp(-(rows.astype(np.float64) @ w - 0.3)))
    assert got.dtype == np.float32 and np.max(np.abs(got - want)) <= 1e-5


def test_zipmap_output_is_accepted(rows: np.ndarray) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    X, y = reference_dataset(500, seed=5)
    lr = LogisticRegression(max_iter=500).fit(X, y)
    data = to_onnx(lr, X[:1], target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString()
    m = make_manifest(data, input_name="X", output_name="output_probability")
    s = Scorer(m, data, "cpu")
    assert s._zipmap  # really the sequence-of-maps path
    assert np.max(np.abs(s.score(rows) - lr.predict_proba(rows)[:, 1])) <= 1e-5


def test_scorer_side_standardisation_equals_the_folded_graph(rows: np.ndarray, ref_scorer: Scorer) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    pipe = reference_pipeline()
    mlp = pipe.named_steps["mlp"]
    data = to_onnx(
        mlp,
        initial_types=[("features", FloatTensorType([None, F]))],
        options={id(mlp): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    ).SerializeToString()
    prep = dict(fit_reference().preprocessing, applied_in="scorer")
    s = Scorer(make_manifest(data, preprocessing=prep), data, "cpu")
    before = rows.copy()
    assert np.max(np.abs(s.score(rows) - ref_scorer.score(rows))) <= 1e-5
    assert np.array_equal(rows, before)
