-- sundial schema (PostgreSQL). Instants are BIGINT microseconds since the Unix epoch, JSON is
-- TEXT, flags are BOOLEAN: the same row shapes as the SQLite schema, so one `FromRow` decodes
-- both. Identifiers compare bytewise (COLLATE "C"), as in SQLite, so list order and cursors do
-- not depend on the database's locale.

CREATE TABLE jobs (
    id               TEXT COLLATE "C" PRIMARY KEY,
    namespace        TEXT NOT NULL,
    name             TEXT NOT NULL,
    handler          TEXT NOT NULL,
    payload          TEXT NOT NULL,
    priority         BIGINT NOT NULL,
    max_attempts     BIGINT NOT NULL,
    initial_delay_us BIGINT NOT NULL,
    max_delay_us     BIGINT NOT NULL,
    timeout_us       BIGINT,
    overlap          TEXT NOT NULL,
    paused           BOOLEAN NOT NULL,
    idempotency_key  TEXT,
    fingerprint      TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE UNIQUE INDEX jobs_name ON jobs (namespace, name);
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (namespace, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);

-- Every fire rewrites next_fire_at and fires: leave room for HOT updates.
CREATE TABLE triggers (
    id           TEXT COLLATE "C" PRIMARY KEY,
    job_id       TEXT COLLATE "C" NOT NULL,
    position     BIGINT NOT NULL,
    spec         TEXT NOT NULL,
    next_fire_at BIGINT,
    fires        BIGINT NOT NULL DEFAULT 0,
    paused       BOOLEAN NOT NULL DEFAULT FALSE
) WITH (fillfactor = 70);
-- The scheduler reads only due triggers: its cost grows with the number due, not stored.
CREATE INDEX triggers_due ON triggers (next_fire_at) WHERE next_fire_at IS NOT NULL AND NOT paused;
CREATE INDEX triggers_job ON triggers (job_id, position);

-- A run is updated on every claim, heartbeat and completion.
CREATE TABLE runs (
    id               TEXT COLLATE "C" PRIMARY KEY,
    job_id           TEXT COLLATE "C" NOT NULL,
    trigger_id       TEXT COLLATE "C",
    fire_time        BIGINT NOT NULL,
    namespace        TEXT NOT NULL,
    handler          TEXT NOT NULL,
    payload          TEXT NOT NULL,
    priority         BIGINT NOT NULL,
    timeout_us       BIGINT,
    max_attempts     BIGINT NOT NULL,
    initial_delay_us BIGINT NOT NULL,
    max_delay_us     BIGINT NOT NULL,
    overlap          TEXT NOT NULL,
    scheduled_for    BIGINT NOT NULL,
    state            TEXT NOT NULL,
    attempt          BIGINT NOT NULL DEFAULT 0,
    worker_id        TEXT COLLATE "C",
    lease_expires_at BIGINT,
    started_at       BIGINT,
    ended_at         BIGINT,
    finished_at      BIGINT,
    output           TEXT,
    error            TEXT,
    reason           TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    manual           BOOLEAN NOT NULL DEFAULT FALSE,
    held             BOOLEAN NOT NULL DEFAULT FALSE,
    blocked          BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT NOT NULL,
    -- Guarantee 2: one run per trigger per due time, whatever number of schedulers race.
    CONSTRAINT runs_trigger_fire_time UNIQUE (trigger_id, fire_time)
) WITH (fillfactor = 80);
CREATE INDEX runs_claim ON runs (handler, priority DESC, scheduled_for) WHERE state = 'pending' AND NOT held AND NOT blocked;
CREATE INDEX runs_pending_due ON runs (scheduled_for) WHERE state = 'pending' AND NOT held AND NOT blocked;
-- Unlike SQLite's (lease_expires_at): no index covers lease_expires_at, so a heartbeat is a
-- HOT update (no index writes). The reaper scans the running runs (bounded by the workers'
-- capacity); worker lists count them per worker.
CREATE INDEX runs_running ON runs (worker_id) WHERE state = 'running';
CREATE INDEX runs_job ON runs (job_id, state);
CREATE INDEX runs_job_started ON runs (job_id, started_at);
-- last_end_time is derived on read from this.
CREATE INDEX runs_job_ended ON runs (job_id, ended_at);
CREATE INDEX runs_list ON runs (scheduled_for DESC, id DESC);
CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;

-- Every claim and heartbeat rewrites last_heartbeat.
CREATE TABLE workers (
    id             TEXT COLLATE "C" PRIMARY KEY,
    name           TEXT NOT NULL,
    handlers       TEXT NOT NULL,
    capacity       BIGINT NOT NULL,
    last_heartbeat BIGINT NOT NULL,
    state          TEXT NOT NULL,
    created_at     BIGINT NOT NULL
) WITH (fillfactor = 50);
