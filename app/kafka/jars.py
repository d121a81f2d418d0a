"""Fetch the Apache Kafka server jars with Maven, once per version.

Maven resolves ``pom.xml`` beside this file (Kafka plus a log4j2 binding for SLF4J) into
``<cache_dir>/kafka-<version>/jars``. A marker file written after a successful copy makes later
calls instant and means a half-finished copy (Ctrl-C, network loss) is never used. A file lock
keeps two processes (say, two test sessions) from fetching into the same folder at once.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.contracts.exceptions import BrokerError
from app.contracts.settings import REPO_ROOT, Settings

__all__ = ["POM", "LOG4J_CONFIG", "cache_root", "kafka_home", "ensure_jars"]

POM = Path(__file__).with_name("pom.xml")
LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")
_MARKER = ".complete"
_MAVEN_TIMEOUT_S = 900
_TAIL_LINES = 25
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BOILERPLATE = re.compile(
    r"To see the full stack trace|Re-run Maven|For more information about|\[Help \d+\] http"
)


def cache_root(settings: Settings) -> Path:
    """``settings.cache_dir``, with a relative path taken from the repository root, not the cwd."""
    path = Path(settings.cache_dir).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def kafka_home(settings: Settings) -> Path:
    """Folder for one Kafka version: ``jars/`` and the fetch lock live here."""
    return cache_root(settings) / f"kafka-{settings.kafka_version}"


def ensure_jars(settings: Settings) -> Path:
    """Return the folder holding the Kafka jars for ``settings.kafka_version``, fetching it if needed."""
    home = kafka_home(settings)
    jars = home / "jars"
    if _complete(jars, settings.kafka_version):
        return jars
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Maven (mvn) is not on PATH; it fetches the Kafka broker jars. "
            "Install Maven 3.8+ and a JDK 17+ (e.g. apt-get install maven openjdk-17-jdk-headless)."
        )
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / ".lock"):
        if _complete(jars, settings.kafka_version):  # another process fetched while we waited
            return jars
        staging = home / f"jars.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            _run_maven(mvn, staging, settings.kafka_version, home)
            if not any(staging.glob("kafka_2.13-*.jar")):
                raise BrokerError(f"Maven finished but no kafka_2.13 jar is in {staging}")
            (staging / _MARKER).write_text(settings.kafka_version + "\n")
            shutil.rmtree(jars, ignore_errors=True)
            staging.rename(jars)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return jars


def _complete(jars: Path, version: str) -> bool:
    marker = jars / _MARKER
    return marker.is_file() and marker.read_text().strip() == version


def _run_maven(mvn: str, out_dir: Path, version: str, cwd: Path) -> None:
    cmd = [
        mvn, "-q", "-B", "-Dstyle.color=never",
        "-f", str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={out_dir}",
        "-DincludeScope=runtime",
        f"-Dkafka.version={version}",
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=_MAVEN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"Maven did not finish fetching Kafka {version} in {_MAVEN_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        tail = "\n".join(_useful_lines((proc.stdout or "") + (proc.stderr or ""))[-_TAIL_LINES:])
        raise BrokerError(
            f"Maven could not fetch the Kafka {version} jars (exit {proc.returncode}; "
            f"command: {' '.join(cmd)}). Last lines of its output:\n{tail}"
        )


def _useful_lines(output: str) -> list[str]:
    """Maven's output without colour codes, blank ``[ERROR]`` lines and its generic help links."""
    lines = (_ANSI.sub("", line).rstrip() for line in output.splitlines())
    return [line for line in lines if line.removeprefix("[ERROR]").strip() and not _BOILERPLATE.search(line)]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
