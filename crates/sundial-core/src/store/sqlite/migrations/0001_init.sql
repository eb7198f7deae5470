-- sundial schema (SQLite). Instants are INTEGER microseconds since the Unix epoch, JSON is TEXT.

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    namespace        TEXT NOT NULL,
    name             TEXT NOT NULL,
    handler          TEXT NOT NULL,
    payload          TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    initial_delay_us INTEGER NOT NULL,
    max_delay_us     INTEGER NOT NULL,
    timeout_us       INTEGER,
    overlap          TEXT NOT NULL,
    paused           INTEGER NOT NULL,
    idempotency_key  TEXT,
    fingerprint      TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE UNIQUE INDEX jobs_name ON jobs (namespace, name);
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (namespace, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);

CREATE TABLE triggers (
    id           TEXT PRIMARY KEY,
    job_id       TEXT NOT NULL,
    position     INTEGER NOT NULL,
    spec         TEXT NOT NULL,
    next_fire_at INTEGER,
    fires        INTEGER NOT NULL DEFAULT 0,
    paused       INTEGER NOT NULL DEFAULT 0
);
-- The scheduler reads only due triggers: its cost grows with the number due, not stored.
CREATE INDEX triggers_due ON triggers (next_fire_at) WHERE next_fire_at IS NOT NULL AND paused = 0;
CREATE INDEX triggers_job ON triggers (job_id, position);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    job_id           TEXT NOT NULL,
    trigger_id       TEXT,
    fire_time        INTEGER NOT NULL,
    namespace        TEXT NOT NULL,
    handler          TEXT NOT NULL,
    payload          TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    timeout_us       INTEGER,
    max_attempts     INTEGER NOT NULL,
    initial_delay_us INTEGER NOT NULL,
    max_delay_us     INTEGER NOT NULL,
    overlap          TEXT NOT NULL,
    scheduled_for    INTEGER NOT NULL,
    state            TEXT NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    worker_id        TEXT,
    lease_expires_at INTEGER,
    started_at       INTEGER,
    ended_at         INTEGER,
    finished_at      INTEGER,
    output           TEXT,
    error            TEXT,
    reason           TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    manual           INTEGER NOT NULL DEFAULT 0,
    held             INTEGER NOT NULL DEFAULT 0,
    blocked          INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    -- Guarantee 2: one run per trigger per due time, whatever number of schedulers race.
    UNIQUE (trigger_id, fire_time)
);
CREATE INDEX runs_claim ON runs (handler, priority DESC, scheduled_for) WHERE state = 'pending' AND held = 0 AND blocked = 0;
CREATE INDEX runs_pending_due ON runs (scheduled_for) WHERE state = 'pending' AND held = 0 AND blocked = 0;
CREATE INDEX runs_running ON runs (lease_expires_at) WHERE state = 'running';
CREATE INDEX runs_job ON runs (job_id, state);
CREATE INDEX runs_job_started ON runs (job_id, started_at);
-- last_end_time is derived on read from this.
CREATE INDEX runs_job_ended ON runs (job_id, ended_at);
CREATE INDEX runs_list ON runs (scheduled_for DESC, id DESC);
CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE workers (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    handlers       TEXT NOT NULL,
    capacity       INTEGER NOT NULL,
    last_heartbeat INTEGER NOT NULL,
    state          TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);
