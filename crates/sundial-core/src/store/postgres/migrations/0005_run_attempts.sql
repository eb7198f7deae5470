-- Attempt history: one row per claim, settled when the attempt ends (its outcome and error), so
-- every attempt's error survives the next one. Runs keep the name of the worker of their latest
-- attempt, which outlives the worker's row.
CREATE TABLE run_attempts (
    run_id      TEXT COLLATE "C" NOT NULL,
    attempt     BIGINT NOT NULL,
    worker_id   TEXT NOT NULL,
    worker_name TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    state       TEXT NOT NULL,
    error       TEXT,
    PRIMARY KEY (run_id, attempt)
);
ALTER TABLE runs ADD COLUMN worker_name TEXT;
