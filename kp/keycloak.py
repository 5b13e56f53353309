"""Keycloak for the local stack: the identity provider of the clerk view, in dev mode with the demo realm.

The Quarkus distribution is resolved from Maven Central (`org.keycloak:keycloak-quarkus-dist`, tar.gz) into the
user cache beside Kafka's jars; each instance unpacks its own copy under the run folder, because Keycloak
writes its dev database and build state into its home directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from kp.stack import StackError, _stop_pid, cache_dir, free_port, port_is_free

KEYCLOAK_VERSION = "26.5.6"
REALM_FILE = Path(__file__).resolve().parent / "keycloak" / "realm-kommunal-pulse.json"
REALM = "kommunal-pulse"
CLIENT_ID = "kommunal-pulse-workflow"
# The realm file is for local development only; production uses the city's IdP and its own secret.
DEV_CLIENT_SECRET = "dev-only-workflow-secret"
DEV_BUILT = ".dev-built"
DEV_PASSWORD = "demo"


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    name: str
    roles: tuple[str, ...]
    municipalities: tuple[str, ...]


def demo_users(realm_file: Path = REALM_FILE) -> list[DemoUser]:
    """The users of the demo realm, read from the realm file (what `kp stack up` prints)."""
    realm = json.loads(realm_file.read_text(encoding="utf-8"))
    users = []
    for u in realm["users"]:
        password = next(c["value"] for c in u["credentials"] if c["type"] == "password")
        users.append(DemoUser(u["username"], password, f"{u['firstName']} {u['lastName']}",
                              tuple(u["realmRoles"]), tuple(u["attributes"]["municipality"])))
    return users


def keycloak_archive() -> Path:
    """The distribution archive in the cache, fetched from Maven Central with `mvn dependency:copy` on first use."""
    folder = cache_dir() / f"keycloak-{KEYCLOAK_VERSION}"
    archive = folder / f"keycloak-quarkus-dist-{KEYCLOAK_VERSION}.tar.gz"
    if archive.exists():
        return archive
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) is needed to fetch Keycloak; install it (Debian: apt-get install maven)")
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = ["mvn", "-q", "-B", "dependency:copy",
           f"-Dartifact=org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:tar.gz", f"-DoutputDirectory={tmp}"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"resolving Keycloak {KEYCLOAK_VERSION} with Maven failed:\n{result.stdout}\n{result.stderr}")
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        (tmp / archive.name).rename(archive)  # another process may have won the race; its copy is as good
    shutil.rmtree(tmp, ignore_errors=True)
    return archive


def template_home() -> Path:
    """The distribution unpacked once into the cache; instances copy it (Keycloak writes into its home)."""
    folder = cache_dir() / f"keycloak-{KEYCLOAK_VERSION}"
    home = folder / f"keycloak-{KEYCLOAK_VERSION}"
    if (home / ".complete").exists():
        return home
    archive = keycloak_archive()
    tmp = folder / f"unpack.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    (tmp / home.name / ".complete").touch()
    with contextlib.suppress(OSError):
        (tmp / home.name).rename(home)  # another process may have won the race; its copy is as good
    shutil.rmtree(tmp, ignore_errors=True)
    return home


def instance_home(root: Path) -> Path:
    """This instance's own Keycloak home under `root`, copied from the cached template on first use."""
    home = root / f"keycloak-{KEYCLOAK_VERSION}"
    if (home / ".complete").exists():
        return home
    shutil.rmtree(home, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template_home(), home, symlinks=True, ignore=shutil.ignore_patterns("data", DEV_BUILT))
    return home


def keep_dev_build(home: Path) -> None:
    """After the first dev-mode start, give the template the build Keycloak made (its Quarkus augmentation
    takes a minute or more), so later instances start without rebuilding."""
    template = template_home()
    if (template / DEV_BUILT).exists():
        return
    staging = template / "lib" / f"quarkus.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(home / "lib" / "quarkus", staging)
    old = template / "lib" / f"quarkus.old-{os.getpid()}"
    with contextlib.suppress(OSError):
        (template / "lib" / "quarkus").rename(old)
        staging.rename(template / "lib" / "quarkus")
        (template / DEV_BUILT).touch()
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


@dataclass
class KeycloakNode:
    """Keycloak in dev mode (`kc.sh start-dev`) on a loopback port with the demo realm imported."""

    root: Path
    port: int = 0
    heap: str = "512m"
    realm_file: Path = REALM_FILE
    admin_password: str = "admin"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return f"{self.url}/realms/{REALM}"

    def workflow_env(self) -> dict[str, str]:
        """What the workflow service needs to log clerks in through this Keycloak."""
        return {"KP_OIDC_ISSUER": self.issuer, "KP_OIDC_CLIENT_ID": CLIENT_ID,
                "KP_OIDC_CLIENT_SECRET": DEV_CLIENT_SECRET}

    def start(self, timeout: float = 600.0) -> None:
        """Start and wait for the realm; the first start on a machine also builds Keycloak (minutes)."""
        if shutil.which("java") is None:
            raise StackError("Java 17+ is needed to run Keycloak; install it (Debian: apt-get install openjdk-17-jre)")
        home = instance_home(self.root)
        imports = home / "data" / "import"
        imports.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.realm_file, imports / self.realm_file.name)
        state_file = self.root / "port"
        if state_file.exists() and not self.port and port_is_free(int(state_file.read_text())):
            self.port = int(state_file.read_text())
        self.port = self.port or free_port()
        state_file.write_text(str(self.port))
        env = dict(os.environ, KC_BOOTSTRAP_ADMIN_USERNAME="admin", KC_BOOTSTRAP_ADMIN_PASSWORD=self.admin_password,
                   JAVA_OPTS_KC_HEAP=f"-Xms64m -Xmx{self.heap}")
        log = open(self.root / "keycloak.log", "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            [str(home / "bin" / "kc.sh"), "start-dev", f"--http-port={self.port}", "--http-host=127.0.0.1",
             "--import-realm",
             "--log-console-output=default"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=home,
        )
        (self.root / "keycloak.pid").write_text(str(self.proc.pid))
        try:
            self.wait_ready(timeout)
        except StackError as exc:
            tail = (self.root / "keycloak.log").read_text(errors="replace")[-3000:]
            self.stop()
            raise StackError(f"Keycloak did not start: {exc}\n{tail}") from exc
        keep_dev_build(home)

    def wait_ready(self, timeout: float) -> None:
        """Ready when the realm's discovery document is served (the import has finished by then)."""
        deadline = time.monotonic() + timeout
        url = f"{self.issuer}/.well-known/openid-configuration"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise StackError(f"process exited with code {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise StackError(f"{url} not served within {timeout:.0f}s")

    def stop(self) -> None:
        pid_file = self.root / "keycloak.pid"
        if self.proc is not None:
            _stop_pid(self.proc.pid)
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=5)
            self.proc = None
        elif pid_file.exists():
            _stop_pid(int(pid_file.read_text()))
        pid_file.unlink(missing_ok=True)


# --- the local stack (`kp stack up` / `down`) -----------------------------------------------------------

STACK_PORT = 8180


def start_for_stack(run_dir: Path, fixed_ports: bool) -> KeycloakNode:
    """Keycloak of `kp stack up`, data kept under the run folder; the first start also fetches and builds it."""
    port = STACK_PORT if fixed_ports and port_is_free(STACK_PORT) else 0
    node = KeycloakNode(run_dir / "keycloak", port=port)
    node.start()
    return node


def stop_for_stack(run_dir: Path) -> bool:
    """Stop the Keycloak a detached stack left running; True if there was one."""
    if not (run_dir / "keycloak" / "keycloak.pid").exists():
        return False
    KeycloakNode(run_dir / "keycloak").stop()
    return True


def describe(node: KeycloakNode) -> list[str]:
    """The lines `kp stack up` prints: where Keycloak runs and who can log in to the clerk view."""
    lines = [f"  Keycloak            {node.url}/admin   (admin / {node.admin_password}, realm {REALM})",
             "  Demo users of the clerk view (password for all: " + DEV_PASSWORD + "):"]
    for u in demo_users(node.realm_file):
        lines.append(f"    {u.username:<17} {u.name:<16} {', '.join(u.roles):<18} {', '.join(u.municipalities)}")
    return lines
