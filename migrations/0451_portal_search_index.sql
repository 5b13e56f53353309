-- Write registry entries straight into the search index: with GIN's pending list (fastupdate) a burst of
-- registrations makes the planner cost the index too high and fall back to scanning every dataset.
ALTER INDEX portal_datasets_search SET (fastupdate = off);
