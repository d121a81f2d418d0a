"""The ground-truth scoreboard: what the decisions did to true humans and true bots, beside the
weak-label figures (IVR, purchase FPR), overall, per slice and per bot family.

The simulator knows who made every click (``_truth`` on the wire, ``truth_family`` in datasets);
the detector never reads it. The same quantities come from the live verdicts (``ivt demo``,
:class:`Scoreboard`) and from a held-out day offline (``ivt evaluate``, :func:`summarise`), so the
two can be compared figure for figure. Rates are fractions; a rate with nothing to divide is None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from app.simulator.truth import BOT_FAMILIES, HUMAN

__all__ = ["Scoreboard", "summarise", "rate", "format_table"]


def rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _group(invalid: np.ndarray, human: np.ndarray, purchasing: np.ndarray) -> dict[str, Any]:
    bot = ~human
    return {
        "clicks": int(len(invalid)),
        "human_clicks": int(human.sum()),
        "ivr": rate(int(invalid.sum()), len(invalid)),
        "purchasing_clicks": int(purchasing.sum()),
        "purchase_fpr": rate(int((invalid & purchasing).sum()), int(purchasing.sum())),
        "human_fpr": rate(int((invalid & human).sum()), int(human.sum())),
        "bot_recall": rate(int((invalid & bot).sum()), int(bot.sum())),
    }


def summarise(
    slices: ArrayLike, families: ArrayLike, invalid: ArrayLike, purchasing: ArrayLike
) -> dict[str, Any]:
    """``{"overall": {...}, "slices": {slice: {...}}, "families": {family: {"clicks", "recall"}}}``
    for clicks given as parallel arrays (slice, true family, decided invalid, purchased)."""
    sl = np.asarray(slices, dtype=object)
    fam = np.asarray(families, dtype=object)
    inv = np.asarray(invalid, dtype=bool)
    pur = np.asarray(purchasing, dtype=bool)
    human = fam == HUMAN
    families_out = {}
    for family in BOT_FAMILIES:
        mine = fam == family
        if mine.any():
            families_out[family] = {
                "clicks": int(mine.sum()),
                "recall": rate(int(inv[mine].sum()), int(mine.sum())),
            }
    return {
        "overall": _group(inv, human, pur),
        "slices": {s: _group(inv[sl == s], human[sl == s], pur[sl == s]) for s in sorted(set(sl.tolist()))},
        "families": families_out,
    }


@dataclass
class Scoreboard:
    """Live decisions joined with the truth of their clicks and with purchases, by click id.

    Feed it the clicks as they were published (with their truth), the verdicts and the purchases,
    in any order; only clicks with both a truth and a verdict count. The first verdict of a click
    counts (a later one is a replay correction or an at-least-once duplicate).
    """

    truth: dict[str, str] = field(default_factory=dict)
    decided: dict[str, tuple[str, bool]] = field(default_factory=dict)
    purchased: set[str] = field(default_factory=set)
    model_versions: set[str] = field(default_factory=set)

    def click(self, click_id: str, family: str) -> None:
        self.truth[click_id] = family

    def verdict(self, click_id: str, slice_: str, invalid: bool, model_version: str) -> None:
        if click_id not in self.decided:
            self.decided[click_id] = (slice_, invalid)
            self.model_versions.add(model_version)

    def purchase(self, click_id: str) -> None:
        self.purchased.add(click_id)

    def judged(self) -> Sequence[str]:
        """Click ids with both a truth and a verdict."""
        return [c for c in self.decided if c in self.truth]

    def summary(self) -> dict[str, Any]:
        ids = self.judged()
        decided, truth, purchased = self.decided, self.truth, self.purchased
        return summarise(
            [decided[c][0] for c in ids],
            [truth[c] for c in ids],
            [decided[c][1] for c in ids],
            [c in purchased for c in ids],
        )


def format_table(summary: dict[str, Any]) -> list[str]:
    """The summary as text lines: slices and overall, then bot families."""

    def pct(x: float | None) -> str:
        return "      -" if x is None else f"{x:7.1%}"

    lines = [
        f"  {'slice':<13} {'clicks':>8} {'IVR':>7} {'purchasing':>10} {'purch FPR':>9} "
        f"{'humans':>8} {'human FPR':>9} {'bot recall':>10}"
    ]
    rows = [*summary["slices"].items(), ("all", summary["overall"])]
    for name, g in rows:
        lines.append(
            f"  {name:<13} {g['clicks']:>8,} {pct(g['ivr'])} {g['purchasing_clicks']:>10,} "
            f"{pct(g['purchase_fpr']):>9} {g['human_clicks']:>8,} {pct(g['human_fpr']):>9} "
            f"{pct(g['bot_recall']):>10}"
        )
    if summary["families"]:
        lines.append(
            "  bot recall by family: "
            + ", ".join(
                f"{f} {pct(v['recall']).strip()} of {v['clicks']:,}" for f, v in summary["families"].items()
            )
        )
    return lines
