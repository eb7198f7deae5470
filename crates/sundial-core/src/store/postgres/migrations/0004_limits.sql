-- Flow control: limits per key (API.md "Flow control: limits per key"). Why a claim that locks
-- each governed key and then counts is exact: store/limits.rs.

-- A limit under a concrete key or a pattern (`tenant:*`, `*`), as written.
CREATE TABLE limits (
    key          TEXT COLLATE "C" PRIMARY KEY,
    pattern      BOOLEAN NOT NULL,
    max_running  BIGINT,
    rate_count   BIGINT,
    rate_per_us  BIGINT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
-- Claims read the patterns (few) and the exact limits of the keys they look at.
CREATE INDEX limits_patterns ON limits (key) WHERE pattern;

-- Keys as JSON arrays, as in SQLite; runs keep their job's keys from when they were created.
ALTER TABLE jobs ADD COLUMN limits TEXT NOT NULL DEFAULT '[]';
ALTER TABLE runs ADD COLUMN limits TEXT NOT NULL DEFAULT '[]';
-- Fairness: claims go by (priority DESC, turn); `fair_key` is the run's first key ('' = none).
ALTER TABLE runs ADD COLUMN fair_key TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN turn BIGINT NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS runs_ready;
CREATE INDEX runs_ready ON runs (priority DESC, turn, scheduled_for, id) WHERE state = 'pending' AND NOT held AND NOT blocked;
-- A key's last waiting turn, read when its next runs are inserted.
CREATE INDEX runs_fair ON runs (fair_key, turn) WHERE state = 'pending';

-- One row per key of each running run (`ended_at` null), kept by the trigger below, so every
-- way a run stops running (completion, reaping, recovery from a dead worker) stops it counting
-- in that same transaction. The row stays a little while with the attempt's `ended_at`, so a
-- claim whose `now` was taken before that end still sees the run as running at `now`: the
-- stored `[started_at, finished_at)` of a key's runs never overlap more than the limit.
CREATE TABLE run_limits (
    key      TEXT COLLATE "C" NOT NULL,
    run_id   TEXT COLLATE "C" NOT NULL,
    ended_at BIGINT,
    PRIMARY KEY (key, run_id)
);
CREATE INDEX run_limits_run ON run_limits (run_id);
CREATE INDEX run_limits_open ON run_limits (key, ended_at);

CREATE FUNCTION sundial_run_limits() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'running' THEN
        INSERT INTO run_limits (key, run_id)
        SELECT k, NEW.id FROM json_array_elements_text(NEW.limits::json) AS k
        ON CONFLICT (key, run_id) DO UPDATE SET ended_at = NULL;
    ELSE
        UPDATE run_limits SET ended_at = COALESCE(NEW.ended_at, NEW.finished_at, 0)
        WHERE run_id = NEW.id AND ended_at IS NULL;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER runs_run_limits AFTER UPDATE OF state ON runs FOR EACH ROW
    WHEN (NEW.limits <> '[]' AND (OLD.state = 'running') <> (NEW.state = 'running'))
    EXECUTE FUNCTION sundial_run_limits();

-- Starts of runs per key a rate governs, pruned by claims once outside the window.
CREATE TABLE limit_starts (
    key        TEXT COLLATE "C" NOT NULL,
    started_at BIGINT NOT NULL
);
CREATE INDEX limit_starts_key ON limit_starts (key, started_at);
