-- Cheaper per-batch writes of the aggregator (measured per 20,000-event batch, see docs/aggregator.md).
--
-- 1. Dedup retention finds old ids through a BRIN index on event_time: events arrive nearly in time order (late
--    ones at most the late horizon behind, and retention cuts at horizon + margin), so block ranges summarise
--    well; a BRIN entry costs next to nothing per insert, where the B-tree entry was a share of every insert.
DROP INDEX IF EXISTS agg_processed_events_event_time;
CREATE INDEX agg_processed_events_event_time_brin ON agg_processed_events USING brin (event_time);

-- 2. kpi_values: the index on updated_at made every KPI update a non-HOT update (a new entry in all three
--    indexes per row version). The publisher's "last change" comes from kpi_values_writes instead: one row per
--    writing backend (no lock shared between concurrent writers), kept by the statement-level trigger of 0400.
CREATE TABLE kpi_values_writes (
    backend integer PRIMARY KEY,
    at      timestamptz NOT NULL
);
INSERT INTO kpi_values_writes (backend, at) SELECT 0, max(updated_at) FROM kpi_values HAVING count(*) > 0;
DROP INDEX IF EXISTS kpi_values_updated;
-- Room on each page for HOT updates (applies to pages written from now on).
ALTER TABLE kpi_values SET (fillfactor = 80);

CREATE OR REPLACE FUNCTION kpi_values_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO kpi_values_writes (backend, at) VALUES (pg_backend_pid(), now())
    ON CONFLICT (backend) DO UPDATE SET at = GREATEST(kpi_values_writes.at, EXCLUDED.at);
    PERFORM pg_notify('kpi_values_changed', '');
    RETURN NULL;
END;
$$;
