"""Shared fixtures: one real Kafka broker per test session, and per-test isolated topics on it.

The broker starts only when a test asks for it (``kafka_broker`` or ``kafka_settings``), on free
ports in a temporary folder, and is stopped at the end of the session. Set IVT_TEST_BOOTSTRAP to
``host:port`` to run the tests against a broker that is already running instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.contracts.settings import Settings
from app.kafka.admin import ensure_topics
from app.kafka.local import LocalBroker


@dataclass(frozen=True)
class ExternalBroker:
    """A broker the test session did not start (IVT_TEST_BOOTSTRAP); it is left running."""

    bootstrap: str


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker | ExternalBroker]:
    """The session's broker; use ``.bootstrap``."""
    external = os.environ.get("IVT_TEST_BOOTSTRAP")
    if external:
        yield ExternalBroker(external)
        return
    broker = LocalBroker(
        Settings.from_env(), state_dir=tmp_path_factory.mktemp("kafka"), free_ports=True, die_with_parent=True
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_settings(kafka_broker: LocalBroker | ExternalBroker, tmp_path: Path) -> Settings:
    """Settings for one test: its own topic prefix and app id, every project topic already created."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings.from_env(
        bootstrap_servers=kafka_broker.bootstrap,
        topic_prefix=f"t{tag}-",
        app_id=f"ivt-test-{tag}",
        data_dir=tmp_path,
    )
    ensure_topics(settings)
    return settings
