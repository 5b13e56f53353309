-- Workflow engine: case progress, pinned definitions, timers (due_at), clerk tasks, pending out-of-order
-- events and the append-only audit trail.
ALTER TABLE wf_cases
    ADD COLUMN current_step    text,
    ADD COLUMN step_entered_at timestamptz,
    ADD COLUMN attempts        integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error      text,
    ADD COLUMN context         jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN event_seq       integer NOT NULL DEFAULT 0,
    ADD COLUMN outcome         text,
    ADD COLUMN closed_at       timestamptz;
CREATE INDEX wf_cases_state ON wf_cases (state);
CREATE INDEX wf_cases_municipality_state ON wf_cases (municipality, state);

-- A published definition version never changes: the checksum guards it at start.
CREATE TABLE wf_definitions (
    name      text    NOT NULL,
    version   integer NOT NULL,
    service   char(14),
    checksum  text    NOT NULL,
    body      jsonb   NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

-- Timers: one row per (case, name); polled with FOR UPDATE SKIP LOCKED and deleted in the firing transaction.
CREATE TABLE wf_due (
    id       bigserial PRIMARY KEY,
    case_id  uuid NOT NULL REFERENCES wf_cases (case_id),
    name     text NOT NULL,
    step     text,
    due_at   timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    UNIQUE (case_id, name)
);
CREATE INDEX wf_due_due_at ON wf_due (due_at);

CREATE TABLE wf_tasks (
    task_id      uuid PRIMARY KEY,
    case_id      uuid NOT NULL REFERENCES wf_cases (case_id),
    step         text NOT NULL,
    queue        text NOT NULL,
    municipality char(8) NOT NULL,
    service      char(14) NOT NULL,
    status       text NOT NULL CHECK (status IN ('open', 'claimed', 'done', 'cancelled')),
    assignee     text,
    due_at       timestamptz,
    decision     text,
    created_at   timestamptz NOT NULL,
    completed_at timestamptz
);
CREATE INDEX wf_tasks_open ON wf_tasks (municipality, queue, due_at) WHERE status IN ('open', 'claimed');
CREATE UNIQUE INDEX wf_tasks_one_active_per_case ON wf_tasks (case_id) WHERE status IN ('open', 'claimed');

-- Events that arrived before the submission opened their case (out of order); replayed on open.
CREATE TABLE wf_pending (
    event_id       uuid PRIMARY KEY,
    application_id text NOT NULL,
    body           jsonb NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wf_pending_application ON wf_pending (application_id);

CREATE TABLE wf_audit (
    id      bigserial PRIMARY KEY,
    case_id uuid NOT NULL,
    at      timestamptz NOT NULL,
    actor   text NOT NULL,
    action  text NOT NULL,
    before  jsonb,
    after   jsonb,
    detail  jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX wf_audit_case ON wf_audit (case_id, id);

CREATE FUNCTION wf_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'wf_audit is append-only';
END;
$$;
CREATE TRIGGER wf_audit_no_update BEFORE UPDATE OR DELETE ON wf_audit
    FOR EACH STATEMENT EXECUTE FUNCTION wf_audit_append_only();
CREATE TRIGGER wf_audit_no_truncate BEFORE TRUNCATE ON wf_audit
    FOR EACH STATEMENT EXECUTE FUNCTION wf_audit_append_only();
