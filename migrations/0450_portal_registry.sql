-- Open data portal: datasets registered by the municipalities' data officers, their history, hosted files
-- and the data officers' API keys. See docs/portal.md.

-- Keys are random tokens; only their SHA-256 is stored. A key may write for the municipalities (AGS) listed.
CREATE TABLE portal_api_keys (
    key_hash       text        PRIMARY KEY CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    label          text        NOT NULL,
    municipalities text[]      NOT NULL CHECK (cardinality(municipalities) > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz
);

-- Current state of every registered dataset; withdrawn ones stay here (and in the history) but are never
-- published. `document` holds the validated DCAT-AP.de description including distributions.
CREATE TABLE portal_datasets (
    id            uuid        PRIMARY KEY,
    name          text        NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_-]{1,99}$'),
    municipality  char(8)     NOT NULL,
    status        text        NOT NULL CHECK (status IN ('published', 'withdrawn')),
    version       integer     NOT NULL CHECK (version > 0),
    title         text        NOT NULL,
    description   text        NOT NULL,
    keywords      text[]      NOT NULL,
    keyword_text  text        NOT NULL,
    themes        text[]      NOT NULL,
    licence       text        NOT NULL,
    formats       text[]      NOT NULL,
    document      jsonb       NOT NULL,
    created_at    timestamptz NOT NULL,
    modified_at   timestamptz NOT NULL,
    search        tsvector    GENERATED ALWAYS AS (
        setweight(to_tsvector('german', title), 'A')
        || setweight(to_tsvector('german', keyword_text), 'B')
        || setweight(to_tsvector('german', description), 'C')
    ) STORED
);
CREATE INDEX portal_datasets_search ON portal_datasets USING gin (search);
CREATE INDEX portal_datasets_published_modified ON portal_datasets (modified_at DESC) WHERE status = 'published';
CREATE INDEX portal_datasets_municipality ON portal_datasets (municipality);

-- Every create, update and withdrawal, with the full document as it was.
CREATE TABLE portal_dataset_versions (
    dataset_id uuid        NOT NULL REFERENCES portal_datasets (id),
    version    integer     NOT NULL,
    status     text        NOT NULL CHECK (status IN ('published', 'withdrawn')),
    action     text        NOT NULL CHECK (action IN ('created', 'updated', 'file_added', 'withdrawn')),
    document   jsonb       NOT NULL,
    changed_by text        NOT NULL,
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (dataset_id, version)
);

-- Files hosted by the portal; stored in the database so a dataset and its files commit together.
CREATE TABLE portal_files (
    id          uuid        PRIMARY KEY,
    dataset_id  uuid        NOT NULL REFERENCES portal_datasets (id),
    filename    text        NOT NULL,
    format      text        NOT NULL,
    media_type  text        NOT NULL,
    byte_size   integer     NOT NULL,
    sha256      text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content     bytea       NOT NULL,
    report      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX portal_files_dataset ON portal_files (dataset_id);
