"""Kafka for the stack: one KRaft node (broker and controller in one JVM) run from Maven jars.

The jars are fetched through storage/kafka/pom.xml into .services/kafka/libs/; the broker logs
through storage/kafka/log4j.properties and keeps its data in .services/kafka/data/.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path

from .processes import alive, read_pid, run_quiet, terminate, wait_until
from .reporting import StackError, say, shown
from .state import HOST, ROOT, known_port, state_path
from .state import port as persisted_port

KAFKA_ASSETS = ROOT / "storage" / "kafka"
# What Kafka's own start script (kafka-run-class.sh) runs the broker with: G1 aiming at 20 ms
# pauses instead of the JVM's 200 ms default. Measured here: young pauses of 10-18 ms were the
# producer's slowest acknowledgements.
JVM_FLAGS = [
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
]
READY_TIMEOUT = 90
STOP_TIMEOUT = 30
APT_PACKAGE = None  # Java and Maven are checked when needed; the jars come from Maven Central


def _dir() -> Path:
    return state_path("kafka")


def _answers(port: int) -> bool:
    """Send a Kafka ApiVersions v0 request and require a well-formed reply.

    A bare TCP connect is not enough: the socket accepts before the broker serves requests.
    """
    client_id = b"sluice-local-stack"
    request = struct.pack(">hhih", 18, 0, 4242, len(client_id)) + client_id  # api_key, version, corr id
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            reply = b""
            while len(reply) < 10:  # int32 size, int32 correlation id, int16 error code
                chunk = sock.recv(10 - len(reply))
                if not chunk:
                    return False
                reply += chunk
    except OSError:
        return False
    _size, correlation_id, error_code = struct.unpack(">iih", reply)
    return correlation_id == 4242 and error_code == 0


def pid() -> int | None:
    return read_pid(state_path("kafka.pid"))


def running() -> bool:
    port = known_port("kafka")
    if not port:
        return False
    return alive(pid(), "kafka.Kafka") and _answers(port)


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise StackError(f"`{tool}` not found (needed for Kafka); run: apt-get install -y {package}")
    return path


def _fetch_jars() -> Path:
    """Copy the broker's jars into .services/kafka/libs once per version of pom.xml."""
    libs, pom = _dir() / "libs", KAFKA_ASSETS / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    marker = libs / ".complete"  # written last: its presence means the copy finished
    if marker.exists() and marker.read_text().strip() == digest:
        return libs
    shutil.rmtree(libs, ignore_errors=True)  # jars of another Kafka version would clash on the classpath
    say("kafka: fetching jars with mvn (first run, ~60 MB; cached in ~/.m2 afterwards)...")
    started = time.monotonic()
    cmd = [
        _need("mvn", "maven"),
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]
    # Captured: even with -q, Maven 3.8 prints stray colour codes; shown only when it fails.
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # colour codes
        output = "\n".join(output.strip().splitlines()[-40:])
        raise StackError(
            f"kafka: mvn could not fetch the jars (exit {result.returncode}):\n{output}\n"
            "  next: check access to Maven Central (proxy settings go in ~/.m2/settings.xml)"
            " and retry"
        )
    marker.write_text(digest + "\n")
    say(f"kafka: jars ready in {time.monotonic() - started:.1f} s")
    return libs


def _write_config(port: int, controller_port: int, directory: Path | None = None) -> Path:
    directory = directory or _dir()
    props = directory / "server.properties"
    props.write_text(
        "# Written by storage/local_stack/kafka.py on every start; edits are lost.\n"
        "process.roles=broker,controller\n"
        "node.id=1\n"
        f"controller.quorum.voters=1@{HOST}:{controller_port}\n"
        f"listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}\n"
        f"advertised.listeners=PLAINTEXT://{HOST}:{port}\n"
        "controller.listener.names=CONTROLLER\n"
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
        f"log.dirs={directory / 'data'}\n"
        "# One broker: internal topics cannot be replicated.\n"
        "offsets.topic.replication.factor=1\n"
        "transaction.state.log.replication.factor=1\n"
        "transaction.state.log.min.isr=1\n"
        "# 1 instead of 50 partitions: the first consumer group in a fresh cluster is ready sooner.\n"
        "offsets.topic.num.partitions=1\n"
        "# Consumers in tests should not wait 3 s for a group rebalance.\n"
        "group.initial.rebalance.delay.ms=0\n"
        "num.partitions=4\n"
        "auto.create.topics.enable=true\n"
    )
    return props


def _cluster_id() -> str:
    # Same shape as `kafka-storage random-uuid`: 16 random bytes, url-safe base64, no padding
    # (saves a JVM start). Kafka avoids ids starting with "-" (they look like CLI flags).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(libs: Path, props: Path, directory: Path | None = None) -> None:
    data = (directory or _dir()) / "data"
    if (data / "meta.properties").exists():
        return
    shutil.rmtree(data, ignore_errors=True)  # an interrupted format leaves a dir without meta.properties
    say("kafka: formatting KRaft storage (first run only)...")
    run_quiet(
        [
            _need("java", "openjdk-17-jre-headless"),
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _cluster_id(),
            "-c",
            props,
        ],
        "kafka storage format",
        f"delete {shown(data)} and retry",
    )


def start() -> None:
    _dir().mkdir(exist_ok=True)
    libs = _fetch_jars()
    port = persisted_port("kafka")
    controller_port = persisted_port("kafka_controller")
    props = _write_config(port, controller_port)
    _format_storage(libs, props)
    log, pidfile = state_path("kafka.log"), state_path("kafka.pid")
    say(f"kafka: starting on {HOST}:{port}...")
    started = time.monotonic()
    cmd = [
        _need("java", "openjdk-17-jre-headless"),
        "-Xms256m",
        "-Xmx768m",
        *JVM_FLAGS,
        "-cp",
        f"{libs}/*",
        f"-Dlog4j.configuration=file:{KAFKA_ASSETS / 'log4j.properties'}",
        "kafka.Kafka",
        str(props),
    ]
    with log.open("w") as out:
        # Own session: Ctrl-C in the terminal must not reach the broker, `run` decides when it stops.
        proc = subprocess.Popen(
            cmd, cwd=_dir(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    pidfile.write_text(f"{proc.pid}\n")
    try:
        wait_until(lambda: _answers(port), "kafka", port, log, READY_TIMEOUT, process_alive=lambda: proc.poll() is None)
    except StackError:
        stop(quiet=True)  # do not leave a half-started broker holding the ports
        raise
    say(f"kafka: ready in {time.monotonic() - started:.1f} s")


def stop(quiet: bool = False) -> None:
    pidfile = state_path("kafka.pid")
    broker = read_pid(pidfile)
    if broker is not None and alive(broker, "kafka.Kafka"):
        if not quiet:
            say("kafka: stopping (controlled shutdown, up to 30 s)...")
        terminate("kafka", broker, STOP_TIMEOUT)
    pidfile.unlink(missing_ok=True)


def clear_stale() -> None:
    """A live pid that does not answer: stop it so start() begins cleanly (no-op when nothing runs)."""
    stop()


class DedicatedBroker:
    """A broker of its own for a test that stops and starts Kafka (outages), leaving the stack's alone.

    Same jars and settings as the stack's broker; data, log and ports of its own. Its data
    survives stop() so that start() again brings back the same cluster, as a restart would.
    """

    def __init__(self, directory: Path, port: int | None = None):
        self.directory = Path(directory)
        self.port = port or _free_port()
        self.controller_port = _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        libs = _fetch_jars()
        props = _write_config(self.port, self.controller_port, self.directory)
        _format_storage(libs, props, self.directory)
        log = self.directory / "kafka.log"
        cmd = [
            _need("java", "openjdk-17-jre-headless"),
            "-Xms128m",
            "-Xmx384m",
            *JVM_FLAGS,
            "-cp",
            f"{libs}/*",
            f"-Dlog4j.configuration=file:{KAFKA_ASSETS / 'log4j.properties'}",
            "kafka.Kafka",
            str(props),
        ]
        with log.open("a") as out:
            self.process = subprocess.Popen(
                cmd,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(
                lambda: _answers(self.port),
                "kafka (dedicated)",
                self.port,
                log,
                READY_TIMEOUT,
                process_alive=lambda: self.process.poll() is None,
            )
        except StackError:
            self.stop(kill=True)
            raise

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (controlled shutdown), or SIGKILL as in a crash."""
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
        else:
            terminate("kafka (dedicated)", self.process.pid, STOP_TIMEOUT)
            self.process.wait(STOP_TIMEOUT)
        self.process = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]
