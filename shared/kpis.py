"""KPI vocabulary shared by the aggregator (writer) and the publisher (reader).

KPIs are stored in long form in `kpi_values` (migration 0003): one row per granularity x period x
municipality x service x metric x dimension, holding an additive integer. Everything additive is stored
(counts, sums, histogram bucket counts); rates, means and percentiles are derived when read, so values add
up across periods, municipalities and services.
"""

from __future__ import annotations

from typing import Final, Literal

Granularity = Literal["hour", "day", "month"]

# metric name -> what its dimension holds ('' when it has none)
METRICS: Final[dict[str, str]] = {
    "page_views": "page path",
    "page_views_device": "desktop | mobile | tablet | other (device class of page views)",
    "page_views_referrer": "search | social | internal | municipal | portal | direct | other",
    "sessions_started": "",
    "sessions_submitted": "",
    "sessions_abandoned": "",
    "abandoned_after_step": "last completed step (0 = before the first)",
    "step_completed": "step number",
    "channel": "web | app",
    "device": "desktop | mobile | tablet | other",
    "auth": "method:level, e.g. bundid_basis:substantiell",
    "payment": "payment method",
    "payment_amount_cents": "payment method (sum of amounts)",
    "feedback": "stars 1-5",
    "duration_le": "upper bound of the completion-time bucket in seconds, or inf",
    "duration_sum_s": "",
    "cases_opened": "",
    "cases_closed": "outcome",
    "processing_le": "upper bound of the processing-time bucket in seconds, or inf",
    "processing_sum_s": "",
    "deadline_breached": "deadline name",
    "cases_parked": "",
}

# Fixed histogram buckets (seconds); counts per bucket are stored non-cumulatively, so they add up.
DURATION_BUCKETS_S: Final = (60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 86400)
PROCESSING_BUCKETS_S: Final = (
    3600, 4 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 60 * 86400, 90 * 86400
)


def bucket_label(seconds: float, bounds: tuple[int, ...]) -> str:
    """Dimension value of the bucket a duration falls into: the smallest bound >= seconds, or 'inf'."""
    for b in bounds:
        if seconds <= b:
            return str(b)
    return "inf"
