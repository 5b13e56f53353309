-- Public site tokens of the web tracker and the feedback widget (`POST /v1/collect`). A token is public (it
-- stands in a municipal web page), so it is stored as it is; what protects it is the binding to origins and to
-- one municipality and service, and the rate limits per token and per client.
CREATE TABLE ingest_site_tokens (
    id           uuid PRIMARY KEY,
    token        text        NOT NULL UNIQUE,
    municipality char(8)     NOT NULL,
    service      char(14)    NOT NULL,
    origins      text[]      NOT NULL CHECK (cardinality(origins) >= 1),
    rate_per_s   double precision NOT NULL CHECK (rate_per_s > 0),
    burst        integer     NOT NULL CHECK (burst >= 1),
    description  text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX ingest_site_tokens_municipality ON ingest_site_tokens (municipality);
