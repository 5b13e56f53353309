"""A local PostgreSQL primary with one streaming replica, and the multi-host URL the services use.

The replica is a `pg_basebackup -R` copy of the primary in a folder of its own, started on another loopback
port; it follows the primary's WAL stream. With `synchronous=True` (the default) the primary acknowledges a
commit only once the replica has flushed it, so promoting the replica after a crash of the primary loses no
acknowledged transaction (see `docs/operations.md`, "PostgreSQL failover"). The services connect with
`target_session_attrs=read-write` to both hosts and so always reach whichever one is the primary.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from kp.stack import PostgresNode, StackError, pg_bindir


@dataclass
class PostgresPair:
    """Primary under `root/primary`, replica under `root/replica` (each with its own `pg_home`)."""

    root: Path
    synchronous: bool = True
    primary: PostgresNode = field(init=False)
    replica: PostgresNode = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.primary = PostgresNode(self.root / "primary")
        self.replica = PostgresNode(self.root / "replica")

    @property
    def url(self) -> str:
        """Both hosts; libpq-style `target_session_attrs=read-write` picks the one that accepts writes."""
        p, r = self.primary, self.replica
        return (f"postgresql://{p.user}@127.0.0.1:{p.port},127.0.0.1:{r.port}/{p.database}"
                "?target_session_attrs=read-write")

    def start(self, timeout: float = 60.0) -> None:
        """Start the primary, clone and start the replica (first start only: clone), then make it synchronous."""
        self.primary.start(timeout)
        if not (self.replica.home / "data" / "PG_VERSION").exists():
            self._clone()
        self.replica.start(timeout)
        if self.synchronous:
            self._psql(self.primary, "ALTER SYSTEM SET synchronous_standby_names = '*'")
        else:
            self._psql(self.primary, "ALTER SYSTEM RESET synchronous_standby_names")
        self._psql(self.primary, "SELECT pg_reload_conf()")

    def _clone(self) -> None:
        self.replica._prepare_home()
        res = self.replica._run([
            str(pg_bindir() / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port),
            "-U", self.primary.user, "-D", str(self.replica.home / "data"), "-R", "-X", "stream",
            "--checkpoint=fast", "--no-sync",
        ])
        if res.returncode != 0:
            raise StackError(f"pg_basebackup of the primary failed:\n{res.stdout}\n{res.stderr}")

    def _psql(self, node: PostgresNode, sql: str) -> str:
        res = node._run([str(pg_bindir() / "psql"), "-h", "127.0.0.1", "-p", str(node.port), "-U", node.user,
                         "-d", "postgres", "-tAc", sql])
        if res.returncode != 0:
            raise StackError(f"psql on port {node.port} failed: {res.stderr}")
        return str(res.stdout).strip()

    def in_recovery(self, node: PostgresNode) -> bool:
        return self._psql(node, "SELECT pg_is_in_recovery()") == "t"

    def replica_streaming(self) -> bool:
        """The primary sees the replica as a streaming (and, when configured, synchronous) standby."""
        wanted = "sync" if self.synchronous else "async"
        state = self._psql(self.primary, "SELECT state || ':' || sync_state FROM pg_stat_replication")
        return state == f"streaming:{wanted}"

    def kill_primary(self) -> None:
        """kill -9 of the primary's postmaster, for fault tests (its backends notice and exit)."""
        pid_file = self.primary.home / "data" / "postmaster.pid"
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)

    def promote(self, timeout: float = 60.0) -> None:
        """Make the replica the primary (`pg_ctl promote`), waiting until it accepts writes."""
        res = self.replica._run([str(pg_bindir() / "pg_ctl"), "-D", str(self.replica.home / "data"), "-w",
                                 "-t", str(int(timeout)), "promote"])
        if res.returncode != 0:
            raise StackError(f"promoting the replica failed:\n{res.stdout}\n{res.stderr}")

    def stop(self) -> None:
        for node in (self.replica, self.primary):
            with contextlib.suppress(StackError):
                node.stop()

    def remove(self) -> None:
        self.primary.remove()
        self.replica.remove()
