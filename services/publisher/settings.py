"""Publisher settings (environment, prefix `KP_`)."""

from __future__ import annotations

from shared.settings import KPSettings


class PublisherSettings(KPSettings):
    port: int = 8003
    max_page_size: int = 10_000
