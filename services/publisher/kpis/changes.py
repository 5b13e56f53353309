"""In-process knowledge of when the KPI table last changed, kept current by LISTEN/NOTIFY.

`version` grows whenever a change may have happened; an ETag remembered under a version is only reused while
the version is unchanged, so a conditional request can be answered 304 without asking the database. While
the listening connection is down (`live` false) nothing remembered is trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.publisher.kpis import repository

log = logging.getLogger(__name__)


class ChangeTracker:
    def __init__(self, database_url: str, poll_s: float) -> None:
        self._url = database_url
        self._poll_s = poll_s
        self.version = 0
        self.live = False
        self.last_modified = datetime(1970, 1, 1, tzinfo=UTC)
        self._db_changed_at: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    def _bump(self, at: datetime | None = None) -> None:
        self.version += 1
        at = (at or datetime.now(UTC)).replace(microsecond=0)
        self.last_modified = max(self.last_modified, at)

    def _on_notify(self, *_: Any) -> None:
        self._bump()

    def _on_lost(self, *_: Any) -> None:
        self.live = False
        self._lost.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kpi-change-listener")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _refresh(self, conn: asyncpg.Connection) -> None:
        changed = await repository.last_change(conn)
        if changed != self._db_changed_at:
            self._db_changed_at = changed
            self._bump(changed)

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._url)
                self._lost.clear()
                conn.add_termination_listener(self._on_lost)
                await conn.add_listener(repository.CHANGE_CHANNEL, self._on_notify)
                self.version += 1  # changes while we were not listening are unknown: forget remembered ETags
                await self._refresh(conn)
                self.live = True
                backoff = 0.2
                while not self._lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._lost.wait(), self._poll_s)
                    if not self._lost.is_set():
                        await self._refresh(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("KPI change listener interrupted: %s", exc)
            finally:
                self.live = False
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
