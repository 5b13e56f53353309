"""Prometheus metrics of the ingest service (on the app's own registry) and the request-timing middleware."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
BYTES_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)


class IngestMetrics:
    """All `kp_ingest_*` series; names follow Prometheus conventions (`_total`, `_seconds`, `_bytes`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("kp_ingest_requests_total", "HTTP requests by route and status code.",
                                ["route", "code"], registry=registry)
        self.request_seconds = Histogram("kp_ingest_request_duration_seconds", "HTTP request latency.",
                                         ["route"], buckets=LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge("kp_ingest_requests_in_flight", "HTTP requests being served.", registry=registry)
        self.accepted = Counter("kp_ingest_events_accepted_total", "Events durably written to Kafka.",
                                ["platform"], registry=registry)
        self.rejected = Counter("kp_ingest_events_rejected_total", "Events rejected (written to the rejected topic).",
                                ["platform", "reason"], registry=registry)
        self.batch_size = Histogram("kp_ingest_batch_size_events", "Events per submitted batch.",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.body_bytes = Histogram("kp_ingest_request_body_bytes", "Request body size after decompression.",
                                    buckets=BYTES_BUCKETS, registry=registry)
        self.produce_seconds = Histogram("kp_ingest_kafka_produce_duration_seconds",
                                         "Time from first send to the last Kafka acknowledgement of a batch.",
                                         buckets=LATENCY_BUCKETS, registry=registry)
        self.produce_failures = Counter("kp_ingest_kafka_produce_failures_total",
                                        "Batches not acknowledged by Kafka in time (answered 503).",
                                        registry=registry)
        self.auth_failures = Counter("kp_ingest_auth_failures_total", "Requests refused with 401.",
                                     registry=registry)
        self.rate_limited = Counter("kp_ingest_rate_limited_total", "Requests refused with 429, per platform.",
                                    ["platform"], registry=registry)
        self.tracker_filtered = Counter(
            "kp_ingest_tracker_filtered_total", "Collect requests stored apart: bot, do_not_track, rate_limited, "
            "or refused (unknown_site_token, forbidden_origin, origin_required).", ["reason"], registry=registry)
        self.tracker_referrer = Counter(
            "kp_ingest_tracker_referrer_total", "Tracker page views by full referrer class.", ["class"],
            registry=registry)

    def tracker_referrer_seen(self, referrer_class: str) -> None:
        self.tracker_referrer.labels(referrer_class).inc()

    def observe_batch(self, platform: str, size: int, accepted: int, rejected: Sequence[str]) -> None:
        self.batch_size.observe(size)
        if accepted:
            self.accepted.labels(platform).inc(accepted)
        for reason in rejected:
            self.rejected.labels(platform, reason).inc()

    def request_started(self) -> None:
        self.in_flight.inc()

    def request_finished(self, route: str, code: int, seconds: float) -> None:
        """Ingest's own request series, fed by the shared HTTP metrics middleware (`shared.http_metrics`)."""
        self.in_flight.dec()
        self.request_seconds.labels(route).observe(seconds)
        self.requests.labels(route, str(code)).inc()

    def observe_produce(self, seconds: float, ok: bool) -> None:
        self.produce_seconds.observe(seconds)
        if not ok:
            self.produce_failures.inc()

