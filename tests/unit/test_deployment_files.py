"""docker-compose.yml and the Dockerfile stay in step with the code (no Docker engine runs in CI)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml
from typer.testing import CliRunner

from app.cli.main import cli
from app.contracts.settings import ENV_PREFIX, Settings
from app.kafka.local import JVM_OPTIONS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_a_kraft_kafka_of_the_pinned_version() -> None:
    kafka = COMPOSE["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{Settings().kafka_version}"
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_compose_broker_has_the_heap_regions_the_local_broker_has() -> None:
    # 1 MiB regions made every large produce request a humongous allocation and a collection.
    region = next(option for option in JVM_OPTIONS if option.startswith("-XX:G1HeapRegionSize="))
    options = COMPOSE["services"]["kafka"]["environment"]["KAFKA_JVM_PERFORMANCE_OPTS"].split()
    assert region in options and "-XX:+UseG1GC" in options


def test_compose_uses_only_known_settings() -> None:
    known = {ENV_PREFIX + f.name.upper() for f in fields(Settings)}
    for name, service in COMPOSE["services"].items():
        for var in service.get("environment", {}):
            if var.startswith(ENV_PREFIX):
                assert var in known, f"service {name} sets unknown {var}"


def test_compose_commands_are_real_ivt_commands() -> None:
    runner = CliRunner()
    for name, service in COMPOSE["services"].items():
        if "build" not in service:
            continue
        command = service["command"]
        # Every sub-command path must exist: `--help` on it succeeds.
        path = [part for part in command if not part.startswith("-")][:2]
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (
            f"service {name}: `ivt {' '.join(path)}` is not a command\n{result.output}"
        )


def test_dockerfile_installs_from_the_lock_file_and_copies_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in dockerfile
    for package in ("app", "agents", "models"):
        assert f"COPY {package} ./{package}" in dockerfile


def test_dockerfile_builds_the_compiled_feature_engine_where_the_worker_looks() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "python -m app.features.build_engine" in dockerfile
    assert "ENV IVT_COMPILED_DIR=/opt/ivt/build/mypyc" in dockerfile
