-- Workflow core: inbox dedup, cases, and the transactional outbox relayed to Kafka.
CREATE TABLE wf_inbox (
    event_id    uuid PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE wf_cases (
    case_id            uuid PRIMARY KEY,
    application_id     text NOT NULL UNIQUE,
    municipality       char(8)  NOT NULL,
    service            char(14) NOT NULL,
    definition         text NOT NULL,
    definition_version integer NOT NULL,
    state              text NOT NULL,
    opened_at          timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE wf_outbox (
    id           bigserial PRIMARY KEY,
    topic        text  NOT NULL,
    key          bytea NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX wf_outbox_unpublished ON wf_outbox (id) WHERE published_at IS NULL;
