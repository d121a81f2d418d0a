"""Create the project's topics idempotently, and list what a cluster has.

Topics are created explicitly (never by auto-creation) so partition counts and compaction match
:func:`app.contracts.topics.topic_specs`. An existing topic is left alone, but a partition count or config
that differs from its spec is reported: co-partitioned stages silently break otherwise.
Each coroutine has a sync twin (``asyncio.run``) for the CLI and tests; call the ``_async`` ones from
inside an event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import GroupCoordinatorNotAvailableError, for_code

from app.contracts.exceptions import BrokerError
from app.contracts.settings import Settings
from app.contracts.topics import TopicSpec, topic_specs
from app.kafka import clients

__all__ = [
    "TopicReport",
    "ensure_topics",
    "ensure_topics_async",
    "list_topics",
    "list_topics_async",
    "describe_topic_configs_async",
    "consumer_group_lag_async",
    "delete_topics_async",
]

_TOPIC_ALREADY_EXISTS = 36
_MAX_REPLICATION = 3


@dataclass(frozen=True)
class TopicReport:
    """Outcome of :func:`ensure_topics`; ``mismatches`` are readable one-liners."""

    created: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


@asynccontextmanager
async def admin_client(
    settings: Settings, *, request_timeout_ms: int = 30000
) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client; an unreachable cluster becomes a :class:`BrokerError` saying where it looked."""
    admin = clients.admin(settings, request_timeout_ms=request_timeout_ms)
    try:
        with quiet_aiokafka():  # it logs the refused connection that the BrokerError below reports
            await admin.start()
    except Exception as exc:
        await admin.close()
        raise BrokerError(
            f"cannot reach Kafka at {settings.bootstrap_servers} ({exc}); is the broker running? "
            "(`ivt broker start`, or set IVT_BOOTSTRAP_SERVERS)"
        ) from exc
    try:
        yield admin
    finally:
        await admin.close()


@contextmanager
def quiet_aiokafka() -> Iterator[None]:
    """aiokafka logs each refused connection at ERROR; silence it where the caller reports failure itself."""
    logger = logging.getLogger("aiokafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


async def ensure_topics_async(
    settings: Settings, specs: Sequence[TopicSpec] | None = None, *, timeout_s: float = 30.0
) -> TopicReport:
    """Create the missing topics of ``specs`` (default: every project topic); check the others."""
    specs = list(topic_specs(settings) if specs is None else specs)
    async with admin_client(settings) as admin:
        existing = await _partition_counts(admin)
        missing = [s for s in specs if s.name not in existing]
        created, raced = await _create(admin, missing, timeout_s) if missing else ([], [])
        if created:
            await _wait_for_leaders(
                admin, {s.name: s.partitions for s in missing if s.name in created}, timeout_s
            )
        present_specs = [s for s in specs if s.name in existing or s.name in raced]
        if raced:
            existing.update(await _partition_counts(admin, raced))
        mismatches = [
            f"{s.name}: {existing[s.name]} partitions, spec says {s.partitions}"
            for s in present_specs
            if existing.get(s.name) != s.partitions
        ]
        mismatches += await _config_mismatches(admin, [s for s in present_specs if s.config])
    return TopicReport(created=created, present=[s.name for s in present_specs], mismatches=mismatches)


def ensure_topics(
    settings: Settings, specs: Sequence[TopicSpec] | None = None, *, timeout_s: float = 30.0
) -> TopicReport:
    """Sync :func:`ensure_topics_async`."""
    return asyncio.run(ensure_topics_async(settings, specs, timeout_s=timeout_s))


async def list_topics_async(settings: Settings, *, include_internal: bool = False) -> dict[str, int]:
    """Topic name -> partition count, sorted by name; Kafka's ``__`` topics only when asked."""
    async with admin_client(settings) as admin:
        counts = await _partition_counts(admin)
    return {name: counts[name] for name in sorted(counts) if include_internal or not name.startswith("__")}


async def delete_topics_async(
    settings: Settings, prefixes: Sequence[str], timeout_s: float = 30.0
) -> list[str]:
    """Delete every topic whose name starts with one of ``prefixes``; the names deleted.

    Returns once the broker no longer lists them, so they can be created again at once."""
    async with admin_client(settings) as admin:
        names = [n for n in await _partition_counts(admin) if any(n.startswith(p) for p in prefixes if p)]
        if not names:
            return []
        await admin.delete_topics(names, timeout_ms=int(timeout_s * 1000))
        deadline = time.monotonic() + timeout_s
        while set(names) & set(await _partition_counts(admin)):
            if time.monotonic() > deadline:
                raise BrokerError(f"topics still listed {timeout_s:.0f} s after their deletion: {names}")
            await asyncio.sleep(0.2)
    return sorted(names)


def list_topics(settings: Settings, *, include_internal: bool = False) -> dict[str, int]:
    """Sync :func:`list_topics_async`."""
    return asyncio.run(list_topics_async(settings, include_internal=include_internal))


async def consumer_group_lag_async(settings: Settings, group: str, names: Sequence[str]) -> int:
    """Records on topics ``names`` that consumer group ``group`` has not committed yet (a partition it
    never committed counts from its first offset, where a new group with ``earliest`` starts).

    What is left to do, whatever earlier runs left on the topics: totals of records written would
    count old verdicts, duplicates and replay corrections.
    """
    async with admin_client(settings) as admin:
        counts = await _partition_counts(admin, names)
        committed = await _group_offsets(admin, group)
    tps = [TopicPartition(name, p) for name in names for p in range(counts.get(name, 0))]
    if not tps:
        return 0
    reader = clients.consumer(settings, enable_auto_commit=False)
    await reader.start()
    try:
        starts, ends = await reader.beginning_offsets(tps), await reader.end_offsets(tps)
    finally:
        await reader.stop()
    lag = 0
    for tp in tps:
        done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else starts[tp]
        lag += max(0, ends[tp] - max(done, starts[tp]))
    return lag


async def _group_offsets(admin: AIOKafkaAdminClient, group: str, timeout_s: float = 30.0) -> dict[Any, Any]:
    """The group's committed offsets; a broker that has not created its offsets topic yet (a fresh
    one, first asked) answers "coordinator not available" for a few seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await admin.list_consumer_group_offsets(group)
        except GroupCoordinatorNotAvailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def describe_topic_configs_async(settings: Settings, names: Sequence[str]) -> dict[str, dict[str, str]]:
    """Effective config of each topic (defaults included): name -> {key: value}."""
    async with admin_client(settings) as admin:
        return await _describe_configs(admin, {name: None for name in names})


async def _partition_counts(admin: AIOKafkaAdminClient, names: Sequence[str] | None = None) -> dict[str, int]:
    topics = await admin.describe_topics(list(names) if names is not None else None)
    return {t["topic"]: len(t["partitions"]) for t in topics if t["error_code"] == 0}


async def _create(
    admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec], timeout_s: float
) -> tuple[list[str], list[str]]:
    """Returns (created, raced): ``raced`` were created by someone else since we looked."""
    cluster = await admin.describe_cluster()
    replication = max(1, min(_MAX_REPLICATION, len(cluster.get("brokers", []))))
    new = [NewTopic(s.name, s.partitions, replication, topic_configs=dict(s.config)) for s in specs]
    response = await admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
    created: list[str] = []
    raced: list[str] = []
    errors: list[str] = []
    for entry in response.topic_errors:
        topic, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        if code == 0:
            created.append(topic)
        elif code == _TOPIC_ALREADY_EXISTS:
            raced.append(topic)
        else:
            errors.append(f"{topic}: {for_code(code).__name__}{f' ({message})' if message else ''}")
    if errors:
        raise BrokerError("could not create topic(s): " + "; ".join(errors))
    return created, raced


async def _wait_for_leaders(admin: AIOKafkaAdminClient, expected: dict[str, int], timeout_s: float) -> None:
    """Creation returns before every broker's metadata shows the topic; wait so clients never see
    UNKNOWN_TOPIC right after ``ensure_topics``."""
    deadline = time.monotonic() + timeout_s
    while True:
        topics = await admin.describe_topics(list(expected))
        ready = {
            t["topic"]
            for t in topics
            if t["error_code"] == 0
            and len(t["partitions"]) == expected.get(t["topic"])
            and all(p["leader"] >= 0 for p in t["partitions"])
        }
        if ready >= set(expected):
            return
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"topics created but without leaders after {timeout_s:.0f} s: {sorted(set(expected) - ready)}"
            )
        await asyncio.sleep(0.05)  # poll interval between metadata reads


async def _config_mismatches(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]) -> list[str]:
    if not specs:
        return []
    actual = await _describe_configs(admin, {s.name: list(s.config) for s in specs})
    out = []
    for spec in specs:
        for key, wanted in spec.config.items():
            have = actual.get(spec.name, {}).get(key)
            if have != wanted:
                out.append(f"{spec.name}: {key}={have}, spec says {wanted}")
    return out


async def _describe_configs(
    admin: AIOKafkaAdminClient, keys_by_topic: dict[str, list[str] | None]
) -> dict[str, dict[str, str]]:
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(keys) if keys else None)
        for name, keys in keys_by_topic.items()
    ]
    responses: list[Any] = await admin.describe_configs(resources)
    result: dict[str, dict[str, str]] = {}
    for response in responses:
        for error_code, error_message, _type, name, entries in response.resources:
            if error_code != 0:
                raise BrokerError(
                    f"describe configs of {name}: {for_code(error_code).__name__} {error_message or ''}"
                )
            result[name] = {entry[0]: entry[1] for entry in entries}
    return result
