-- Dedup retention works on event_time (0200); the processed_at index is never read and only slows the inserts.
DROP INDEX IF EXISTS agg_processed_events_processed_at;
