"""Every benchmark script keeps running: ``make bench-short`` (which CI runs) runs each one in a short
form, and each one at least parses its arguments. Cheap: no broker, no benchmark is run here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))


def bench_short_recipe() -> list[str]:
    """The command lines of the Makefile's ``bench-short`` target (its tab-indented recipe)."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"bench-short\s*:", line))
    recipe: list[str] = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_there_are_benchmark_scripts() -> None:
    assert "bench_live.py" in SCRIPTS and len(SCRIPTS) > 1


def test_bench_short_runs_every_benchmark_script() -> None:
    recipe = " ".join(bench_short_recipe())
    run = set(re.findall(r"benchmarks/(\w+\.py)", recipe))
    missing = sorted(set(SCRIPTS) - run)
    assert not missing, f"make bench-short does not run {', '.join(missing)}: add a short form of each"
    assert run <= set(SCRIPTS), (
        f"make bench-short runs scripts that do not exist: {sorted(run - set(SCRIPTS))}"
    )


def test_bench_short_keeps_install_as_its_prerequisite() -> None:
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^bench-short:\s*install\s*$", text, re.MULTILINE)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_zero(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
