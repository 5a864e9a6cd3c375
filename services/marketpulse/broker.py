"""A real single-node Apache Kafka broker (KRaft) from Maven Central jars, without Docker.

Tests and the demo must talk to a genuine broker. Where no Docker engine answers, this module
fetches Kafka's own jars once with Maven (``deploy/kafka/pom.xml``), caches them, and runs
``kafka.Kafka`` as a child JVM on two free loopback ports.

Library use::

    with LocalBroker() as broker:
        bootstrap = broker.start()  # "127.0.0.1:<port>"

By hand::

    python -m marketpulse.broker start [--dir var/kafka] [--foreground]
    python -m marketpulse.broker status [--dir var/kafka]
    python -m marketpulse.broker stop [--dir var/kafka]

Recipe and rationale: KAFKA_LOCAL.md (shared notes) and deploy/kafka/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, NamedTuple

import psutil

KAFKA_VERSION = "3.9.2"
SCALA_VERSION = "2.13"
NODE_ID = 1

# The broker jar is the marker of a complete download: ensure_jars() only ever renames a fully
# populated folder into place, so its presence means every other jar is there too.
_KAFKA_JAR = f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar"

# Per KAFKA_LOCAL.md, with a smaller heap: a test broker holds a few MB of data, and several of
# them (xdist workers, restart tests) may run at once on a laptop.
_JVM_FLAGS: tuple[str, ...] = (
    "-Xms128m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
)

_LOG_TAIL_LINES = 30
_MAVEN_TIMEOUT_S = 900
_FORMAT_TIMEOUT_S = 120
_POLL_INTERVAL_S = 0.2


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started, reached or stopped."""


# --------------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Root of marketpulse's machine-wide cache (``$MPX_CACHE_DIR`` or ~/.cache/marketpulse)."""
    override = os.environ.get("MPX_CACHE_DIR")
    return Path(override).expanduser() if override else Path.home() / ".cache" / "marketpulse"


def libs_dir() -> Path:
    """Folder holding every runtime jar of the pinned Kafka version."""
    return cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"


def deploy_dir() -> Path:
    """``deploy/kafka`` of the source tree (pom.xml, log4j.properties).

    Overridable with ``$MPX_KAFKA_DEPLOY_DIR`` for installs that are not a source checkout.
    """
    override = os.environ.get("MPX_KAFKA_DEPLOY_DIR")
    if override:
        return Path(override).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "deploy" / "kafka"


def _java() -> str:
    """The java executable, preferring $JAVA_HOME like Kafka's own scripts do."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise BrokerError(
            "java not found: the local Kafka broker needs a JDK 17+ on PATH (or $JAVA_HOME), "
            "e.g. `apt-get install openjdk-17-jdk-headless`"
        )
    return found


def _mvn() -> str:
    found = shutil.which("mvn")
    if not found:
        raise BrokerError(
            "mvn (Apache Maven) not found on PATH: it is needed once to fetch the Kafka "
            f"{KAFKA_VERSION} jars from Maven Central into {libs_dir()}"
        )
    return found


# --------------------------------------------------------------------------------------------
# Jars
# --------------------------------------------------------------------------------------------


def ensure_jars(progress: bool = True) -> Path:
    """Return the folder of Kafka's jars, downloading them with Maven the first time."""
    libs = libs_dir()
    if (libs / _KAFKA_JAR).is_file():
        return libs
    pom = deploy_dir() / "pom.xml"
    if not pom.is_file():
        raise BrokerError(f"{pom} not found; set MPX_KAFKA_DEPLOY_DIR to the deploy/kafka folder")
    mvn = _mvn()
    _java()  # Maven itself runs on the JDK: fail with the clearer message.
    libs.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_downloads(libs.parent)
    # Download next to the final folder (same filesystem) and rename it in one step, so a killed
    # download never leaves a half-filled libs folder that would later pass the marker check.
    staging = Path(tempfile.mkdtemp(prefix=".libs-download-", dir=libs.parent))
    try:
        if progress:
            print(
                f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central "
                f"(one time, ~1 min) into {libs} …",
                file=sys.stderr,
                flush=True,
            )
        started = time.monotonic()
        _run_maven(mvn, pom, staging)
        _move_into_place(staging, libs)
        if progress:
            elapsed = time.monotonic() - started
            print(f"Kafka {KAFKA_VERSION} jars ready ({elapsed:.0f}s)", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return libs


def _remove_stale_downloads(parent: Path) -> None:
    # A SIGKILLed download leaves its staging folder behind; one older than the Maven timeout
    # cannot belong to a download still running in another process.
    for stale in parent.glob(".libs-download-*"):
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > _MAVEN_TIMEOUT_S:
                shutil.rmtree(stale)


def _run_maven(mvn: str, pom: Path, out_dir: Path) -> None:
    cmd = [mvn, "-q", "-B", "-f", str(pom), "package", f"-Dlibs.dir={out_dir}"]
    try:
        # Generous bound: a stalled connection must end in an error, not hang a test session.
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_MAVEN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"`{' '.join(cmd)}` did not finish in {_MAVEN_TIMEOUT_S}s") from exc
    if result.returncode != 0 or not (out_dir / _KAFKA_JAR).is_file():
        output = _last_lines(result.stdout + result.stderr, 20)
        raise BrokerError(
            f"`{' '.join(cmd)}` failed (exit {result.returncode}); is Maven Central "
            f"reachable?\n{output}"
        )


def _move_into_place(staging: Path, libs: Path) -> None:
    if libs.exists() and not (libs / _KAFKA_JAR).is_file():
        shutil.rmtree(libs)  # Left over from an older, non-atomic layout: not trustworthy.
    try:
        staging.rename(libs)
    except OSError:
        # A concurrent process (e.g. another pytest-xdist worker) finished first; its folder was
        # renamed into place whole, so it is as good as ours.
        if not (libs / _KAFKA_JAR).is_file():
            raise


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 chars)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Like Kafka's Uuid.randomUuid(): a leading "-" would be parsed as a command-line flag.
        if not cluster_id.startswith("-"):
            return cluster_id


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports that are free right now (bind port 0, then release)."""
    sockets: list[socket.socket] = []
    try:
        # Hold every socket until all are picked, so the kernel cannot hand out one port twice.
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The JVM binds with SO_REUSEADDR, so TIME_WAIT leftovers from the previous run of this
        # broker must not count as "in use"; only a live listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _last_lines(text: str, count: int) -> str:
    return "\n".join(text.splitlines()[-count:])


def _tail_file(path: Path, count: int = _LOG_TAIL_LINES) -> str:
    try:
        return _last_lines(path.read_text(errors="replace"), count)
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# Readiness probe: one raw Kafka Metadata request
# --------------------------------------------------------------------------------------------
# A raw request keeps the probe free of asyncio, so LocalBroker.start() works the same from
# sync code, from a thread, or while an event loop is running (e.g. inside an async fixture).
# Metadata v4 is accepted by Kafka 1.0 through 4.x (4.0 dropped v0-v3).

_METADATA_API_KEY = 3
_METADATA_VERSION = 4


def _metadata_request(correlation_id: int) -> bytes:
    client_id = b"marketpulse-probe"
    header = struct.pack(
        ">hhih", _METADATA_API_KEY, _METADATA_VERSION, correlation_id, len(client_id)
    )
    # Empty (not null) topic list: we only want the broker list; allow_auto_topic_creation=false.
    body = struct.pack(">i?", 0, False)
    payload = header + client_id + body
    return struct.pack(">i", len(payload)) + payload


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


class ClusterMetadata(NamedTuple):
    """The part of a Metadata response the probe needs."""

    cluster_id: str | None
    brokers: list[tuple[int, str, int]]  # (node_id, host, port) of live (unfenced) brokers


def cluster_metadata(host: str, port: int, timeout: float = 2.0) -> ClusterMetadata:
    """Send one Metadata request to a broker and parse its cluster id and broker list.

    Raises OSError (incl. ConnectionError, timeouts) or struct.error when it does not answer
    properly. A KRaft broker that is up but still fenced answers with an empty broker list.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(_metadata_request(correlation_id=1))
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        response = _recv_exact(sock, size)
    # Response v4: correlation_id, throttle_time_ms, brokers[], cluster_id, controller_id, topics[]
    _correlation, _throttle, count = struct.unpack_from(">iii", response, 0)
    offset = 12
    brokers: list[tuple[int, str, int]] = []
    for _ in range(count):
        node_id, host_len = struct.unpack_from(">ih", response, offset)
        offset += 6
        broker_host = response[offset : offset + host_len].decode()
        offset += host_len
        broker_port, rack_len = struct.unpack_from(">ih", response, offset)
        offset += 6 + max(rack_len, 0)  # rack: nullable string, -1 = null
        brokers.append((node_id, broker_host, broker_port))
    (id_len,) = struct.unpack_from(">h", response, offset)
    cluster_id = response[offset + 2 : offset + 2 + id_len].decode() if id_len >= 0 else None
    return ClusterMetadata(cluster_id, brokers)


def broker_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """True if the first broker of ``bootstrap`` answers a Metadata request with live brokers."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        return bool(cluster_metadata(host or "127.0.0.1", int(port), timeout).brokers)
    except (OSError, struct.error, ValueError):
        return False


def docker_engine_available(timeout: float = 2.0) -> bool:
    """True only if a Docker engine actually answers a ping (a `docker` CLI alone is not enough)."""
    try:
        import docker  # dev dependency (via testcontainers); absent in production installs
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=int(max(timeout, 1)))
    except Exception:  # no socket, bad DOCKER_HOST, ... all mean "no engine"
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


# --------------------------------------------------------------------------------------------
# The broker process
# --------------------------------------------------------------------------------------------

# Brokers started by this process, stopped at interpreter exit so an aborted test run or demo
# does not leave JVMs behind. Detached (CLI background) brokers are deliberately not listed.
_LIVE_BROKERS: set[LocalBroker] = set()


@atexit.register
def _stop_live_brokers() -> None:
    for broker in list(_LIVE_BROKERS):
        with contextlib.suppress(Exception):
            broker.close()


class LocalBroker:
    """One single-node KRaft broker (broker+controller roles) in a child JVM on loopback.

    ``data_dir`` None: a fresh temporary directory, deleted by ``close()``/``__exit__``.
    ``data_dir`` given: kept; restarting on it re-uses the same ports and cluster id, so topics,
    messages and committed offsets survive and clients' bootstrap strings stay valid.
    ``detach=True`` lets the JVM outlive this Python process (used by the CLI ``start``).
    ``properties`` adds to or overrides the generated server.properties.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        detach: bool = False,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        self.keep = data_dir is not None
        self.dir = (
            Path(data_dir).resolve()
            if data_dir is not None
            else Path(tempfile.mkdtemp(prefix="mpx-kafka-"))
        )
        self.detach = detach
        self.extra_properties = dict(properties or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._ports: tuple[int, int] | None = None  # (broker, controller)

    # -- layout ------------------------------------------------------------------------------

    @property
    def log_dirs(self) -> Path:
        return self.dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def stdout_log(self) -> Path:
        return self.dir / "broker.out"

    @property
    def properties_file(self) -> Path:
        return self.dir / "server.properties"

    @property
    def _state_file(self) -> Path:
        return self.dir / "ports.json"

    # -- public API --------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:<port>`` of the running broker."""
        if self._ports is None or not self.is_running():
            raise BrokerError("broker is not running; call start() first")
        return f"127.0.0.1:{self._ports[0]}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 90) -> str:
        """Start the broker (formatting storage on first use); return its bootstrap string.

        Blocks until the broker answers a Metadata request listing itself. Raises BrokerError
        with the tail of the broker's log if it exits or is not ready within ``timeout``.
        """
        if self.is_running():
            return self.bootstrap
        libs = ensure_jars()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        broker_port, controller_port, cluster_id = self._load_or_create_state()
        for port in (broker_port, controller_port):
            if not _port_is_free(port):
                raise BrokerError(
                    f"port {port} of the broker in {self.dir} is in use; is it already running? "
                    f"(python -m marketpulse.broker stop --dir {self.dir})"
                )
        self._ports = (broker_port, controller_port)
        self._write_properties(broker_port, controller_port)
        self._format_storage(libs, cluster_id)
        self._launch(libs)
        self._wait_ready(broker_port, self._formatted_cluster_id() or cluster_id, timeout)
        return self.bootstrap

    def stop(self, timeout: float = 30) -> None:
        """Graceful shutdown (SIGTERM, then SIGKILL after ``timeout`` seconds). Keeps data."""
        self._terminate(signal.SIGTERM, timeout)

    def wait(self) -> int:
        """Block until the broker process exits on its own; return its exit code."""
        if self._proc is None:
            raise BrokerError("broker is not running; call start() first")
        return self._proc.wait()

    def kill(self) -> None:
        """Crash the broker (SIGKILL) for fault-injection tests; data stays for a restart."""
        self._terminate(signal.SIGKILL, 10)

    def close(self) -> None:
        """Stop, and delete the data directory if it was a temporary one."""
        self.stop()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.is_running() else "stopped"
        return f"LocalBroker(dir={str(self.dir)!r}, {state})"

    # -- steps of start() --------------------------------------------------------------------

    def _load_or_create_state(self) -> tuple[int, int, str]:
        # Re-using a data dir means re-using its ports: consumers' stored offsets and any
        # bootstrap string handed out earlier stay valid across restarts.
        if self._state_file.is_file():
            state = json.loads(self._state_file.read_text())
            return int(state["broker_port"]), int(state["controller_port"]), state["cluster_id"]
        broker_port, controller_port = free_ports(2)
        cluster_id = new_cluster_id()
        state = {
            "broker_port": broker_port,
            "controller_port": controller_port,
            "cluster_id": cluster_id,
            "kafka_version": KAFKA_VERSION,
        }
        self._state_file.write_text(json.dumps(state, indent=2) + "\n")
        return broker_port, controller_port, cluster_id

    def _write_properties(self, broker_port: int, controller_port: int) -> None:
        # Static controller quorum: the same config and format command work on Kafka 3.9 and 4.x.
        props = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}"
            ),
            # The controller listener must stay out of advertised.listeners.
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker_port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.log_dirs),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            # No 3 s wait before the first consumer-group rebalance: tests join groups often.
            "group.initial.rebalance.delay.ms": "0",
            # Topics are created explicitly (as in production); a typo must fail, not auto-create.
            "auto.create.topics.enable": "false",
            # After a crash (kill()) the restarted broker cannot re-register until the session of
            # its previous incarnation expires: 9 s by default, 3 s here. Heartbeats stay within
            # one JVM over loopback, so a short session does not risk spurious fencing.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            **self.extra_properties,
        }
        lines = [f"{key}={value}" for key, value in props.items()]
        self.properties_file.write_text("\n".join(lines) + "\n")

    def _jvm_command(self, libs: Path, main_class: str, *args: str) -> list[str]:
        log4j = deploy_dir() / "log4j.properties"
        return [
            _java(),
            *_JVM_FLAGS,
            f"-Dkafka.logs.dir={self.logs_dir}",
            f"-Dlog4j.configuration={log4j.as_uri()}",
            "-cp",
            str(libs / "*"),  # expanded by java itself
            main_class,
            *args,
        ]

    def _format_storage(self, libs: Path, cluster_id: str) -> None:
        if (self.log_dirs / "meta.properties").is_file():
            return  # Already formatted: formatting again would refuse (or wipe) existing data.
        cmd = self._jvm_command(
            libs,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.properties_file),
        )
        try:
            result = subprocess.run(
                cmd, capture_output=True, text=True, timeout=_FORMAT_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"kafka-storage format hung for {_FORMAT_TIMEOUT_S}s") from exc
        if result.returncode != 0:
            raise BrokerError(
                f"kafka-storage format failed (exit {result.returncode}) in {self.dir}:\n"
                + _last_lines(result.stdout + result.stderr, _LOG_TAIL_LINES)
            )

    def _launch(self, libs: Path) -> None:
        cmd = self._jvm_command(libs, "kafka.Kafka", str(self.properties_file))
        self._out = self.stdout_log.open("wb")
        # Own session/process group: a Ctrl-C in the terminal reaches only Python, which then
        # shuts the broker down in order; a detached broker also survives its parent's exit.
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            start_new_session=True,
        )
        if not self.detach:
            _LIVE_BROKERS.add(self)

    def _formatted_cluster_id(self) -> str | None:
        # meta.properties is authoritative: the broker refuses to start with any other id.
        with contextlib.suppress(OSError):
            for line in (self.log_dirs / "meta.properties").read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "cluster.id":
                    return value.strip()
        return None

    def _wait_ready(self, broker_port: int, cluster_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                self._terminate(signal.SIGKILL, 5)
                raise BrokerError(f"Kafka broker exited with code {code}.\n{self.log_tail()}")
            if self._is_ready(broker_port, cluster_id):
                return
            if time.monotonic() >= deadline:
                self._terminate(signal.SIGKILL, 5)
                raise BrokerError(
                    f"Kafka broker not ready after {timeout:.0f}s.\n{self.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL_S)

    @staticmethod
    def _is_ready(broker_port: int, cluster_id: str) -> bool:
        # Ready = the broker answers Metadata and lists itself, i.e. it is registered with the
        # controller and unfenced; an open socket alone is not enough. The cluster id check
        # makes sure it is our JVM answering, not another broker that grabbed the port.
        try:
            metadata = cluster_metadata("127.0.0.1", broker_port, timeout=1.0)
        except (OSError, struct.error):
            return False
        listed = any(port == broker_port for _node, _host, port in metadata.brokers)
        return listed and metadata.cluster_id == cluster_id

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the broker's log, for error messages.

        The JVM's own stdout/stderr is added only when it holds something the server log does
        not (the console mostly repeats the log's warnings; JVM start-up errors are only there).
        """
        server_tail = _tail_file(self.server_log, lines)
        out_tail = _tail_file(self.stdout_log, lines)
        parts = []
        if server_tail:
            parts.append(f"--- last {lines} lines of {self.server_log} ---\n{server_tail}")
        if out_tail and not set(out_tail.splitlines()) <= set(server_tail.splitlines()):
            parts.append(f"--- last {lines} lines of {self.stdout_log} ---\n{out_tail}")
        return "\n".join(parts) or f"(no broker log in {self.dir} yet)"

    def _terminate(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            self._proc = None
        if self._out is not None:
            self._out.close()
            self._out = None
        _LIVE_BROKERS.discard(self)


# --------------------------------------------------------------------------------------------
# Stopping a broker this process did not start (CLI `stop`)
# --------------------------------------------------------------------------------------------


def _is_our_broker(pid: int, properties_file: Path) -> bool:
    # Pids get reused: only signal a JVM running kafka.Kafka on this directory's config.
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return "kafka.Kafka" in cmdline and str(properties_file) in cmdline


def _terminate_pid(pid: int, properties_file: Path, timeout: float) -> bool:
    """SIGTERM a detached broker, SIGKILL after ``timeout``; False if it was not running."""
    if not _is_our_broker(pid, properties_file):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _is_our_broker(pid, properties_file):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(_POLL_INTERVAL_S)
    return True


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

_RUNTIME_FILE = "broker.json"


def _read_runtime(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / _RUNTIME_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def _write_runtime(broker: LocalBroker) -> None:
    runtime = {"pid": broker.pid, "bootstrap": broker.bootstrap, "kafka_version": KAFKA_VERSION}
    (broker.dir / _RUNTIME_FILE).write_text(json.dumps(runtime, indent=2) + "\n")


def _running_bootstrap(data_dir: Path) -> str | None:
    """Bootstrap of the broker recorded in ``data_dir`` if that process is still alive."""
    runtime = _read_runtime(data_dir)
    if runtime and _is_our_broker(int(runtime["pid"]), data_dir / "server.properties"):
        return str(runtime["bootstrap"])
    return None


def _cmd_start(data_dir: Path, foreground: bool, timeout: float) -> int:
    running = _running_bootstrap(data_dir)
    if running:
        print(running)
        return 0
    broker = LocalBroker(data_dir, detach=not foreground)
    bootstrap = broker.start(timeout=timeout)
    _write_runtime(broker)
    print(bootstrap, flush=True)
    if not foreground:
        return 0
    print(f"Kafka {KAFKA_VERSION} running in {data_dir}; Ctrl-C to stop", file=sys.stderr)

    def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = broker.wait()
        print(f"broker exited unexpectedly (code {code})\n{broker.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        broker.stop()
        return 0
    finally:
        (data_dir / _RUNTIME_FILE).unlink(missing_ok=True)


def _cmd_stop(data_dir: Path, timeout: float) -> int:
    runtime = _read_runtime(data_dir)
    stopped = runtime is not None and _terminate_pid(
        int(runtime["pid"]), data_dir / "server.properties", timeout
    )
    (data_dir / _RUNTIME_FILE).unlink(missing_ok=True)
    print("stopped" if stopped else f"no broker running in {data_dir}")
    return 0


def _cmd_status(data_dir: Path) -> int:
    bootstrap = _running_bootstrap(data_dir)
    if bootstrap is None:
        print(f"not running ({data_dir})")
        return 3  # LSB "program is not running", so scripts can branch on it
    runtime = _read_runtime(data_dir) or {}
    answering = "answering" if broker_answers(bootstrap) else "NOT answering"
    print(f"running pid={runtime.get('pid')} bootstrap={bootstrap} ({answering})")
    return 0 if answering == "answering" else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m marketpulse.broker",
        description=(
            f"Run a real single-node Apache Kafka {KAFKA_VERSION} broker (KRaft) from Maven "
            f"Central jars, without Docker. Jars are cached in {libs_dir()} "
            "(set MPX_CACHE_DIR to move it)."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the broker jars into the cache (once) and exit")
    dir_help = "broker data directory (config, logs, topic data); default: %(default)s"
    start = sub.add_parser(
        "start",
        help="start the broker and print its bootstrap address",
        description="Start the broker (formatting storage on first use), wait until it answers, "
        "print 'host:port'. Re-using a directory keeps topics, data and the port.",
    )
    start.add_argument("--dir", type=Path, default=Path("var/kafka"), help=dir_help)
    start.add_argument(
        "--foreground",
        action="store_true",
        help="stay attached; Ctrl-C or SIGTERM stops the broker cleanly",
    )
    start.add_argument("--timeout", type=float, default=90, help="seconds to wait for readiness")
    stop = sub.add_parser("stop", help="stop a broker started with `start`")
    stop.add_argument("--dir", type=Path, default=Path("var/kafka"), help=dir_help)
    stop.add_argument(
        "--timeout", type=float, default=30, help="seconds before SIGTERM becomes SIGKILL"
    )
    status = sub.add_parser(
        "status", help="show whether the broker runs and answers (exit 0 yes, 3 not running)"
    )
    status.add_argument("--dir", type=Path, default=Path("var/kafka"), help=dir_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "fetch":
            print(ensure_jars())
            return 0
        data_dir: Path = args.dir.resolve()
        if args.command == "start":
            return _cmd_start(data_dir, args.foreground, args.timeout)
        if args.command == "stop":
            return _cmd_stop(data_dir, args.timeout)
        return _cmd_status(data_dir)
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
