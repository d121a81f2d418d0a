"""The local broker's pieces that need no JVM: config rendering, ports, state files, jar cache."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app.contracts.exceptions import BrokerError
from app.contracts.settings import REPO_ROOT, Settings
from app.kafka import jars as jars_module
from app.kafka.jars import cache_root, ensure_jars, kafka_home
from app.kafka.local import (
    BrokerState,
    LocalBroker,
    broker_command,
    new_cluster_id,
    pick_free_ports,
    port_in_use,
    process_alive,
    render_server_properties,
)


def _props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _state(pid: int, tmp_path: Path) -> BrokerState:
    return BrokerState(
        pid, 1, 2, "127.0.0.1:1", "2026-01-01T00:00:00+00:00", "4.1.1", str(tmp_path / "broker.log")
    )


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    props = _props(render_server_properties(port=19092, controller_port=19093, data_dir=tmp_path / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["group.initial.rebalance.delay.ms"] == "0"
    replication = {
        k: v for k, v in props.items() if k.endswith("replication.factor") or k.endswith("min.isr")
    }
    assert replication and set(replication.values()) == {"1"}
    # Small preallocated indexes: a fault in a sparse 10 MiB one zeroed megabytes of holes.
    assert props["log.index.size.max.bytes"] == "1048576"


def test_broker_jvm_has_a_fixed_heap_and_regions_no_worker_request_is_humongous_in(tmp_path: Path) -> None:
    cmd = broker_command("java", tmp_path / "jars", tmp_path / "server.properties", heap="768m")
    assert cmd[0] == "java" and cmd[-2:] == ["kafka.Kafka", str(tmp_path / "server.properties")]
    assert "-Xmx768m" in cmd and "-Xms768m" in cmd
    # G1 calls an allocation over half a region humongous: 16 MiB regions let an 8 MiB request in.
    assert "-XX:+UseG1GC" in cmd and "-XX:G1HeapRegionSize=16m" in cmd
    assert "-XX:TieredStopAtLevel=1" in cmd


def test_cluster_id_is_kafka_uuid_form() -> None:
    ids = {new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    for cluster_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", cluster_id)


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = pick_free_ports(2)
    assert len(set(ports)) == 2
    assert not any(port_in_use(port) for port in ports)


def test_port_in_use_sees_a_listener() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert port_in_use(listener.getsockname()[1])


def test_start_refuses_a_taken_port_before_fetching_anything(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        settings = Settings.from_env(broker_port=taken, cache_dir=tmp_path / "cache")
        with pytest.raises(BrokerError, match=f"port {taken} \\(IVT_BROKER_PORT\\).*already in use"):
            LocalBroker(settings, state_dir=tmp_path / "broker").start()
    assert not (tmp_path / "cache").exists()


def test_process_alive() -> None:
    assert process_alive(os.getpid())
    assert not process_alive(_dead_pid())


def test_state_json_round_trip(tmp_path: Path) -> None:
    state = _state(1234, tmp_path)
    assert BrokerState.from_json(state.to_json()) == state


def test_no_state_means_not_running(tmp_path: Path) -> None:
    broker = LocalBroker(Settings.from_env(), state_dir=tmp_path)
    status = broker.status()
    assert (status.running, status.stale, status.state) == (False, False, None)
    assert broker.stop() is False
    with pytest.raises(BrokerError, match="no local broker is running"):
        _ = broker.bootstrap


def test_stale_state_of_a_dead_pid_is_detected_and_removed(tmp_path: Path) -> None:
    broker = LocalBroker(Settings.from_env(), state_dir=tmp_path)
    broker.state_path.write_text(_state(_dead_pid(), tmp_path).to_json())
    status = broker.status()
    assert status.stale and not status.running
    assert not broker.state_path.exists()


def test_live_pid_that_is_not_the_broker_is_stale_and_not_signalled(tmp_path: Path) -> None:
    """A reused pid must never be killed: here it is a sleeping process of ours."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        broker = LocalBroker(Settings.from_env(), state_dir=tmp_path)
        broker.state_path.write_text(_state(bystander.pid, tmp_path).to_json())
        assert broker.stop() is False
        assert bystander.poll() is None
        assert not broker.state_path.exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_corrupt_state_file_is_stale(tmp_path: Path) -> None:
    broker = LocalBroker(Settings.from_env(), state_dir=tmp_path)
    broker.state_path.write_text("{not json")
    assert broker.status().stale
    assert not broker.state_path.exists()


def test_relative_cache_dir_is_taken_from_the_repo_root(tmp_path: Path) -> None:
    assert cache_root(Settings.from_env(cache_dir=Path(".cache"))) == REPO_ROOT / ".cache"
    assert cache_root(Settings.from_env(cache_dir=tmp_path)) == tmp_path
    settings = Settings.from_env(cache_dir=tmp_path, kafka_version="4.0.0")
    assert kafka_home(settings) == tmp_path / "kafka-4.0.0"
    assert LocalBroker(settings).state_dir == tmp_path / "broker"


def test_ensure_jars_without_maven_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jars_module.shutil, "which", lambda _name: None)
    with pytest.raises(BrokerError, match="Maven \\(mvn\\) is not on PATH"):
        ensure_jars(Settings.from_env(cache_dir=tmp_path))


def test_ensure_jars_reuses_a_completed_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env(cache_dir=tmp_path, kafka_version="4.1.1")
    jars = kafka_home(settings) / "jars"
    jars.mkdir(parents=True)
    (jars / ".complete").write_text("4.1.1\n")
    monkeypatch.setattr(jars_module.shutil, "which", lambda _name: pytest.fail("must not look for mvn"))
    assert ensure_jars(settings) == jars


def test_ensure_jars_reports_maven_failure_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_mvn = tmp_path / "mvn"
    fake_mvn.write_text(
        "#!/bin/sh\necho '\033[1;31m[ERROR] Could not find artifact kafka_2.13:jar:0.0.0\033[m'\nexit 1\n"
    )
    fake_mvn.chmod(0o755)
    monkeypatch.setattr(jars_module.shutil, "which", lambda _name: str(fake_mvn))
    settings = Settings.from_env(cache_dir=tmp_path / "cache", kafka_version="0.0.0")
    with pytest.raises(
        BrokerError, match=r"(?s)exit 1.*\n\[ERROR\] Could not find artifact kafka_2.13:jar:0.0.0$"
    ):
        ensure_jars(settings)
    assert not (kafka_home(settings) / "jars").exists()
