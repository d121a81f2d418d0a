"""How ``ivt worker`` lays out its processes: which stages each runs and where each keeps its state."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli.worker import group_layout, process_settings, stages_to_run
from app.contracts.settings import Settings


def test_one_process_per_stage_without_validation_when_clicks_are_keyed_by_ip() -> None:
    assert group_layout(None, 1, True, clicks_keyed_by_ip=True) == [
        ("ip-counters-0", ["ip-counters"]),
        ("score-0", ["score"]),
    ]


def test_general_path_splits_into_three_stage_processes() -> None:
    layout = group_layout(None, 1, True, clicks_keyed_by_ip=False)
    assert [only for _, only in layout] == [["validate"], ["ip-counters"], ["score"]]


def test_processes_per_stage_get_stable_distinct_state_folders() -> None:
    layout = group_layout(None, 2, True, clicks_keyed_by_ip=True)
    assert [folder for folder, _ in layout] == ["ip-counters-0", "ip-counters-1", "score-0", "score-1"]
    assert layout == group_layout(None, 2, True, clicks_keyed_by_ip=True)  # same on every start


def test_without_split_every_process_runs_the_chosen_stages() -> None:
    assert group_layout(["score"], 3, False, clicks_keyed_by_ip=False) == [
        ("process-0", ["score"]),
        ("process-1", ["score"]),
        ("process-2", ["score"]),
    ]


def test_explicit_stages_are_kept_even_when_keyed() -> None:
    """Asked for by name, the validation stage is run: the caller knows what it wants."""
    assert stages_to_run(["validate", "score"], clicks_keyed_by_ip=True) == ["validate", "score"]


def test_at_least_one_process() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        group_layout(None, 0, True, clicks_keyed_by_ip=True)


def test_each_stage_process_keeps_its_state_in_its_own_folder(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=tmp_path, model_dir=tmp_path / "models")
    folders = {
        process_settings(settings, name)["IVT_DATA_DIR"] for name, _ in group_layout(None, 1, True, True)
    }
    assert folders == {str(tmp_path / "ip-counters-0"), str(tmp_path / "score-0")}
    assert process_settings(settings, 1)["IVT_DATA_DIR"] == str(tmp_path / "process-1")


def test_split_stage_processes_keep_no_standby_replicas(tmp_path: Path) -> None:
    """Faust's leader assigns standbys only for its own tables: mixed stages must not have any."""
    settings = Settings.from_env({}, data_dir=tmp_path)
    assert settings.table_standby_replicas == 1
    assert process_settings(settings, "score-0", split_stages=True)["IVT_TABLE_STANDBY_REPLICAS"] == "0"
    assert process_settings(settings, 0)["IVT_TABLE_STANDBY_REPLICAS"] == "1"
