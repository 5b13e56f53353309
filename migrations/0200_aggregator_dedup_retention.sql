-- Dedup retention deletes ids by event time (late horizon + margin), so it needs an index on it.
CREATE INDEX agg_processed_events_event_time ON agg_processed_events (event_time);
