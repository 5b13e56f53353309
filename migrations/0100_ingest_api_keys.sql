-- API keys of the platforms that send usage events to ingest. Only a SHA-256 hash of each key is stored.
CREATE TABLE ingest_api_keys (
    id             uuid PRIMARY KEY,
    platform       text        NOT NULL,
    municipalities char(8)[]   NOT NULL,
    key_hash       text        NOT NULL UNIQUE,
    key_prefix     text        NOT NULL,
    rate_per_s     double precision NOT NULL CHECK (rate_per_s > 0),
    burst          integer     NOT NULL CHECK (burst >= 1),
    description    text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz
);
CREATE INDEX ingest_api_keys_platform ON ingest_api_keys (platform);
