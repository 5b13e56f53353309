"""Prometheus metrics of the aggregator (own registry, prefix `kp_aggregator_`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from services.aggregator.service import BatchOutcome

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)


@dataclass(frozen=True)
class AggregatorMetrics:
    """All instruments; see docs/aggregator.md for what each one means."""

    registry: CollectorRegistry
    consumer_lag: Gauge
    batch_size: Histogram
    events: Counter
    fold_seconds: Histogram
    commit_seconds: Histogram
    duplicates: Counter
    late_corrections: Counter
    rejected: Counter
    batch_failures: Counter
    batch_splits: Counter
    dedup_deleted: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> AggregatorMetrics:
        r = registry or CollectorRegistry()
        p = "kp_aggregator_"
        return cls(
            registry=r,
            consumer_lag=Gauge(f"{p}consumer_lag", "Records behind the partition end after the last batch",
                               ["topic", "partition"], registry=r),
            batch_size=Histogram(f"{p}batch_size", "Records per consumed batch", ["topic"],
                                 buckets=_BATCH_BUCKETS, registry=r),
            events=Counter(f"{p}events", "Consumed records by outcome (counted, duplicate, rejected, ignored)",
                           ["topic", "outcome"], registry=r),
            fold_seconds=Histogram(f"{p}fold_seconds", "Validate and fold one batch in memory", ["topic"],
                                   buckets=_LATENCY_BUCKETS, registry=r),
            commit_seconds=Histogram(f"{p}commit_seconds",
                                     "One batch's PostgreSQL transaction (dedup, upserts, offsets, commit)",
                                     ["topic"], buckets=_LATENCY_BUCKETS, registry=r),
            duplicates=Counter(f"{p}duplicates_skipped", "Events skipped because their id was already counted",
                               ["topic"], registry=r),
            late_corrections=Counter(f"{p}late_corrections", "Counted events whose hour had already ended",
                                     ["topic"], registry=r),
            rejected=Counter(f"{p}rejected", "Records sent to the rejected topic", ["topic", "reason"], registry=r),
            batch_failures=Counter(f"{p}batch_failures", "Batches rolled back and redelivered (Kafka or DB errors)",
                                   ["topic"], registry=r),
            batch_splits=Counter(f"{p}batch_splits", "Batches split to isolate a record that fails alone", ["topic"],
                                 registry=r),
            dedup_deleted=Counter(f"{p}dedup_ids_deleted", "Event ids removed by the dedup retention job",
                                  registry=r),
        )

    def record_batch(self, topic: str, outcome: BatchOutcome) -> None:
        """Count one applied batch: its size, its records by outcome, its fold and transaction times."""
        self.batch_size.labels(topic).observe(outcome.records)
        self.fold_seconds.labels(topic).observe(outcome.fold_seconds)
        self.commit_seconds.labels(topic).observe(outcome.commit_seconds)
        self.events.labels(topic, "counted").inc(outcome.counted)
        self.events.labels(topic, "duplicate").inc(outcome.duplicates)
        self.events.labels(topic, "ignored").inc(outcome.ignored)
        self.events.labels(topic, "rejected").inc(len(outcome.rejected))
        self.duplicates.labels(topic).inc(outcome.duplicates)
        self.late_corrections.labels(topic).inc(outcome.late)
        for reason in outcome.rejected:
            self.rejected.labels(topic, reason).inc()

    def record_rejected(self, topic: str, reason: str) -> None:
        """Count a record rejected after it failed alone."""
        self.events.labels(topic, "rejected").inc()
        self.rejected.labels(topic, reason).inc()
