"""The stream stages and the replay agent. Each stage is plain, typed logic (a
:class:`app.runtime.stage.Stage`: records in, records out, state behind a table interface) plus a
``bind(runtime)`` that registers it on a worker's Faust app. :data:`STAGES` names them in
data-flow order; the modules are imported only when a worker runs them."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.runtime.app import Runtime

__all__ = ["STAGES", "binding"]

#: Stage name -> the module that defines it, in data-flow order.
STAGES: dict[str, str] = {
    "validate": "agents.validate",
    "ip-counters": "agents.ip_counters",
    "score": "agents.score",
}


def binding(stage: str) -> Callable[[Runtime], None]:
    """The ``bind`` function of stage ``stage``."""
    bind: Callable[[Runtime], None] = importlib.import_module(STAGES[stage]).bind
    return bind
