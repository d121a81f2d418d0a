"""The three live stages chained over in-memory state, without a broker: the feature vectors they
log on the verdicts equal the offline engine's for the same clicks in the same order, and each stage
routes, bundles and keys its outputs as the next one needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from agents.ip_counters import IpCounters
from app.contracts import topics
from app.contracts.events import decode_entity_bundle
from app.contracts.topics import key_partition
from app.features import OfflineFeatureEngine
from app.runtime.testing import MemoryTable, input_records, run
from tests.integration.scripted import click, scripted_clicks
from tests.unit.stage_helpers import Pipeline, settings_for


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return Pipeline(settings_for(tmp_path, click_partitions=3, batch_max_events=8))


def test_live_vectors_equal_the_offline_engine_s_and_every_click_gets_one_verdict(pipeline: Pipeline) -> None:
    clicks = scripted_clicks()
    verdicts_topic = pipeline.settings.topic(topics.VERDICTS)
    outputs = []
    for start in range(0, len(clicks), 20):  # several batches: state carries over between them
        outputs += pipeline.send([c.to_json() for c in clicks[start : start + 20]])
    verdicts = {o.key: o for o in outputs if o.topic == verdicts_topic}
    assert sorted(verdicts) == sorted(c.click_id.encode() for c in clicks)

    offline = OfflineFeatureEngine(through_bytes=True)
    for c in clicks:
        logged = orjson.loads(verdicts[c.click_id.encode()].value)
        assert np.array_equal(np.asarray(logged["features"], dtype=np.float32), offline.process(c)), (
            c.click_id
        )
        assert verdicts[c.click_id.encode()].partition == key_partition(c.click_id.encode(), 3)


def test_verdicts_carry_the_model_s_decision_at_the_slice_threshold(pipeline: Pipeline) -> None:
    outputs = pipeline.send([c.to_json() for c in scripted_clicks()])
    verdicts = [orjson.loads(o.value) for o in outputs if o.topic == pipeline.settings.topic(topics.VERDICTS)]
    scorer = pipeline.score.scorer
    assert verdicts and {v["model_version"] for v in verdicts} == {scorer.version}
    vectors = np.asarray([v["features"] for v in verdicts], dtype=np.float32)
    assert np.array_equal(np.asarray([v["score"] for v in verdicts], dtype=np.float32), scorer.score(vectors))
    for v in verdicts:
        assert v["revision"] == 0 and v["source"] == "live"
        assert v["decision"] == ("invalid" if v["score"] >= v["threshold"] else "valid")


def test_the_score_stage_scores_a_take_in_chunks_of_batch_max_events(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    routed = pipeline.send([c.to_json() for c in scripted_clicks()[:30]])
    bundles = [o for o in routed if o.topic == settings.topic(topics.CLICKS_BY_ENTITY)]
    pipeline.users.partitions.clear()
    pipeline.sessions.partitions.clear()
    batch = input_records(settings.topic(topics.CLICKS_BY_ENTITY), [b.value for b in bundles])
    chunks = list(pipeline.score.process(batch))
    assert [len(chunk) for chunk in chunks] == [8, 8, 8, 6]


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
