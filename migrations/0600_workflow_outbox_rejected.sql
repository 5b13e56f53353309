-- Outbox rows whose events the relay can never send (e.g. larger than the broker accepts) are set aside
-- instead of blocking the relay: the row counts as handled (published_at set) and says why some of its events
-- went to workflow.events.rejected.v1 instead of workflow.events.v1.
ALTER TABLE wf_outbox ADD COLUMN rejected_reason text;
