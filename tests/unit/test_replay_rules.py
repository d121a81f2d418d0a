"""Replay without a broker: the job contract, the publish/revision rule, progress, summary, billing."""

from __future__ import annotations

import pytest

from agents.replay.decide import SCORE_TOLERANCE, Action, Prior, plan, summary
from agents.replay.exceptions import BadJob
from agents.replay.job import ReplayJob, new_job_id, parse_offsets, parse_when
from agents.replay.progress import Progress
from app.contracts.billing import BillingBook, Entry

NOW = 1_795_000_000_000


def job(**kw: object) -> ReplayJob:
    base: dict[str, object] = dict(
        job_id="j-1",
        model_version="m1",
        mode="rescore",
        publish="changed",
        submitted_at_ms=NOW,
        offsets={0: (0, 10)},
    )
    base.update(kw)
    return ReplayJob(**base)  # type: ignore[arg-type]


def test_job_round_trips_through_json_and_resubmission_is_the_same_request() -> None:
    j = job(offsets={0: (5, 10), 3: (0, 2)}, mode="recompute", lookback_s=3600.0)
    assert ReplayJob.from_json(j.to_json()) == j
    later = ReplayJob.from_json(j.to_json().replace(b"2026-11-18T11:06:40.000Z", b"2026-11-19T11:06:40.000Z"))
    assert later.submitted_at_ms != j.submitted_at_ms and j.same_request(later)
    assert not j.same_request(job(model_version="m2"))
    t = job(offsets=None, start_ms=NOW, end_ms=NOW + 1000)
    assert ReplayJob.from_json(t.to_json()) == t and t.by_event_time


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        (dict(mode="redo"), "mode 'redo'"),
        (dict(publish="some"), "publish 'some'"),
        (dict(offsets={0: (3, 3)}), "empty range"),
        (dict(offsets={}), "empty range"),
        (dict(offsets={0: (9, 3)}), "not a range"),
        (dict(offsets=None), "either offsets or an event-time range"),
        (dict(offsets=None, start_ms=NOW, end_ms=NOW), "empty"),
        (dict(start_ms=NOW, end_ms=NOW + 1), "not both"),
        (dict(job_id="-x"), "job id"),
        (dict(model_version=""), "model version"),
        (dict(lookback_s=-1.0), "lookback"),
    ],
)
def test_bad_jobs_say_why(kw: dict[str, object], reason: str) -> None:
    with pytest.raises(BadJob, match=reason):
        job(**kw)


def test_strict_json_and_cli_parsers() -> None:
    with pytest.raises(BadJob, match="expected fields"):
        ReplayJob.from_json(b'{"job_id": "x"}')
    with pytest.raises(BadJob, match="not JSON"):
        ReplayJob.from_json(b"{")
    assert parse_offsets("0:100-200, 3:0-5") == {0: (100, 200), 3: (0, 5)}
    for bad in ("0:5", "a:1-2", "0:1-2,0:3-4", ""):
        with pytest.raises(BadJob):
            parse_offsets(bad)
    assert parse_when("2026-11-18T11:06:40Z", "start") == NOW
    assert parse_when(str(NOW), "start") == NOW
    with pytest.raises(BadJob, match="offset"):
        parse_when("2026-11-18T11:06:40", "start")
    assert new_job_id(NOW).startswith("replay-20261118T110640-")


def test_plan_publishes_changes_above_the_latest_revision_and_never_twice() -> None:
    prior = Prior(revision=2, invalid=False, score=0.3)
    assert plan(prior, False, True, 0.3, False) == (Action.PUBLISH, 3)  # decision flipped
    assert plan(prior, False, False, 0.3 + 10 * SCORE_TOLERANCE, False) == (Action.PUBLISH, 3)  # score moved
    assert plan(prior, False, False, 0.3 + SCORE_TOLERANCE / 2, False)[0] is Action.UNCHANGED
    assert plan(prior, False, False, 0.3, True) == (Action.PUBLISH, 3)  # publish all
    assert plan(None, False, False, 0.1, False) == (Action.PUBLISH, 1)  # no verdict yet
    assert plan(prior, True, True, 0.9, True)[0] is Action.ALREADY  # this job published it already


def test_progress_round_trips_and_summary_has_rates_before_and_after() -> None:
    p = Progress("j-1", NOW, state="running", range={0: (0, 10), 2: (5, 9)}, next={0: 4, 2: 5})
    p.add_rate("before", "desktop/in", True, True, False)
    p.add_rate("after", "desktop/in", False, True, False)
    p.add_rate("after", "app/anon", True, False, True)
    p.counters["flipped_to_valid"] = 1
    back = Progress.from_json(p.to_json())
    assert back == p and (back.total, back.done_positions) == (14, 4)
    s = summary(back)
    assert s["counters"]["flipped_to_valid"] == 1
    assert s["slices"]["desktop/in"]["before"]["fpr"] == 1.0
    assert s["slices"]["desktop/in"]["after"]["fpr"] == 0.0
    assert s["slices"]["all"]["after"]["clicks"] == 2 and s["slices"]["all"]["after"]["coverage"] == 1.0
    assert s["slices"]["all"]["before"]["ivr"] == 1.0


def test_billing_keeps_the_highest_revision_whatever_the_arrival_order() -> None:
    book = BillingBook()
    live = Entry(0, True, "live", None, "bad")
    fix = Entry(1, False, "replay", "j-1", "good")
    assert book.apply("c1", live) and book.apply("c1", fix)
    assert not book.apply("c1", live)  # a late or duplicated live verdict does not undo the correction
    assert book.apply("c1", fix)  # a correction delivered twice is the same decision
    assert book.decisions() == {"c1": "valid"} and book.billable() == {"c1"}
    assert (book.corrections, book.ignored) == (1, 1)
    book.apply_json("c2", b'{"revision": 0, "decision": "invalid", "source": "live", "model_version": "m"}')
    assert book.decisions()["c2"] == "invalid"
