"""``ivt calibrate`` end to end on a small simulated dataset: a new version with the same graph and
new thresholds, the report, and clear refusals (unknown model, bad budget, infeasible floors)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli.calibrate import default_version_name, parse_days
from app.cli.main import cli
from app.contracts.events import SLICES
from app.simulator.history import write_history
from app.simulator.params import SimParams
from models.dataset import build_from_history
from models.registry import Registry
from models.tiny import build_reference_model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    hist = tmp_path_factory.mktemp("hist")
    write_history(hist, SimParams(seed=7, users=1500), days=2)
    out = tmp_path_factory.mktemp("ds")
    build_from_history(hist, out, warmup_hours=2)
    return out


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    registry = Registry(tmp_path / "models")
    build_reference_model(registry, "ref-cal")
    return {"IVT_DATA_DIR": str(tmp_path), "IVT_MODEL_DIR": str(tmp_path / "models")}


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["calibrate", *args], env=env)
    return result.exit_code, result.output


def test_calibrate_writes_a_new_version_with_the_same_graph(
    dataset: Path, env: dict[str, str], tmp_path: Path
) -> None:
    code, out = run(
        env,
        "--model=ref-cal",
        "--fpr-budget=0.05",
        "--min-coverage=0.1",
        f"--calibration-set={dataset}",
        "--new-version=ref-cal-c1",
        "--fit-max-fpr=0.5",
    )
    assert code == 0, out
    assert "registered ref-cal-c1" in out
    registry = Registry(tmp_path / "models")
    parent, child = registry.manifest("ref-cal"), registry.manifest("ref-cal-c1")
    assert child.parent == "ref-cal" and child.status == "candidate"
    assert child.onnx_sha256 == parent.onnx_sha256
    registry.load("ref-cal-c1")  # checksum and feature spec still hold
    cal = child.metrics["calibration"]
    assert cal["feasible"] is True and cal["fpr_budget"] == 0.05 and cal["strategy"] == "slices"
    assert cal["calibration_set"]["rows"] > 10_000
    # app/anon has too few purchasing clicks in this small set: it is served by the default.
    assert cal["slices"]["app/anon"]["skipped"]
    assert set(child.thresholds) == set(SLICES) - {"app/anon"}
    assert child.default_threshold == pytest.approx(
        cal["global_same_fpr"]["thresholds"]["app/anon"], abs=1e-6
    )
    assert child.metrics["kind"] == parent.metrics["kind"]  # the parent's metrics are kept
    report = Path(cal["report"])
    assert report.exists() and (report.parent / "slice-desktop-in.png").exists()
    assert "same overall FPR" in report.read_text()


def test_knee_strategy_writes_one_threshold(dataset: Path, env: dict[str, str], tmp_path: Path) -> None:
    code, out = run(
        env,
        "--model=ref-cal",
        "--fpr-budget=0.05",
        "--min-coverage=0",
        f"--calibration-set={dataset}",
        "--strategy=knee",
        "--new-version=ref-cal-knee",
    )
    assert code == 0, out
    child = Registry(tmp_path / "models").manifest("ref-cal-knee")
    assert dict(child.thresholds) == {}
    assert child.default_threshold == pytest.approx(
        child.metrics["calibration"]["knee"]["thresholds"]["desktop/in"], abs=1e-6
    )


def test_infeasible_budget_is_reported_and_nothing_registered(
    dataset: Path, env: dict[str, str], tmp_path: Path
) -> None:
    code, out = run(
        env,
        "--model=ref-cal",
        "--fpr-budget=0.001",
        "--min-coverage=1.0",
        f"--calibration-set={dataset}",
        "--new-version=ref-cal-x",
    )
    assert code == 1, out
    assert "infeasible" in out and "cannot all meet their floor" in out and "nothing registered" in out
    assert not Registry(tmp_path / "models").exists("ref-cal-x")
    report = tmp_path / "calibration" / "ref-cal-x" / "calibration.md"  # the report is still written
    assert "INFEASIBLE" in report.read_text()
    assert (report.parent / "slice-desktop-in.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model=nope", "--fpr-budget=0.01", "--min-coverage=0.1"], "no model version 'nope'"),
        (["--model=ref-cal", "--fpr-budget=0", "--min-coverage=0.1"], "--fpr-budget must be in (0, 1)"),
        (["--model=ref-cal", "--fpr-budget=1.5", "--min-coverage=0.1"], "--fpr-budget must be in (0, 1)"),
        (["--model=ref-cal", "--fpr-budget=0.01", "--min-coverage=2"], "--min-coverage must be in [0, 1]"),
        (["--model=ref-cal", "--fpr-budget=0.01", "--min-coverage=0.1", "--slicing=country"], "--slicing"),
        (["--model=ref-cal", "--fpr-budget=0.01", "--min-coverage=0.1", "--strategy=best"], "--strategy"),
        (["--model=ref-cal", "--fpr-budget=0.01", "--min-coverage=0.1", "--days=2026-13-01"], "not a date"),
    ],
)
def test_bad_input_is_refused_clearly(env: dict[str, str], args: list[str], message: str) -> None:
    code, out = run(env, *args)
    assert code == 2
    assert message in " ".join(out.split())


def test_missing_calibration_set_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    code, out = run(
        env,
        "--model=ref-cal",
        "--fpr-budget=0.01",
        "--min-coverage=0.1",
        f"--calibration-set={tmp_path / 'x'}",
    )
    assert code == 2 and "error" in out


def test_version_names_and_days() -> None:
    ms = 1_795_000_000_000
    assert default_version_name("mlp-0003", ms) == "mlp-0003-cal-20261118T110640"
    assert default_version_name("mlp-0003-cal-20261101T000000", ms) == "mlp-0003-cal-20261118T110640"
    assert len(default_version_name("m" * 64, ms)) <= 64
    assert parse_days("2026-11-08:2026-11-10") == (20765, 20767)
    assert parse_days("2026-11-08") == (20765, 20766)
    with pytest.raises(ValueError, match="after START"):
        parse_days("2026-11-10:2026-11-08")
