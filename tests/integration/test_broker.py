"""The real local broker: lifecycle without leftovers, idempotent topics, a produce/consume round trip."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from app.contracts import topics
from app.contracts.settings import REPO_ROOT, Settings
from app.kafka.admin import describe_topic_configs_async, ensure_topics, list_topics
from app.kafka.local import LocalBroker, port_in_use, process_alive, wait_for_exit

pytestmark = pytest.mark.integration


def _fresh_settings(bootstrap: str) -> Settings:
    return Settings.from_env(bootstrap_servers=bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}-")


def test_start_ready_stop_restart_leaves_no_process(tmp_path: Path) -> None:
    """A second broker of its own: found by another LocalBroker (as `ivt broker stop` would), data kept."""
    broker = LocalBroker(Settings.from_env(), state_dir=tmp_path, free_ports=True)
    first = broker.start()
    assert process_alive(first.pid) and port_in_use(first.port)
    settings = _fresh_settings(first.bootstrap)
    spec = topics.topic_specs(settings)[0]
    assert ensure_topics(settings, [spec]).created == [spec.name]

    again = broker.start()  # already running: reused, not a second JVM
    assert again.pid == first.pid

    assert broker.stop() is True
    assert not process_alive(first.pid)
    assert not Path(f"/proc/{first.pid}").exists()  # reaped, not a zombie
    assert not broker.state_path.exists()
    assert not port_in_use(first.port) and not port_in_use(first.controller_port)
    assert broker.stop() is False

    second = broker.start()  # new ports, same storage: the topic survived, no re-format
    try:
        other_process_view = LocalBroker(Settings.from_env(), state_dir=tmp_path)
        assert other_process_view.status().running and other_process_view.bootstrap == second.bootstrap
        assert spec.name in list_topics(replace(settings, bootstrap_servers=second.bootstrap))
    finally:
        assert LocalBroker(Settings.from_env(), state_dir=tmp_path).stop() is True
    assert not process_alive(second.pid)
    assert broker.log_path.exists() and "Kafka Server started" in broker.log_path.read_text()


def test_topics_are_created_once_with_their_specs(kafka_broker) -> None:
    settings = _fresh_settings(kafka_broker.bootstrap)
    specs = topics.topic_specs(settings)

    first = ensure_topics(settings)
    assert sorted(first.created) == sorted(s.name for s in specs)
    assert first.present == [] and first.ok

    second = ensure_topics(settings)
    assert second.created == [] and sorted(second.present) == sorted(first.created) and second.ok

    counts = list_topics(settings)
    assert {s.name: counts[s.name] for s in specs} == {s.name: s.partitions for s in specs}

    configs = asyncio.run(describe_topic_configs_async(settings, [s.name for s in specs]))
    for spec in specs:
        expected = "compact" if spec.compacted else "delete"
        assert configs[spec.name]["cleanup.policy"] == expected, spec.name
        for key, value in spec.config.items():
            assert configs[spec.name][key] == value, (spec.name, key)
    assert configs[settings.topic(topics.ACCOUNT_RFM)]["cleanup.policy"] == "compact"
    assert configs[settings.topic(topics.MODEL_CONTROL)]["cleanup.policy"] == "compact"


def test_partition_and_config_drift_is_reported_not_changed(kafka_broker) -> None:
    settings = _fresh_settings(kafka_broker.bootstrap)
    ensure_topics(settings)
    clicks = next(s for s in topics.topic_specs(settings) if s.name == settings.topic(topics.CLICKS))
    drifted = replace(clicks, partitions=clicks.partitions + 2, config={"cleanup.policy": "compact"})

    report = ensure_topics(settings, [drifted])

    assert report.created == [] and not report.ok
    assert any(
        f"{clicks.partitions} partitions, spec says {clicks.partitions + 2}" in m for m in report.mismatches
    )
    assert any("cleanup.policy=delete, spec says compact" in m for m in report.mismatches)
    assert list_topics(settings)[clicks.name] == clicks.partitions


async def _round_trip(settings: Settings) -> list[tuple[bytes, bytes, int]]:
    topic = settings.topic(topics.CLICKS)
    sent = [(f"10.0.0.{i}".encode(), f'{{"n": {i}}}'.encode()) for i in range(20)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        partitions = [(await producer.send_and_wait(topic, value, key=key)).partition for key, value in sent]
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.app_id,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    received: list[tuple[bytes, bytes, int]] = []
    try:
        async with asyncio.timeout(30):
            while len(received) < len(sent):
                batch = await consumer.getmany(timeout_ms=1000)
                received += [(m.key, m.value, m.partition) for records in batch.values() for m in records]
    finally:
        await consumer.stop()
    assert sorted(received) == sorted((k, v, p) for (k, v), p in zip(sent, partitions, strict=True))
    return received


def test_produce_consume_round_trip(kafka_settings: Settings) -> None:
    received = asyncio.run(_round_trip(kafka_settings))
    assert len({partition for _, _, partition in received}) > 1  # keys spread over the 6 partitions


_ORPHAN_SCRIPT = """
import sys, time
from pathlib import Path
from app.kafka.local import LocalBroker
from app.contracts.settings import Settings
state = LocalBroker(Settings.from_env(), state_dir=Path(sys.argv[1]), free_ports=True, die_with_parent=True).start()
print(state.pid, flush=True)
time.sleep(120)
"""


def test_broker_of_a_killed_test_session_dies_with_it(tmp_path: Path) -> None:
    """What the session fixture relies on: SIGKILL the starter, and the kernel stops the JVM."""
    starter = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        line = starter.stdout.readline() if starter.stdout else ""
        assert line.strip().isdigit(), "the starter did not report a broker pid"
        pid = int(line)
        assert process_alive(pid)
    finally:
        starter.kill()
        starter.wait()
    assert wait_for_exit(pid, 30.0), f"broker pid {pid} outlived the process that started it"
