-- One outbox row carries the events one case emitted in one transaction (same topic and key, in order) in
-- `payloads`: a case that runs several steps at once writes and marks one row instead of one per event.
-- Rows written before this migration keep their single `payload`; the relay reads both forms.
ALTER TABLE wf_outbox ADD COLUMN payloads bytea[];
ALTER TABLE wf_outbox ALTER COLUMN payload DROP NOT NULL;
ALTER TABLE wf_outbox ADD CONSTRAINT wf_outbox_payload_or_payloads
    CHECK ((payload IS NULL) <> (payloads IS NULL));
