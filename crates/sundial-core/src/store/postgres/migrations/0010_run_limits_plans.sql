-- The trigger that keeps `run_limits` runs one single-row statement per run that starts or stops
-- running, by `run_id` or `(key, run_id)`. PL/pgSQL caches its plans per session, and a plan made
-- while the table looked empty (a fresh install, or stats from a VACUUM ANALYZE taken then, with
-- autovacuum off) is a sequential scan kept for the life of the connection: every completion then
-- read the whole table, and flow-controlled runs ran at a third of the speed of the others. The
-- trigger's statements only ever touch a handful of rows, so they always go by the index.
ALTER FUNCTION sundial_run_limits() SET enable_seqscan = off;
