-- Aggregator core: dedup of event ids, stored consumer positions, daily counts per event type.
CREATE TABLE agg_processed_events (
    event_id     uuid PRIMARY KEY,
    event_time   timestamptz NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agg_processed_events_processed_at ON agg_processed_events (processed_at);

CREATE TABLE agg_offsets (
    consumer_group text    NOT NULL,
    topic          text    NOT NULL,
    partition      integer NOT NULL,
    next_offset    bigint  NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Counts of usage events per Europe/Berlin calendar day, municipality, service and event type.
CREATE TABLE kpi_event_counts_daily (
    day          date   NOT NULL,
    municipality char(8)  NOT NULL,
    service      char(14) NOT NULL,
    event_type   text   NOT NULL,
    count        bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, municipality, service, event_type)
);
