-- Pause after failures (API.md "Pause after failures"): the job's threshold, the server's reason
-- when it paused the job, and the count of runs in a row that ended failed or timed_out (kept,
-- while a threshold is set, by the transaction that settles each run under the job's row lock:
-- store/plan.rs).
ALTER TABLE jobs ADD COLUMN pause_after_failures BIGINT;
ALTER TABLE jobs ADD COLUMN paused_reason TEXT;
ALTER TABLE jobs ADD COLUMN failure_streak BIGINT NOT NULL DEFAULT 0;
