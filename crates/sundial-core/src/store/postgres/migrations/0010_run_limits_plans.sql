-- `run_limits` is kept by one trigger call per statement rather than per row. A row trigger
-- cost two PL/pgSQL calls per flow-controlled run (start and stop), and those calls, not the
-- rows they wrote, were most of what flow control cost a claim and a completion. The rule is
-- unchanged: in the same statement that moves runs into or out of `running`, each of their keys
-- gets a row (open) or its row gets the attempt's end; runs without keys cost a scan of the
-- statement's transition table and an index probe per keyed row.
DROP TRIGGER runs_run_limits ON runs;
DROP FUNCTION sundial_run_limits();

-- A run has an open row exactly while it is `running`, so the statement's new rows alone say
-- what moved: a running run without its open row just started (an attempt after a retry
-- reopens the row its last attempt closed), a run not running with an open row just stopped.
-- Rows of runs that did not move cost one index probe each. (Joining the old and new transition
-- tables instead is planned as a nested loop over both, quadratic in the statement's rows.)
CREATE FUNCTION sundial_run_limits() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO run_limits (key, run_id)
    SELECT DISTINCT k, n.id
    FROM new_runs n CROSS JOIN LATERAL json_array_elements_text(n.limits::json) AS k
    WHERE n.limits <> '[]' AND n.state = 'running'
    ON CONFLICT (key, run_id) DO UPDATE SET ended_at = NULL WHERE run_limits.ended_at IS NOT NULL;
    UPDATE run_limits r SET ended_at = COALESCE(n.ended_at, n.finished_at, 0)
    FROM new_runs n
    WHERE n.limits <> '[]' AND n.state <> 'running' AND r.run_id = n.id AND r.ended_at IS NULL;
    RETURN NULL;
END $$;

-- A trigger with a transition table cannot name columns (`UPDATE OF state`): it runs after every
-- UPDATE of runs.
CREATE TRIGGER runs_run_limits AFTER UPDATE ON runs
    REFERENCING NEW TABLE AS new_runs
    FOR EACH STATEMENT EXECUTE FUNCTION sundial_run_limits();

-- PL/pgSQL caches its plans per session, and a plan made while `run_limits` looked empty (a
-- fresh install, or stats from a VACUUM ANALYZE taken then, with autovacuum off) is a sequential
-- scan kept for the life of the connection: every claim and completion of a flow-controlled run
-- then read the whole table. The trigger only ever touches the rows of the runs it is given, so
-- it always goes by the index.
ALTER FUNCTION sundial_run_limits() SET enable_seqscan = off;
