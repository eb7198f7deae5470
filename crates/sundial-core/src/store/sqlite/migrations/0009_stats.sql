-- Operating counts. An attempt keeps the due time it was claimed at (a retry moves the run's
-- scheduled_for), so its start lag can be measured later; the stats read starts by time and the
-- active runs by handler.
ALTER TABLE run_attempts ADD COLUMN due_at INTEGER;
CREATE INDEX run_attempts_started ON run_attempts (started_at);
CREATE INDEX runs_active_handler ON runs (handler, state) WHERE state IN ('pending', 'running');
