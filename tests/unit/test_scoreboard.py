"""models.scoreboard: live and offline decisions judged against the simulator's truth."""

from __future__ import annotations

import pytest

from models.scoreboard import Scoreboard, format_table, summarise


def test_summary_counts_each_rate_over_its_own_population() -> None:
    s = summarise(
        slices=["desktop/anon", "desktop/anon", "desktop/anon", "app/in", "app/in"],
        families=["human", "human", "burst", "human", "stolen_account"],
        invalid=[True, False, True, False, False],
        purchasing=[True, True, False, False, False],
    )
    overall = s["overall"]
    assert overall == {
        "clicks": 5,
        "human_clicks": 3,
        "ivr": pytest.approx(2 / 5),
        "purchasing_clicks": 2,
        "purchase_fpr": pytest.approx(1 / 2),
        "human_fpr": pytest.approx(1 / 3),
        "bot_recall": pytest.approx(1 / 2),
    }
    assert s["slices"]["app/in"]["purchase_fpr"] is None  # nothing to divide: None, not 0
    assert s["slices"]["desktop/anon"]["bot_recall"] == 1.0
    assert s["families"] == {
        "stolen_account": {"clicks": 1, "recall": 0.0},
        "burst": {"clicks": 1, "recall": 1.0},
    }


def test_the_live_board_joins_truth_verdicts_and_purchases_in_any_order() -> None:
    board = Scoreboard()
    board.verdict("c1", "mobile/in", True, "mlp-0001")
    board.purchase("c1")
    board.click("c1", "human")
    board.click("c2", "fast_scraper")
    board.verdict("c2", "desktop/anon", True, "mlp-0001")
    board.verdict("c2", "desktop/anon", False, "mlp-0002")  # a later verdict does not replace the first
    board.click("c3", "human")  # no verdict yet: not judged
    s = board.summary()
    assert s["overall"]["clicks"] == 2 and s["overall"]["purchase_fpr"] == 1.0
    assert s["overall"]["human_fpr"] == 1.0 and s["families"]["fast_scraper"]["recall"] == 1.0
    assert board.model_versions == {"mlp-0001"}
    lines = format_table(s)
    assert lines[-2].lstrip().startswith("all") and "fast_scraper 100.0% of 1" in lines[-1]
