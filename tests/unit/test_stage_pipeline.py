"""The three live stages chained over in-memory state, without a broker: the feature vectors they
log on the verdicts equal the offline engine's for the same clicks in the same order, and each stage
routes, bundles and keys its outputs as the next one needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from agents.ip_counters import IpCounters
from app.contracts import topics
from app.contracts.events import Click, decode_entity_bundle
from app.contracts.topics import key_partition
from app.features import OfflineFeatureEngine
from app.runtime.stage import InputRecord
from app.runtime.testing import MemoryTable, input_records, run
from tests.integration.scripted import click, scripted_clicks
from tests.unit.stage_helpers import Pipeline, settings_for


def clicks_through_many_ips() -> list[Click]:
    """The scripted clicks plus a user whose clicks come from a new IP each (residential proxies):
    they reach the score stage through every partition of the IP stage."""
    rotating = [click(f"rot-{k}", 3.0 + 7.0 * k, f"10.0.{k}.{k + 1}", "s-rot", "mallory") for k in range(30)]
    return sorted(scripted_clicks() + rotating, key=lambda c: c.event_time_ms)


def drain_partition_by_partition(pipeline: Pipeline, clicks: list[Click], batch: int = 7) -> list:
    """The worst order a drain can read in: each partition of ``clicks`` to its end, one after another."""
    outputs = []
    for partition in range(pipeline.settings.click_partitions):
        mine = [c for c in clicks if pipeline.partition_of(c) == partition]
        for start in range(0, len(mine), batch):
            outputs += pipeline.send(mine[start : start + batch])
    return outputs + pipeline.finish()


def live_vectors(pipeline: Pipeline, outputs: list) -> dict[str, np.ndarray]:
    out = pipeline.settings.topic(topics.VERDICTS)
    verdicts = [orjson.loads(o.value) for o in outputs if o.topic == out]
    assert len(verdicts) == len({v["click_id"] for v in verdicts})  # one verdict per click
    return {v["click_id"]: np.asarray(v["features"], dtype=np.float32) for v in verdicts}


def test_live_vectors_equal_the_offline_engine_s_however_the_ip_partitions_interleave(tmp_path: Path) -> None:
    clicks = clicks_through_many_ips()
    pipeline = Pipeline(settings_for(tmp_path, click_partitions=3, batch_max_events=8))
    assert {pipeline.partition_of(c) for c in clicks if c.user_id == "mallory"} == {0, 1, 2}
    live = live_vectors(pipeline, drain_partition_by_partition(pipeline, clicks))
    assert sorted(live) == sorted(c.click_id for c in clicks)
    offline = OfflineFeatureEngine(through_bytes=True)
    for c in clicks:
        assert np.array_equal(live[c.click_id], offline.process(c)), c.click_id
    assert not pipeline.score.holding() and pipeline.score.settled(10**9) == pipeline.score.order._batches


def test_in_arrival_order_the_same_drain_gives_other_user_features(tmp_path: Path) -> None:
    # What the ordering is for: without it the rotating user's features depend on the read order.
    clicks = clicks_through_many_ips()
    pipeline = Pipeline(settings_for(tmp_path, click_partitions=3, batch_max_events=8, reorder_max_wait_ms=0))
    live = live_vectors(pipeline, drain_partition_by_partition(pipeline, clicks))
    offline = OfflineFeatureEngine(through_bytes=True)
    differ = [c.click_id for c in clicks if not np.array_equal(live[c.click_id], offline.process(c))]
    assert differ and all(cid.startswith("rot-") for cid in differ)


def test_a_batch_settles_only_once_all_its_clicks_were_released(tmp_path: Path) -> None:
    pipeline = Pipeline(settings_for(tmp_path, click_partitions=3))
    clicks = clicks_through_many_ips()
    first = [c for c in clicks if pipeline.partition_of(c) == 0][:5]
    pipeline.send(first)  # sources 1 and 2 have said nothing yet: held
    assert pipeline.score.holding() and pipeline.score.settled(1) == 0
    assert pipeline.finish() and pipeline.score.settled(2) == 2  # the wait is over: released


def test_verdicts_carry_the_model_s_decision_at_the_slice_threshold(tmp_path: Path) -> None:
    pipeline = Pipeline(settings_for(tmp_path, click_partitions=3, batch_max_events=8))
    outputs = drain_partition_by_partition(pipeline, clicks_through_many_ips())
    verdicts = [orjson.loads(o.value) for o in outputs if o.topic == pipeline.settings.topic(topics.VERDICTS)]
    scorer = pipeline.score.scorer
    assert verdicts and {v["model_version"] for v in verdicts} == {scorer.version}
    vectors = np.asarray([v["features"] for v in verdicts], dtype=np.float32)
    assert np.array_equal(np.asarray([v["score"] for v in verdicts], dtype=np.float32), scorer.score(vectors))
    for v in verdicts:
        assert v["revision"] == 0 and v["source"] == "live"
        assert v["decision"] == ("invalid" if v["score"] >= v["threshold"] else "valid")


def test_the_score_stage_scores_a_take_in_chunks_of_batch_max_events(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, click_partitions=1, batch_max_events=8, reorder_max_wait_ms=0)
    pipeline = Pipeline(settings)
    bundles = [o for o in pipeline.ip.process(as_inputs_of(pipeline, scripted_clicks()[:30])).__next__()]
    batch = input_records(settings.topic(topics.CLICKS_BY_ENTITY), [b.value for b in bundles])
    chunks = list(pipeline.score.process(batch))
    assert [len(chunk) for chunk in chunks] == [8, 8, 8, 6]


def as_inputs_of(pipeline: Pipeline, clicks: list[Click]) -> list:
    topic = pipeline.settings.topic(topics.CLICKS)
    return [InputRecord(topic, 0, k, c.ip.encode(), c.to_json(), []) for k, c in enumerate(clicks)]


def test_ip_stage_bundles_clicks_on_their_entity_s_partition_and_keeps_one_state_per_ip(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, click_partitions=4, batch_max_events=5, clicks_keyed_by_ip=True)
    states = MemoryTable("ip-state")
    stage = IpCounters(settings, states)
    clicks = scripted_clicks()
    batch = input_records(
        settings.topic(topics.CLICKS), [c.to_json() for c in clicks], keys=[c.ip.encode() for c in clicks]
    )
    (outputs,) = run(stage, [batch])
    assert all(o.topic == settings.topic(topics.CLICKS_BY_ENTITY) for o in outputs)
    seen = []
    for out in outputs:
        bundle = decode_entity_bundle(out.value, out.headers)
        assert 1 <= len(bundle) <= 5
        for c, _, _ in bundle:
            assert out.partition == key_partition(c.entity_key.encode(), 4)
            seen.append(c.click_id)
    assert sorted(seen) == sorted(c.click_id for c in clicks)
    assert set(states.partitions[0]) == {c.ip.encode() for c in clicks}  # one key per IP


def test_a_click_not_keyed_by_its_ip_goes_to_the_dlq_when_producers_promise_ip_keys(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, clicks_keyed_by_ip=True)
    stage = IpCounters(settings, MemoryTable("ip-state"))
    good, bad = click("a", 0, "192.0.2.1", "s", "u"), click("b", 1, "192.0.2.2", "s", "u")
    batch = input_records(
        settings.topic(topics.CLICKS), [good.to_json(), bad.to_json()], keys=[b"192.0.2.1", b"192.0.2.1"]
    )
    (outputs,) = run(stage, [batch])
    dlq = [o for o in outputs if o.topic == settings.topic(topics.CLICKS_DLQ)]
    assert [o.value for o in dlq] == [bad.to_json()]
    assert b"is not the click's IP" in dict(dlq[0].headers)["ivt-dlq-reason"]
