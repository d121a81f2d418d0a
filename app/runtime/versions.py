"""The exact faust-streaming and aiokafka releases this package was written against.

Every module of :mod:`app.runtime` reaches into private names of these two libraries (the drain
loop, the consumer's ack books, the producer's open batches, the table's RocksDB partitions). Their
meaning is checked only for these releases, so on any other one the runtime refuses to start rather
than run with a protocol whose guarantees nobody checked. ``pyproject.toml`` pins both with ``==``.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version

from app.contracts.exceptions import ConfigError

__all__ = ["PINNED", "RuntimeVersionError", "check_versions", "installed_versions"]

#: Distribution name -> the release the runtime's patches were written and tested for.
PINNED: Mapping[str, str] = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


class RuntimeVersionError(ConfigError):
    """An installed faust-streaming or aiokafka is not the release the runtime was written for."""


def installed_versions() -> dict[str, str | None]:
    """The installed release of each pinned distribution (None when it is missing)."""
    found: dict[str, str | None] = {}
    for name in PINNED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def check_versions(installed: Mapping[str, str | None] | None = None) -> None:
    """Raise :class:`RuntimeVersionError` naming every distribution that is not its pinned release."""
    installed = installed_versions() if installed is None else installed
    wrong = [
        f"{name} {installed.get(name) or 'missing'} (needs =={wanted})"
        for name, wanted in PINNED.items()
        if installed.get(name) != wanted
    ]
    if wrong:
        raise RuntimeVersionError(
            "app.runtime patches private internals and was checked only against "
            + ", ".join(f"{n}=={v}" for n, v in PINNED.items())
            + f"; installed: {'; '.join(wrong)}. Install the lock file: make install"
        )
