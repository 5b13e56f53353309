"""Prometheus metrics of the workflow service (own registry, prefix `kp_workflow_`)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class WorkflowMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        r = self.registry
        self.cases_by_state = Gauge("kp_workflow_cases", "Cases by state (refreshed periodically).", ["state"],
                                    registry=r)
        self.parked_cases = Gauge("kp_workflow_parked_cases", "Cases parked and waiting for an operator.",
                                  registry=r)
        self.step_latency = Histogram("kp_workflow_step_latency_seconds", "Duration of automatic steps.",
                                      ["action", "result"], buckets=LATENCY_BUCKETS, registry=r)
        self.step_retries = Counter("kp_workflow_step_retries_total", "Failed step attempts scheduled for retry.",
                                    ["action"], registry=r)
        self.cases_parked = Counter("kp_workflow_cases_parked_total", "Cases parked after exhausted retries.",
                                    registry=r)
        self.events = Counter("kp_workflow_application_events_total", "Application events consumed.",
                              ["type", "result"], registry=r)
        self.timer_lag = Histogram("kp_workflow_timer_lag_seconds", "Firing time minus due time of timers.",
                                   ["timer"], buckets=LAG_BUCKETS, registry=r)
        self.timers_fired = Counter("kp_workflow_timers_fired_total", "Timers fired.", ["timer"], registry=r)
        self.outbox_lag = Histogram("kp_workflow_outbox_lag_seconds", "Outbox row creation to Kafka ack.",
                                    buckets=LAG_BUCKETS, registry=r)
        self.outbox_oldest = Gauge("kp_workflow_outbox_oldest_unpublished_seconds",
                                   "Age of the oldest unpublished outbox row.", registry=r)
        self.batch_size = Histogram("kp_workflow_batch_size", "Application events per consumed batch.",
                                    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000), registry=r)
        self.consumer_lag = Gauge("kp_workflow_consumer_lag", "Records behind the partition end (after a batch).",
                                  ["topic", "partition"], registry=r)
        self.rejected = Counter("kp_workflow_rejected_total",
                                "Records set aside to a rejected topic (or outbox rows the relay cannot send).",
                                ["consumer", "reason"], registry=r)
        self.callbacks = Counter("kp_workflow_callbacks_total", "FIT-Connect-style callbacks.", ["event", "result"],
                                 registry=r)

    def step(self, action: str, result: str) -> Any:
        """The step latency histogram of one action and result (looked up once; the engine observes every step)."""
        return self._child("step", self.step_latency, action, result)

    def event(self, type_: str, result: str) -> Any:
        """The consumed-events counter of one type and result (looked up once)."""
        return self._child("event", self.events, type_, result)

    def _child(self, name: str, metric: Any, *labels: str) -> Any:
        key = (name, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child
