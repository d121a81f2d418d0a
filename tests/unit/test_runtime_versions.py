"""app.runtime.versions: the runtime runs only on the faust-streaming and aiokafka it was written for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.runtime.versions import PINNED, RuntimeVersionError, check_versions, installed_versions

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_releases_are_the_pinned_ones() -> None:
    # Fails after an upgrade of either library: re-read app/runtime against the new release first.
    assert installed_versions() == dict(PINNED)
    check_versions()


def test_pyproject_pins_exactly_the_releases_the_runtime_checks() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    for name, wanted in PINNED.items():
        assert re.search(rf'"{re.escape(name)}=={re.escape(wanted)}"', text), (
            f"{name} is not pinned =={wanted}"
        )


def test_another_release_is_refused_with_what_to_do() -> None:
    with pytest.raises(RuntimeVersionError) as caught:
        check_versions({"faust-streaming": "0.16.0", "aiokafka": PINNED["aiokafka"]})
    message = str(caught.value)
    assert "faust-streaming 0.16.0 (needs ==0.15.3)" in message and "make install" in message
    assert "aiokafka" not in message.split("installed:")[1]


def test_a_missing_library_is_refused() -> None:
    with pytest.raises(RuntimeVersionError, match="aiokafka missing"):
        check_versions({"faust-streaming": PINNED["faust-streaming"], "aiokafka": None})
