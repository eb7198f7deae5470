-- Flow control: limits per key (API.md "Flow control: limits per key"). Why a claim that
-- counts inside its transaction is exact: store/limits.rs (SQLite has one writer).

-- A limit under a concrete key or a pattern (`tenant:*`, `*`), as written.
CREATE TABLE limits (
    key          TEXT PRIMARY KEY,
    pattern      INTEGER NOT NULL,
    max_running  INTEGER,
    rate_count   INTEGER,
    rate_per_us  INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX limits_patterns ON limits (key) WHERE pattern = 1;

-- Keys as JSON arrays; runs keep their job's keys from when they were created.
ALTER TABLE jobs ADD COLUMN limits TEXT NOT NULL DEFAULT '[]';
ALTER TABLE runs ADD COLUMN limits TEXT NOT NULL DEFAULT '[]';
-- Fairness: claims go by (priority DESC, turn); `fair_key` is the run's first key ('' = none).
ALTER TABLE runs ADD COLUMN fair_key TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN turn INTEGER NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS runs_ready;
CREATE INDEX runs_ready ON runs (priority DESC, turn, scheduled_for, id) WHERE state = 'pending' AND held = 0 AND blocked = 0;
CREATE INDEX runs_fair ON runs (fair_key, turn) WHERE state = 'pending';

-- One row per key of each running run, kept by the triggers below, so every way a run stops
-- running (completion, reaping, recovery from a dead worker) stops it counting at once.
-- A row stays a little while with the attempt's `ended_at` (see the PostgreSQL migration).
CREATE TABLE run_limits (
    key      TEXT NOT NULL,
    run_id   TEXT NOT NULL,
    ended_at INTEGER,
    PRIMARY KEY (key, run_id)
) WITHOUT ROWID;
CREATE INDEX run_limits_run ON run_limits (run_id);
CREATE INDEX run_limits_open ON run_limits (key, ended_at);

CREATE TRIGGER runs_limits_start AFTER UPDATE OF state ON runs
    WHEN NEW.limits <> '[]' AND NEW.state = 'running' AND OLD.state <> 'running'
BEGIN
    INSERT INTO run_limits (key, run_id) SELECT value, NEW.id FROM json_each(NEW.limits) WHERE true
    ON CONFLICT (key, run_id) DO UPDATE SET ended_at = NULL;
END;
CREATE TRIGGER runs_limits_end AFTER UPDATE OF state ON runs
    WHEN NEW.limits <> '[]' AND OLD.state = 'running' AND NEW.state <> 'running'
BEGIN
    UPDATE run_limits SET ended_at = COALESCE(NEW.ended_at, NEW.finished_at, 0)
    WHERE run_id = NEW.id AND ended_at IS NULL;
END;

-- Starts of runs per key a rate governs, pruned by claims once outside the window.
CREATE TABLE limit_starts (
    key        TEXT NOT NULL,
    started_at INTEGER NOT NULL
);
CREATE INDEX limit_starts_key ON limit_starts (key, started_at);
