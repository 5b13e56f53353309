"""Process entry point shared by the services (JSON logs, uvicorn, graceful shutdown on SIGTERM), and their
background polling loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from shared.observability import setup_logging
from shared.settings import KPSettings

S = TypeVar("S", bound=KPSettings)
log = logging.getLogger(__name__)


def run_service(create_app: Callable[[S], FastAPI], settings: S) -> None:
    """Serve the app until SIGTERM/SIGINT; uvicorn then runs the lifespan shutdown (drain, commit, close)."""
    setup_logging(settings.log_level, settings.log_json)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=20)


async def poll(once: Callable[[], Awaitable[int]], *, batch: int, interval_s: float, what: str) -> None:
    """Run `once` until cancelled: again at once while it handles a full `batch` (a backlog drains quickly),
    after `interval_s` otherwise; a failure is logged and retried after `interval_s`."""
    while True:
        try:
            done = await once()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; will retry", what)
            done = 0
        if done < batch:
            await asyncio.sleep(interval_s)
