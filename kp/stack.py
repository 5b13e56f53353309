"""Local infrastructure without Docker: a real single-node Kafka (KRaft) and a project-local PostgreSQL.

Kafka's jars are resolved from Maven Central with `mvn dependency:copy-dependencies` into a user cache;
PostgreSQL uses the distribution's server binaries (`initdb`, `pg_ctl`) with a cluster under the run folder.
Both pick free loopback ports and remember them, so a second start reuses data and, where possible, ports.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

KAFKA_VERSION = "4.1.1"
HERE = Path(__file__).resolve().parent


class StackError(RuntimeError):
    """Raised when a local component cannot be provisioned or started."""


def cache_dir() -> Path:
    """Folder for downloaded artefacts shared by all checkouts of the user."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kommunal-pulse"


def free_port() -> int:
    """Ask the kernel for a free loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"process exited with code {proc.returncode} before port {port} opened")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise StackError(f"port {port} did not open within {timeout:.0f}s")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_pid(pid: int, timeout: float = 20.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------------ optional components


@runtime_checkable
class Component(Protocol):
    """An optional part of the local stack (for example an identity provider), started after PostgreSQL and
    Kafka and before the services. It keeps its own files under `run_dir / name` so that `stop` also works
    in a later process (`kp stack down`)."""

    name: str

    def start(self, database_url: str) -> None:
        """Start (or reuse) the component; may use the stack's PostgreSQL."""

    def stop(self) -> None:
        """Stop the component, also when it was started by another process."""

    def service_env(self) -> dict[str, str]:
        """Extra `KP_*` environment for the services, e.g. an issuer URL."""

    def urls(self) -> dict[str, str]:
        """User-facing URLs to print, label -> URL."""

    def notes(self) -> list[str]:
        """Further lines to print after start, e.g. the demo users."""


ComponentFactory = Callable[[Path], Component]
OPTIONAL_COMPONENTS: list[ComponentFactory] = []
"""Factories (run folder -> component) that `kp stack up` starts after PostgreSQL, in this order."""


# --------------------------------------------------------------------------------------------- Kafka


def kafka_libs() -> Path:
    """Return the folder with the Kafka broker jars, resolving them from Maven Central on first use."""
    target = cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"
    marker = target / ".complete"
    if marker.exists():
        return target
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) is needed to fetch Apache Kafka; install it (Debian: apt-get install maven)")
    if shutil.which("java") is None:
        raise StackError("Java 17+ is needed to run Apache Kafka; install it (Debian: apt-get install openjdk-17-jre)")
    tmp = target.with_name(f"libs.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        "mvn", "-q", "-B", "-f", str(HERE / "kafka" / "pom.xml"),
        "dependency:copy-dependencies", f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
        f"-Dkafka.version={KAFKA_VERSION}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"resolving Kafka {KAFKA_VERSION} with Maven failed:\n{result.stdout}\n{result.stderr}")
    tmp.joinpath(".complete").touch()
    with contextlib.suppress(OSError):
        tmp.rename(target)  # another process may have won the race; its copy is as good
    shutil.rmtree(tmp, ignore_errors=True)
    return target


@dataclass
class KafkaNode:
    """A single-node KRaft broker+controller with its data under `root`."""

    root: Path
    port: int = 0
    controller_port: int = 0
    heap: str = "512m"
    scram_users: dict[str, str] = field(default_factory=dict)
    """When set, an extra SASL_PLAINTEXT listener with these SCRAM-SHA-512 users (name -> password)."""
    sasl_port: int = 0
    node_id: int = 1
    voters: str = ""
    """`controller.quorum.voters` of a multi-node cluster (`KafkaCluster`); empty: this node alone."""
    cluster_id: str = ""
    """Cluster id to format the storage with; empty: a new random one (single node)."""
    replication: int = 1
    """Replication factor of the broker's internal topics (offsets, transactions) and its default."""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    def _properties(self) -> str:
        listeners = f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
        advertised = f"PLAINTEXT://127.0.0.1:{self.port}"
        sasl: list[str] = []
        if self.scram_users:
            listeners += f",SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}"
            advertised += f",SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}"
            sasl = [
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            ]
        voters = self.voters or f"{self.node_id}@127.0.0.1:{self.controller_port}"
        min_isr = min_insync_replicas(self.replication)
        return "\n".join([
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners={listeners}",
            f"advertised.listeners={advertised}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            *sasl,
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={self.root / 'data'}",
            f"offsets.topic.replication.factor={self.replication}",
            "offsets.topic.num.partitions=6",
            f"transaction.state.log.replication.factor={self.replication}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={self.replication}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            f"default.replication.factor={self.replication}",
            f"min.insync.replicas={min_isr}",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "num.partitions=1",
            "log.retention.hours=168",
            "",
        ])

    def start(self, timeout: float = 90.0) -> None:
        libs = kafka_libs()
        self.root.mkdir(parents=True, exist_ok=True)
        state_file = self.root / "ports.json"
        if state_file.exists() and not self.port:
            saved = json.loads(state_file.read_text())
            if port_is_free(saved["port"]) and port_is_free(saved["controller_port"]):
                self.port, self.controller_port = saved["port"], saved["controller_port"]
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        if self.scram_users:
            self.sasl_port = self.sasl_port or free_port()
        state_file.write_text(json.dumps({"port": self.port, "controller_port": self.controller_port}))
        props = self.root / "server.properties"
        props.write_text(self._properties())
        classpath = f"{libs}/*"
        java = shutil.which("java") or "java"
        if not (self.root / "data" / "meta.properties").exists():
            cluster_id = self.cluster_id or base64_uuid()
            scram = [a for name, pw in self.scram_users.items()
                     for a in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={pw}]")]
            fmt = subprocess.run(
                [java, "-cp", classpath, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                 *scram],
                capture_output=True, text=True, check=False,
            )
            if fmt.returncode != 0:
                raise StackError(f"formatting Kafka storage failed:\n{fmt.stdout}\n{fmt.stderr}")
        log = open(self.root / "kafka.log", "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            [
                java, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
                f"-Dlog4j2.configurationFile={HERE / 'kafka' / 'log4j2.yaml'}",
                "-cp", classpath, "kafka.Kafka", str(props),
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        (self.root / "kafka.pid").write_text(str(self.proc.pid))
        try:
            wait_for_port(self.port, timeout, self.proc)
        except StackError as exc:
            tail = (self.root / "kafka.log").read_text(errors="replace")[-3000:]
            self.stop()
            raise StackError(f"Kafka did not start: {exc}\n{tail}") from exc

    def stop(self) -> None:
        pid_file = self.root / "kafka.pid"
        if self.proc is not None:
            _stop_pid(self.proc.pid)
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=5)
            self.proc = None
        elif pid_file.exists():
            _stop_pid(int(pid_file.read_text()))
        pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """Hard stop (SIGKILL), for fault tests."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def min_insync_replicas(replication: int) -> int:
    """Replicas that must acknowledge a write with `acks=all`: 2 of 3 (one broker may be down without losing
    availability or an acknowledged record), 1 when there is only one copy."""
    return 2 if replication >= 3 else 1


def base64_uuid() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 that does not start with "-" (the storage tool's
    argument parser would take such an id for an option; Kafka's own generator avoids them the same way)."""
    import base64

    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


# ---------------------------------------------------------------------------------------- PostgreSQL


def pg_bindir() -> Path:
    """Locate the PostgreSQL server binaries (Debian keeps them off PATH)."""
    override = os.environ.get("KP_PG_BINDIR")
    candidates = [override] if override else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_pg_version_key, reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.append(str(Path(found).parent))
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    raise StackError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found. Install them with `make setup` "
        "(Debian: apt-get install postgresql), or set KP_DATABASE_URL to an existing server."
    )


def _pg_version_key(path: str) -> int:
    with contextlib.suppress(ValueError):
        return int(Path(path).parent.name)
    return 0


PG_SHARED_BASE = Path("/var/tmp")
"""World-traversable base for the cluster's files when PostgreSQL runs as another OS user (see `pg_home`)."""


def pg_home(root: Path) -> Path:
    """Folder for the cluster's data, socket and log of the run folder `root`.

    As an ordinary user that is `root` itself. As root, PostgreSQL runs as an unprivileged user who often
    cannot enter the checkout (root's home or a `mktemp -d` folder are mode 0700), so the files go to a
    per-checkout folder `/var/tmp/kommunal-pulse-<hash of root>` that this user owns (mode 0700).
    """
    if os.geteuid() != 0:
        return root
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return PG_SHARED_BASE / f"kommunal-pulse-{digest}"


@dataclass
class PostgresNode:
    """A PostgreSQL cluster for the run folder `root` (files in `pg_home(root)`), listening on loopback only."""

    root: Path
    port: int = 0
    user: str = "kp"
    database: str = "kommunal_pulse"
    home: Path = field(init=False)
    """Where data, socket and log live: `pg_home(root)`."""

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.home = pg_home(self.root)

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def log_path(self) -> Path:
        return self.home / "postgres.log"

    def _run(self, args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
        cmd = args
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root; run its binaries as an unprivileged user.
            cmd = ["runuser", "-u", _pg_os_user(), "--", *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, **kw)  # type: ignore[call-overload, no-any-return]

    def _prepare_home(self) -> None:
        """Create the cluster's folder; as root hand it to the server's user and check that it can reach it."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.home == self.root:
            (self.home / "sock").mkdir(exist_ok=True)
            return
        owner = _pg_os_user()
        uid = pwd.getpwnam(owner).pw_uid
        self.home.mkdir(mode=0o700, exist_ok=True)
        info = self.home.lstat()
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise StackError(f"{self.home} is not a plain folder; remove it and start again")
        if info.st_uid not in (0, uid):
            raise StackError(f"{self.home} belongs to uid {info.st_uid}, not to {owner} or root; remove it and "
                             "start again")
        (self.home / "sock").mkdir(mode=0o700, exist_ok=True)
        for path in (self.home, self.home / "sock"):
            os.chown(path, uid, uid, follow_symlinks=False)
            os.chmod(path, 0o700)
        probe = self._run(["test", "-w", str(self.home / "sock")])
        if probe.returncode != 0:
            raise StackError(
                f"the PostgreSQL server runs as the OS user {owner!r}, who cannot write to {self.home}. "
                f"Make {PG_SHARED_BASE} traversable for that user (chmod o+x), or set KP_DATABASE_URL to an "
                "existing server."
            )

    def start(self, timeout: float = 60.0) -> None:
        bindir = pg_bindir()
        data = self.home / "data"
        sockets = self.home / "sock"
        self._prepare_home()
        state_file = self.root / "port"
        if state_file.exists() and not self.port and port_is_free(int(state_file.read_text())):
            self.port = int(state_file.read_text())
        self.port = self.port or free_port()
        state_file.write_text(str(self.port))
        if not (data / "PG_VERSION").exists():
            res = self._run([
                str(bindir / "initdb"), "-D", str(data), "-U", self.user, "-A", "trust",
                "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
            ])
            if res.returncode != 0:
                raise StackError(
                    f"initdb failed:\n{res.stdout}\n{res.stderr}\nThe cluster lives in {self.home}; the server's "
                    "OS user must be able to create it there. Remove that folder to start from scratch, or set "
                    "KP_DATABASE_URL to an existing server."
                )
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {sockets} -c fsync=on "
            "-c max_connections=200 -c shared_buffers=128MB"
        )
        res = self._run([
            str(bindir / "pg_ctl"), "-D", str(data), "-l", str(self.log_path),
            "-o", opts, "-w", "-t", str(int(timeout)), "start",
        ])
        if res.returncode != 0:
            log = self.log_path
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise StackError(f"PostgreSQL did not start (cluster in {self.home}):\n{res.stdout}\n{res.stderr}\n"
                             f"{tail}")
        self._ensure_database(bindir)

    def _ensure_database(self, bindir: Path) -> None:
        psql = bindir / "psql"
        if not psql.exists():
            psql = Path(shutil.which("psql") or "psql")
        check = self._run([
            str(psql), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", "postgres", "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'",
        ])
        if check.stdout.strip() != "1":
            res = self._run([
                str(psql), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", "postgres",
                "-c", f'CREATE DATABASE "{self.database}"',
            ])
            if res.returncode != 0:
                raise StackError(f"creating database failed: {res.stderr}")

    def stop(self, mode: str = "fast") -> None:
        data = self.home / "data"
        if not (data / "postmaster.pid").exists():
            return
        self._run([str(pg_bindir() / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"])

    def remove(self) -> None:
        """Delete the cluster's files (after `stop`); the run folder itself is the caller's."""
        shutil.rmtree(self.home if self.home != self.root else self.root, ignore_errors=True)


def _pg_os_user() -> str:
    """Unprivileged OS user that owns the cluster when we run as root."""
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise StackError("running as root needs a 'postgres' system user to own the database cluster")
