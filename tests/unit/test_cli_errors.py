"""User errors print one line and exit 1; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import io

import pytest
import typer
from aiokafka.errors import KafkaConnectionError
from rich.console import Console

from app.cli.errors import user_errors
from app.contracts.exceptions import IvtError


def _run(exc: BaseException) -> tuple[int | None, str]:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    with pytest.raises(typer.Exit) as caught, user_errors(console):
        raise exc
    return caught.value.exit_code, out.getvalue()


def test_an_ivt_error_is_one_line_and_exit_1() -> None:
    code, text = _run(IvtError("no such model 'x'"))
    assert code == 1 and text.strip() == "error: no such model 'x'"


def test_an_unreachable_broker_says_how_to_start_one() -> None:
    code, text = _run(KafkaConnectionError("Unable to bootstrap"))
    assert code == 1 and "ivt broker start" in text


def test_other_exceptions_are_not_swallowed() -> None:
    with pytest.raises(ZeroDivisionError), user_errors(Console(file=io.StringIO())):
        raise ZeroDivisionError("a bug")


@pytest.mark.parametrize("extra", [[], ["--processes", "2"], ["--split-stages"]])
def test_ivt_worker_refuses_unknown_stages_before_starting_anything(extra: list[str]) -> None:
    from typer.testing import CliRunner

    from app.cli.main import cli

    result = CliRunner().invoke(cli, ["worker", "--stages", "validate,nope", *extra])
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())  # rich draws the error in a box
    assert "unknown stage(s) nope; choose from validate, ip-counters, score" in text
