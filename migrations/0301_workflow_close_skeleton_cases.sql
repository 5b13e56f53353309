-- Cases opened by the walking skeleton (definition 'default', no step) only ever got an acknowledgement;
-- close them with that outcome so the engine, which pins cases to deployed definitions, does not wait on them.
UPDATE wf_cases
   SET state = 'closed', outcome = 'acknowledged', closed_at = updated_at
 WHERE definition = 'default' AND current_step IS NULL AND state <> 'closed';
