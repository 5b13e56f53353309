-- Cell Key Method (docs/privacy.md, ADR 0050): beside each count, the sum of the record keys of the events it
-- counts, modulo 2^32. New rows get their key sums from the aggregator in the same upsert as the count.
--
-- Rows counted before this migration have no record keys (event ids are not kept per row). Each such row gets
-- one random key for what it had counted so far, as if those events were one record: an hour row a random
-- key, a day row the sum of its hours' keys and a month row the sum of its days' keys where the hours (days)
-- still add up to it, so a cell asked through hours, days or months keeps one key. Events counted later add
-- their own record keys on top.
ALTER TABLE kpi_values ADD COLUMN key_sum bigint NOT NULL DEFAULT 0
    CHECK (key_sum >= 0 AND key_sum < 4294967296);

UPDATE kpi_values SET key_sum = floor(random() * 4294967296)::bigint WHERE granularity = 'hour';

WITH hours AS (
    SELECT d.municipality, d.service, d.period_start, d.metric, d.dimension,
           sum(h.value) AS value, sum(h.key_sum) % 4294967296 AS key_sum
    FROM kpi_values d
    JOIN kpi_values h ON h.granularity = 'hour' AND h.municipality = d.municipality AND h.service = d.service
        AND h.metric = d.metric AND h.dimension = d.dimension
        AND h.period_start >= d.period_start
        AND h.period_start < ((d.period_start AT TIME ZONE 'Europe/Berlin') + interval '1 day')
                             AT TIME ZONE 'Europe/Berlin'
    WHERE d.granularity = 'day'
    GROUP BY d.municipality, d.service, d.period_start, d.metric, d.dimension
)
UPDATE kpi_values k SET key_sum = hours.key_sum FROM hours
WHERE k.granularity = 'day' AND k.municipality = hours.municipality AND k.service = hours.service
  AND k.period_start = hours.period_start AND k.metric = hours.metric AND k.dimension = hours.dimension
  AND k.value = hours.value;
UPDATE kpi_values SET key_sum = floor(random() * 4294967296)::bigint
WHERE granularity = 'day' AND key_sum = 0 AND value <> 0;

WITH days AS (
    SELECT m.municipality, m.service, m.period_start, m.metric, m.dimension,
           sum(d.value) AS value, sum(d.key_sum) % 4294967296 AS key_sum
    FROM kpi_values m
    JOIN kpi_values d ON d.granularity = 'day' AND d.municipality = m.municipality AND d.service = m.service
        AND d.metric = m.metric AND d.dimension = m.dimension
        AND d.period_start >= m.period_start
        AND d.period_start < ((m.period_start AT TIME ZONE 'Europe/Berlin') + interval '1 month')
                             AT TIME ZONE 'Europe/Berlin'
    WHERE m.granularity = 'month'
    GROUP BY m.municipality, m.service, m.period_start, m.metric, m.dimension
)
UPDATE kpi_values k SET key_sum = days.key_sum FROM days
WHERE k.granularity = 'month' AND k.municipality = days.municipality AND k.service = days.service
  AND k.period_start = days.period_start AND k.metric = days.metric AND k.dimension = days.dimension
  AND k.value = days.value;
UPDATE kpi_values SET key_sum = floor(random() * 4294967296)::bigint
WHERE granularity = 'month' AND key_sum = 0 AND value <> 0;
