"""Process entry point shared by the services: JSON logs, uvicorn, graceful shutdown on SIGTERM."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from shared.observability import setup_logging
from shared.settings import KPSettings

S = TypeVar("S", bound=KPSettings)


def run_service(create_app: Callable[[S], FastAPI], settings: S) -> None:
    """Serve the app until SIGTERM/SIGINT; uvicorn then runs the lifespan shutdown (drain, commit, close)."""
    setup_logging(settings.log_level, settings.log_json)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=20)
