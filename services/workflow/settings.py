"""Workflow settings (environment, prefix `KP_`)."""

from __future__ import annotations

from shared.settings import KPSettings


class WorkflowSettings(KPSettings):
    port: int = 8004
    consumer_group: str = "kp-workflow"
    relay_interval_s: float = 0.2
    relay_batch: int = 500
