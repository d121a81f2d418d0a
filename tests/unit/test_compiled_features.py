"""The mypyc-compiled feature engine: used only when built from these very sources, and identical."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from app.features import compiled
from app.features.compiled import MANIFEST, is_current

ROOT = Path(__file__).resolve().parents[2]

# Vectors of a fixed click sequence (a gateway IP, a burst, a human, random traffic) through both
# stages, state round-tripped through its bytes as the live tables do.
VECTORS = """
import random, sys
import numpy as np
import app.features as features
from app.features import OfflineFeatureEngine
from tests.integration.scripted import click, scripted_clicks
rng = random.Random(7)
clicks = scripted_clicks() + [
    click(f"r-{k}", 1000.0 + k * rng.random(), f"10.0.{rng.randrange(40)}.1", f"s-{rng.randrange(300)}",
          rng.choice([None, f"u-{rng.randrange(200)}"]), rng.choice(["desktop", "mobile", "app"]))
    for k in range(3000)
]
engine = OfflineFeatureEngine(through_bytes=True)
np.save(sys.argv[1], np.stack([engine.process(c) for c in clicks]))
print("compiled" if features.COMPILED else "python")
"""


def _vectors(out: Path, compiled_on: bool) -> tuple[np.ndarray, str]:
    env = {**os.environ, "IVT_COMPILED_FEATURES": "auto" if compiled_on else "off"}
    result = subprocess.run(
        [sys.executable, "-c", VECTORS, str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return np.load(out), result.stdout.strip()


def test_compiled_engine_gives_the_python_engine_s_vectors_bit_for_bit(tmp_path: Path) -> None:
    if not is_current(compiled.compiled_dir()):
        if os.environ.get("CI") == "true":
            pytest.fail("make install did not build the compiled feature engine (is a C compiler there?)")
        pytest.skip("no current compiled build (make install builds it)")
    fast, which_fast = _vectors(tmp_path / "compiled.npy", compiled_on=True)
    slow, which_slow = _vectors(tmp_path / "python.npy", compiled_on=False)
    assert (which_fast, which_slow) == ("compiled", "python")
    assert fast.dtype == slow.dtype == np.float32
    assert fast.tobytes() == slow.tobytes()


def _manifest(folder: Path, sources: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).write_bytes(
        orjson.dumps({"interpreter": compiled._interpreter(), "sources": sources})  # noqa: SLF001
    )


def test_a_build_of_these_sources_is_current(tmp_path: Path) -> None:
    _manifest(tmp_path, compiled._sources(compiled.SOURCE_DIR))  # noqa: SLF001
    assert is_current(tmp_path)


def test_an_edited_source_makes_the_build_stale(tmp_path: Path) -> None:
    sources = compiled._sources(compiled.SOURCE_DIR)  # noqa: SLF001
    _manifest(tmp_path, {**sources, "engine": "0" * 64})
    assert not is_current(tmp_path)


def test_no_build_or_a_broken_manifest_is_not_current(tmp_path: Path) -> None:
    assert not is_current(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    assert not is_current(tmp_path)


def test_a_stale_build_is_not_put_in_front_of_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _manifest(tmp_path, {name: "0" * 64 for name in compiled.COMPILED_MODULES})
    monkeypatch.setenv("IVT_COMPILED_DIR", str(tmp_path))
    path = ["/the/package"]
    assert compiled.use_compiled_modules(path) is False
    assert path == ["/the/package"]


def test_off_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _manifest(tmp_path, compiled._sources(compiled.SOURCE_DIR))  # noqa: SLF001
    monkeypatch.setenv("IVT_COMPILED_DIR", str(tmp_path))
    monkeypatch.setenv("IVT_COMPILED_FEATURES", "off")
    monkeypatch.setattr(sys, "path", list(sys.path))  # the runtime module's folder is appended to it
    path = ["/the/package"]
    assert compiled.use_compiled_modules(path) is False
    monkeypatch.setenv("IVT_COMPILED_FEATURES", "auto")
    assert compiled.use_compiled_modules(path) is True
    assert path == [str(tmp_path / "app" / "features"), "/the/package"]
