"""agents.validate.Validate without a broker: every record ends in exactly one place."""

from __future__ import annotations

from pathlib import Path

import orjson

from agents.validate import Validate
from app.contracts import topics
from app.contracts.events import parse_click
from app.contracts.topics import key_partition
from app.contracts.validation import DLQ_REASON
from app.runtime.testing import input_records, run
from tests.integration.scripted import scripted_clicks
from tests.unit.stage_helpers import settings_for


def test_good_clicks_go_to_their_ip_s_partition_in_canonical_form_and_bad_bytes_to_the_dlq(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, click_partitions=4)
    stage = Validate(settings)
    clicks = scripted_clicks()[:10]
    values = [c.to_json() for c in clicks] + [b"not json", orjson.dumps({"click_id": "x"})]
    batch = input_records(settings.topic(topics.CLICKS), values, partition=2)
    batch[0] = batch[0]._replace(headers=[("ivt-sent-ns", b"1"), ("trace", b"drop me")])

    (outputs,) = run(stage, [batch], {settings.topic(topics.CLICKS_BY_IP): 4})

    good = [o for o in outputs if o.topic == settings.topic(topics.CLICKS_BY_IP)]
    dlq = [o for o in outputs if o.topic == settings.topic(topics.CLICKS_DLQ)]
    assert len(good) == 10 and len(dlq) == 2 and len(outputs) == 12
    for click, out in zip(clicks, good, strict=True):
        assert out.key == click.ip.encode() and out.partition == key_partition(out.key, 4)
        assert parse_click(out.value) == click
    assert good[0].headers == [("ivt-sent-ns", b"1")]  # our headers travel, others stay behind
    assert [o.value for o in dlq] == values[10:]  # the original bytes, untouched
    assert all(o.partition is None and dict(o.headers)[DLQ_REASON] for o in dlq)


def test_nothing_is_bound_when_producers_key_clicks_by_ip(tmp_path: Path) -> None:
    from agents.validate import bind
    from app.runtime.app import create_app

    runtime = create_app(settings_for(tmp_path, clicks_keyed_by_ip=True))
    bind(runtime)
    assert not runtime.app.agents
    runtime = create_app(settings_for(tmp_path))
    bind(runtime)
    (agent,) = runtime.app.agents.values()
    assert agent.name == "validate-clicks" and agent.channel.get_topic_name() == "clicks"
