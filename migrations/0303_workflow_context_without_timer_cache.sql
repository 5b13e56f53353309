-- Timers live in wf_due and tasks in wf_tasks only: the engine reads what a case has there together with the
-- locked case row. Earlier releases also kept a copy in the case context (`_timers`, `_task`); drop it.
-- (Rows that still carry the keys load as well: the engine ignores them and drops them on the next save.)
UPDATE wf_cases SET context = context - '_timers' - '_task'
 WHERE context ? '_timers' OR context ? '_task';
