-- eGovSAD KPIs in long form; see shared/kpis.py for the metric vocabulary.
-- period_start is the start of the hour/day/month in Europe/Berlin, stored as timestamptz.
CREATE TABLE kpi_values (
    granularity  text        NOT NULL CHECK (granularity IN ('hour', 'day', 'month')),
    period_start timestamptz NOT NULL,
    municipality char(8)     NOT NULL,
    service      char(14)    NOT NULL,
    metric       text        NOT NULL,
    dimension    text        NOT NULL DEFAULT '',
    value        bigint      NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (granularity, municipality, service, period_start, metric, dimension)
);
CREATE INDEX kpi_values_period ON kpi_values (granularity, period_start);
CREATE INDEX kpi_values_updated ON kpi_values (updated_at);
