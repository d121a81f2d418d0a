"""A single-node Apache Kafka 4 broker (KRaft: broker and controller in one JVM) run as a detached process.

The JVM runs in its own session, so it outlives ``ivt broker start`` and ignores the terminal's
Ctrl-C. What another process (``ivt broker stop``/``status``) needs to find it is kept in
``<state dir>/state.json``; the state dir also holds ``server.properties``, ``data/`` and
``broker.log`` (the JVM's stdout and stderr: log4j lines and crashes alike).

"Ready" means a Kafka client got cluster metadata listing the broker, not that a port opened.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from app.contracts.exceptions import BrokerError
from app.contracts.settings import Settings
from app.kafka.admin import quiet_aiokafka
from app.kafka.jars import LOG4J_CONFIG, cache_root, ensure_jars

__all__ = [
    "BrokerState",
    "BrokerStatus",
    "JVM_OPTIONS",
    "LocalBroker",
    "broker_command",
    "new_cluster_id",
    "pick_free_ports",
    "port_in_use",
    "process_alive",
    "render_server_properties",
    "wait_for_exit",
]

HOST = "127.0.0.1"
NODE_ID = 1
_MAIN_CLASS = "kafka.Kafka"

#: JVM options of the local broker besides its heap, which is fixed (-Xms = -Xmx). Measured on 30,000-
#: click drains on this 2-core machine, where every core the broker takes is one the worker waits for:
#: - G1 with 16 MiB regions, as Kafka's production notes advise. A produce request is read into one
#:   heap buffer, a worker's run to a few MiB (512 KiB batches, several partitions), and G1 picked 1 MiB
#:   regions for this heap: each buffer over half a region was a "humongous" allocation that started
#:   a collection and a concurrent mark (54 of 56 collections in one benchmark, up to 0.9 s of GC
#:   threads per 3.5 s drain). 16 MiB regions put the threshold at 8 MiB.
#: - C1 only. The C2 compiler threads took 0.26-1.1 s of CPU per drain, every drain of a benchmark, on
#:   the short-lived broker of a test or benchmark run; with C1 alone they took 0.01-0.14 s, and the
#:   request handlers' CPU did not grow (0.32-0.43 s per drain against 0.37-0.71 s with C2).
JVM_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:G1HeapRegionSize=16m",
    "-XX:MaxGCPauseMillis=20",
    "-XX:TieredStopAtLevel=1",
)
_TAIL_LINES = 30
_PORT_RACE_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class BrokerState:
    """What ``state.json`` records about a running broker."""

    pid: int
    port: int
    controller_port: int
    bootstrap: str
    started_at: str
    kafka_version: str
    log: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BrokerState:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class BrokerStatus:
    """``running``: the recorded process is alive and is our broker. ``stale``: a state file was left
    by a broker that is gone (it has been removed)."""

    state_dir: Path
    state: BrokerState | None
    running: bool
    stale: bool


def render_server_properties(*, port: int, controller_port: int, data_dir: Path, host: str = HOST) -> str:
    """The broker config: one node that is both broker and controller, every replication factor 1."""
    lines = [
        "# Written by app/kafka/local.py on each start; edits are lost.",
        "process.roles=broker,controller",
        f"node.id={NODE_ID}",
        f"controller.quorum.voters={NODE_ID}@{host}:{controller_port}",
        f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        f"advertised.listeners=PLAINTEXT://{host}:{port}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        f"log.dirs={data_dir}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        # A lone dev broker has no reason to wait for more group members before the first rebalance.
        "group.initial.rebalance.delay.ms=0",
        # Every topic is created explicitly (ivt topics create): a typo or a forgotten topic fails
        # loudly instead of appearing with one partition and breaking co-partitioning.
        "auto.create.topics.enable=false",
        # Kafka preallocates every active segment's offset and time index as a sparse 10 MiB file and
        # maps it. On this machine's kernel (ext4, large-folio readahead) a fault in such a map reads
        # ahead far into the holes and zeroes them: the broker's kernel time per 30,000-click drain
        # grew from 0.16 s to 1.4 s as a benchmark's topics accumulated (half of its CPU in memset
        # under filemap_fault), and the worker waited for it. 1 MiB still indexes a 340 MiB segment.
        "log.index.size.max.bytes=1048576",
    ]
    return "\n".join(lines) + "\n"


def broker_command(java: str, jars: Path, properties: Path, *, heap: str) -> list[str]:
    """The java command line of the local broker: a fixed heap and :data:`JVM_OPTIONS`."""
    return [
        java,
        f"-Xmx{heap}",
        f"-Xms{heap}",
        *JVM_OPTIONS,
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "-cp", f"{jars}/*",
        _MAIN_CLASS,
        str(properties),
    ]  # fmt: skip


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url without padding (Kafka's ``Uuid`` form)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka avoids these too: they read like a CLI flag
            return text


def pick_free_ports(count: int = 2, host: str = HOST) -> list[int]:
    """Distinct ports the OS says are free now (all sockets are held open together so they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_in_use(port: int, host: str = HOST) -> bool:
    """True when something listens on ``host:port`` (SO_REUSEADDR: a TIME_WAIT leftover is not "in use")."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def process_alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie (exited, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with suppress(OSError):
        return stat.read_text().rpartition(")")[2].split()[0] != "Z"
    return True


def _cmdline(pid: int) -> list[str] | None:
    """The process's argv, or None where /proc is not available."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return [] if Path("/proc/self").exists() else None
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")


class LocalBroker:
    """Start, wait for, stop and inspect the local broker whose state lives in ``state_dir``.

    Ports come from ``settings.broker_port``/``broker_controller_port`` unless ``free_ports`` is set
    (tests, side-by-side runs), in which case the OS picks two free ones at each start.
    ``die_with_parent`` (Linux; for test sessions) has the kernel SIGTERM the broker when the
    thread that started it dies, so a killed test run leaves no JVM behind.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        state_dir: Path | None = None,
        free_ports: bool = False,
        die_with_parent: bool = False,
    ) -> None:
        self.settings = settings
        # Absolute, so `ivt broker stop` run from another folder matches the broker's command line.
        self.state_dir = (
            Path(state_dir) if state_dir is not None else cache_root(settings) / "broker"
        ).resolve()
        self.free_ports = free_ports
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def properties_path(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "broker.log"

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def bootstrap(self) -> str:
        """``host:port`` of the running broker."""
        status = self.status()
        if status.state is None or not status.running:
            raise BrokerError(f"no local broker is running (state dir {self.state_dir})")
        return status.state.bootstrap

    # -- status ------------------------------------------------------------------------------------

    def status(self) -> BrokerStatus:
        """Read ``state.json``; a record of a process that is gone (or is not our broker) is removed."""
        try:
            state = BrokerState.from_json(self.state_path.read_text())
        except FileNotFoundError:
            return BrokerStatus(self.state_dir, None, running=False, stale=False)
        except (ValueError, TypeError):
            state = None
        if state is not None and self._is_our_broker(state.pid):
            return BrokerStatus(self.state_dir, state, running=True, stale=False)
        self.state_path.unlink(missing_ok=True)
        return BrokerStatus(self.state_dir, state, running=False, stale=True)

    def _is_our_broker(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        if not process_alive(pid):
            return False
        argv = _cmdline(pid)
        if argv is None:  # no /proc: trust the pid
            return True
        return _MAIN_CLASS in argv and str(self.properties_path) in argv

    # -- start -------------------------------------------------------------------------------------

    def start(self, *, timeout_s: float = 60.0) -> BrokerState:
        """Start the broker and return once it serves metadata. A running one is reused."""
        status = self.status()
        if status.running and status.state is not None:
            self._check_reusable(status.state)
            self.wait_ready(timeout_s=timeout_s)
            return status.state
        fixed = None if self.free_ports else self._fixed_ports()  # refuse before a slow jar fetch
        java = _java()
        jars = ensure_jars(self.settings)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if fixed else _PORT_RACE_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port, controller_port = fixed or pick_free_ports(2)
            try:
                return self._launch(java, jars, port, controller_port, timeout_s)
            except _PortRace:
                if attempt == attempts:
                    raise BrokerError(
                        f"free ports kept being taken before the broker bound them; see {self.log_path}"
                    ) from None
        raise AssertionError("unreachable")

    def _check_reusable(self, state: BrokerState) -> None:
        wanted = (self.settings.broker_port, self.settings.broker_controller_port)
        if not self.free_ports and (state.port, state.controller_port) != wanted:
            raise BrokerError(
                f"a local broker is already running on {state.bootstrap} (pid {state.pid}, state dir "
                f"{self.state_dir}), not on the configured port {wanted[0]}; stop it first (ivt broker stop)"
            )

    def _fixed_ports(self) -> tuple[int, int]:
        """The configured ports, refused clearly when something else already listens there."""
        port, controller_port = self.settings.broker_port, self.settings.broker_controller_port
        if port == controller_port:
            raise BrokerError(f"IVT_BROKER_PORT and IVT_BROKER_CONTROLLER_PORT are both {port}")
        for value, var in ((port, "IVT_BROKER_PORT"), (controller_port, "IVT_BROKER_CONTROLLER_PORT")):
            if port_in_use(value):
                raise BrokerError(
                    f"port {value} ({var}) on {HOST} is already in use by another process, not by the "
                    f"broker of {self.state_dir}. Stop that process, pick other ports with "
                    f"IVT_BROKER_PORT/IVT_BROKER_CONTROLLER_PORT, or run `ivt broker start --free-ports`."
                )
        return port, controller_port

    def _launch(
        self, java: str, jars: Path, port: int, controller_port: int, timeout_s: float
    ) -> BrokerState:
        self.properties_path.write_text(
            render_server_properties(port=port, controller_port=controller_port, data_dir=self.data_dir)
        )
        self._format_storage(java, jars)
        if self.log_path.exists():
            self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
        cmd = broker_command(java, jars, self.properties_path, heap=self.settings.broker_heap)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.state_dir, start_new_session=True,
                preexec_fn=_parent_death_signal() if self.die_with_parent else None,
            )  # fmt: skip
        state = BrokerState(
            pid=self._proc.pid,
            port=port,
            controller_port=controller_port,
            bootstrap=f"{HOST}:{port}",
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            kafka_version=self.settings.kafka_version,
            log=str(self.log_path),
        )
        _write_atomically(self.state_path, state.to_json())
        try:
            self.wait_ready(timeout_s=timeout_s)
        except BrokerError:
            self._kill(state.pid, term_timeout_s=5.0)
            self.state_path.unlink(missing_ok=True)
            if self.free_ports and "Address already in use" in self.log_tail():
                raise _PortRace from None
            raise
        return state

    def _format_storage(self, java: str, jars: Path) -> None:
        """Format the KRaft metadata dir once; later starts reuse its cluster id and data."""
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            java, f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", f"{jars}/*",
            "kafka.tools.StorageTool", "format", "--ignore-formatted",
            "-t", new_cluster_id(), "-c", str(self.properties_path),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            output = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-_TAIL_LINES:])
            raise BrokerError(f"formatting KRaft storage in {self.data_dir} failed:\n{output}")

    # -- readiness ---------------------------------------------------------------------------------

    def wait_ready(self, *, timeout_s: float = 60.0) -> None:
        """Block until the broker answers a metadata request listing itself (see :meth:`wait_ready_async`)."""
        asyncio.run(self.wait_ready_async(timeout_s=timeout_s))

    async def wait_ready_async(self, *, timeout_s: float = 60.0) -> None:
        """Poll with a real client until the broker lists itself; fail fast if its process dies."""
        deadline = time.monotonic() + timeout_s
        last_error = "no answer yet"
        with quiet_aiokafka():
            while True:
                status = self.status()
                if not status.running or status.state is None:
                    raise BrokerError(
                        f"the broker exited before it was ready{self._exit_note()}." + self._tail_note()
                    )
                try:
                    if await asyncio.wait_for(_serves_metadata(status.state.bootstrap), timeout=5.0):
                        return
                    last_error = "metadata lists no broker yet"
                except Exception as exc:  # any client error just means "not yet"
                    last_error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    raise BrokerError(
                        f"the broker on {status.state.bootstrap} was not ready after {timeout_s:.0f} s "
                        f"(last error: {last_error})." + self._tail_note()
                    )
                await asyncio.sleep(0.1)  # poll interval between readiness probes

    def _exit_note(self) -> str:
        code = self._proc.poll() if self._proc is not None else None
        return f" (exit code {code})" if code is not None else ""

    def log_tail(self, lines: int = _TAIL_LINES) -> str:
        """Last lines of ``broker.log`` (empty if there is none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def _tail_note(self) -> str:
        return f" Log: {self.log_path}\n--- last lines ---\n{self.log_tail()}"

    # -- stop --------------------------------------------------------------------------------------

    def stop(self, *, timeout_s: float = 30.0) -> bool:
        """SIGTERM the broker (a clean controlled shutdown), SIGKILL it after ``timeout_s``.

        Returns False when there was nothing to stop (no state, or a stale one, which is removed).
        """
        status = self.status()
        if not status.running or status.state is None:
            return False
        self._kill(status.state.pid, term_timeout_s=timeout_s)
        self.state_path.unlink(missing_ok=True)
        return True

    def _kill(self, pid: int, *, term_timeout_s: float) -> None:
        _signal_group(pid, signal.SIGTERM)
        if not self._wait_exit(pid, term_timeout_s):
            _signal_group(pid, signal.SIGKILL)
            if not self._wait_exit(pid, 10.0):
                raise BrokerError(f"broker pid {pid} survived SIGKILL; log: {self.log_path}")
        _signal_group(pid, signal.SIGKILL)  # anything else left in its process group

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return False
            return True
        return wait_for_exit(pid, timeout_s)

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _PortRace(Exception):
    """A free port was taken between picking it and the broker binding it."""


async def _serves_metadata(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    finally:
        await admin.close()


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is not None and candidate.is_file():
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise BrokerError("java is not on PATH (and JAVA_HOME is unset); the broker needs a JDK 17+")
    return found


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child when its parent dies (None elsewhere).

    libc is looked up here, in the parent: the hook runs between fork and exec, where it must not
    import or allocate much.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the broker's process group (it leads its own session); fall back to the pid alone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with suppress(ProcessLookupError):
            os.kill(pid, sig)
    except PermissionError as exc:
        raise BrokerError(f"not allowed to signal broker pid {pid}: {exc}") from exc


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for any process (not only a child) to exit; a pidfd turns readable then."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        try:
            select.select([fd], [], [], timeout_s)
        finally:
            os.close(fd)
        return not process_alive(pid)
    deadline = time.monotonic() + timeout_s
    while process_alive(pid):  # no pidfd (old kernel, not Linux): poll
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
