"""Stage 1: validate raw clicks, route bad bytes to the DLQ, repartition good clicks by IP.

Bad input never stops the stream: each event that breaks the contract goes to ``clicks-dlq`` with its
original key and bytes untouched, and headers saying why and where it came from
(:mod:`app.contracts.validation`). Good clicks are re-serialised in canonical form (normalised IP,
UTC time) and keyed by IP, on the partition Kafka's default partitioner picks for the IP, which is
the partitioning the IP-counter stage needs. Our ``ivt-*`` headers (e.g. the simulator's intended
send time) travel along so latency can be measured end to end.

When producers already key ``clicks`` by IP (``IVT_CLICKS_KEYED_BY_IP=true``) this stage is not
bound: the IP-counter stage consumes ``clicks`` and validates itself, which saves a hop per click.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from app.contracts import topics
from app.contracts.exceptions import InvalidEvent
from app.contracts.headers import forward_headers
from app.contracts.settings import Settings
from app.contracts.topics import key_partitions
from app.contracts.validation import dlq_record, route
from app.runtime.app import Runtime
from app.runtime.runner import bind_stage
from app.runtime.stage import InputRecord, OutputRecord, Stage

__all__ = ["Validate", "bind"]


class Validate(Stage):
    """Every record ends up in exactly one place: ``clicks-by-ip`` or ``clicks-dlq``."""

    name = "validate-clicks"
    source = topics.CLICKS

    def __init__(self, settings: Settings) -> None:
        self.max_bytes = settings.max_event_bytes
        self.max_wait_s = settings.batch_max_wait_ms / 1000
        self.out, self.dlq = settings.topic(topics.CLICKS_BY_IP), settings.topic(topics.CLICKS_DLQ)
        self.outputs = (self.out,)
        self.out_partitions = 0

    def open(self, partitions: Mapping[str, int]) -> None:
        self.out_partitions = partitions[self.out]

    def process(self, batch: Sequence[InputRecord]) -> Iterator[list[OutputRecord]]:
        outputs: list[OutputRecord] = []
        valid: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []  # key, value, headers
        for record in batch:
            outcome = route(record.value, self.max_bytes)
            if isinstance(outcome, InvalidEvent):  # rare
                outputs.append(OutputRecord(self.dlq, None, *dlq_record(record, outcome.reason)))
                continue
            valid.append((outcome.ip.encode(), outcome.to_json(), forward_headers(record.headers)))
        partitions = key_partitions([key for key, _, _ in valid], self.out_partitions)
        out = self.out
        outputs += [
            OutputRecord(out, partition, key, value, headers)
            for partition, (key, value, headers) in zip(partitions, valid, strict=True)
        ]
        yield outputs


def bind(runtime: Runtime) -> None:
    if not runtime.settings.clicks_keyed_by_ip:
        bind_stage(runtime, Validate(runtime.settings))
