//! Row shapes shared by both backends (integers are BIGINT microseconds, JSON is TEXT, so one
//! `FromRow` decodes from SQLite and PostgreSQL alike) and their conversion to domain types.

use super::{ClaimedRun, StoreError};
use crate::domain::{
    trigger::TriggerWire, Attempt, AttemptState, Job, Overlap, RetryPolicy, Run, RunState, Timestamp, Trigger,
    TriggerSpec, Worker, WorkerState,
};
use std::time::Duration;

pub(crate) fn ts(us: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default()
}
pub(crate) fn us(t: Timestamp) -> i64 {
    t.timestamp_micros()
}
pub(crate) fn dur_us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
pub(crate) fn us_dur(v: i64) -> Duration {
    Duration::from_micros(v.max(0) as u64)
}
fn corrupt(what: &str, v: &str) -> StoreError {
    StoreError::Internal(format!("corrupt {what} in store: {v:?}"))
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct JobRow {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub handler: String,
    pub payload: String,
    pub priority: i64,
    pub max_attempts: i64,
    pub initial_delay_us: i64,
    pub max_delay_us: i64,
    pub timeout_us: Option<i64>,
    pub overlap: String,
    pub paused: bool,
    pub idempotency_key: Option<String>,
    pub fingerprint: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub limits: String,
    pub pause_after_failures: Option<i64>,
    pub paused_reason: Option<String>,
    pub running: bool,
    pub last_start_time: Option<i64>,
    pub last_end_time: Option<i64>,
    pub last_worker: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct TriggerRow {
    pub id: String,
    pub job_id: String,
    pub spec: String,
    pub next_fire_at: Option<i64>,
    pub fires: i64,
}

impl TriggerRow {
    pub(crate) fn spec(&self) -> Result<TriggerSpec, StoreError> {
        let w: TriggerWire = serde_json::from_str(&self.spec).map_err(|_| corrupt("trigger", &self.spec))?;
        TriggerSpec::from_wire_unchecked(&w).map_err(|_| corrupt("trigger", &self.spec))
    }
    pub(crate) fn into_trigger(self) -> Result<Trigger, StoreError> {
        Ok(Trigger {
            spec: self.spec()?,
            id: self.id,
            next_fire_at: self.next_fire_at.map(ts),
            fires: self.fires.max(0) as u64,
        })
    }
}

/// The definition stored as the trigger's `spec` column.
pub(crate) fn trigger_spec_json(spec: &TriggerSpec) -> String {
    serde_json::to_string(&spec.to_wire()).expect("trigger serializes")
}

impl JobRow {
    pub(crate) fn into_job(self, triggers: Vec<Trigger>, now: Timestamp) -> Result<Job, StoreError> {
        let overlap = Overlap::parse(&self.overlap).ok_or_else(|| corrupt("overlap", &self.overlap))?;
        let next_fire_time = super::plan::next_fire_time(&triggers, self.paused, now);
        Ok(Job {
            payload: serde_json::from_str(&self.payload).map_err(|_| corrupt("payload", &self.payload))?,
            priority: self.priority as i32,
            retry: RetryPolicy {
                max_attempts: self.max_attempts as u32,
                initial_delay: us_dur(self.initial_delay_us),
                max_delay: us_dur(self.max_delay_us),
            },
            timeout: self.timeout_us.map(us_dur),
            overlap,
            paused: self.paused,
            idempotency_key: self.idempotency_key,
            triggers,
            created_at: ts(self.created_at),
            updated_at: ts(self.updated_at),
            next_fire_time,
            running: self.running,
            last_start_time: self.last_start_time.map(ts),
            last_end_time: self.last_end_time.map(ts),
            last_worker: self.last_worker,
            fingerprint: self.fingerprint,
            limits: super::limits::parse_keys(&self.limits),
            pause_after_failures: self.pause_after_failures.map(|n| n.clamp(1, i64::from(u32::MAX)) as u32),
            paused_reason: self.paused_reason,
            id: self.id,
            name: self.name,
            namespace: self.namespace,
            handler: self.handler,
        })
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct RunRow {
    pub id: String,
    pub job_id: String,
    pub trigger_id: Option<String>,
    pub namespace: String,
    pub handler: String,
    pub payload: String,
    pub priority: i64,
    pub timeout_us: Option<i64>,
    pub max_attempts: i64,
    pub initial_delay_us: i64,
    pub max_delay_us: i64,
    pub overlap: String,
    pub scheduled_for: i64,
    pub fire_time: i64,
    pub state: String,
    pub attempt: i64,
    pub worker_id: Option<String>,
    /// Name of the worker of the latest attempt, kept after the worker is forgotten.
    pub worker_name: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub reason: Option<String>,
    /// The lasting part of `reason` (a misfire note), which claims and settlements keep.
    pub note: Option<String>,
    pub cancel_requested: bool,
    pub created_at: i64,
    pub limits: String,
}

/// Columns of [`RunRow`], for `SELECT`/`RETURNING` lists.
pub(crate) const RUN_COLUMNS: &str = "id, job_id, trigger_id, namespace, handler, payload, priority, timeout_us, \
     max_attempts, initial_delay_us, max_delay_us, overlap, scheduled_for, fire_time, state, attempt, worker_id, \
     worker_name, lease_expires_at, started_at, finished_at, output, error, reason, note, cancel_requested, created_at, limits";

impl RunRow {
    pub(crate) fn state(&self) -> Result<RunState, StoreError> {
        RunState::parse(&self.state).ok_or_else(|| corrupt("run state", &self.state))
    }
    pub(crate) fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts as u32,
            initial_delay: us_dur(self.initial_delay_us),
            max_delay: us_dur(self.max_delay_us),
        }
    }
    pub(crate) fn into_run(self) -> Result<Run, StoreError> {
        Ok(Run {
            state: self.state()?,
            payload: serde_json::from_str(&self.payload).map_err(|_| corrupt("payload", &self.payload))?,
            output: match self.output {
                Some(o) => Some(serde_json::from_str(&o).map_err(|_| corrupt("output", &o))?),
                None => None,
            },
            id: self.id,
            job_id: self.job_id,
            trigger_id: self.trigger_id,
            namespace: self.namespace,
            handler: self.handler,
            scheduled_for: ts(self.scheduled_for),
            fire_time: ts(self.fire_time),
            attempt: self.attempt as u32,
            worker_id: self.worker_id,
            worker_name: self.worker_name,
            started_at: self.started_at.map(ts),
            finished_at: self.finished_at.map(ts),
            error: self.error,
            reason: self.reason,
            cancel_requested: self.cancel_requested,
            lease_expires_at: self.lease_expires_at.map(ts),
            priority: self.priority as i32,
            timeout: self.timeout_us.map(us_dur),
            max_attempts: self.max_attempts as u32,
            limits: super::limits::parse_keys(&self.limits),
            created_at: ts(self.created_at),
        })
    }
    pub(crate) fn into_claimed(self) -> Result<ClaimedRun, StoreError> {
        Ok(ClaimedRun {
            payload: serde_json::from_str(&self.payload).map_err(|_| corrupt("payload", &self.payload))?,
            run_id: self.id,
            attempt: self.attempt as u32,
            job_id: self.job_id,
            handler: self.handler,
            timeout: self.timeout_us.map(us_dur),
            scheduled_for: ts(self.scheduled_for),
            lease_expires_at: self.lease_expires_at.map(ts).unwrap_or_default(),
        })
    }
}

/// A row of `run_attempts`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AttemptRow {
    pub attempt: i64,
    pub worker_id: String,
    pub worker_name: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub state: String,
    pub error: Option<String>,
}

/// Columns of [`AttemptRow`].
pub(crate) const ATTEMPT_COLUMNS: &str = "attempt, worker_id, worker_name, started_at, finished_at, state, error";

impl AttemptRow {
    pub(crate) fn into_attempt(self) -> Result<Attempt, StoreError> {
        Ok(Attempt {
            state: AttemptState::parse(&self.state).ok_or_else(|| corrupt("attempt state", &self.state))?,
            attempt: self.attempt as u32,
            worker_id: self.worker_id,
            worker_name: self.worker_name,
            started_at: ts(self.started_at),
            finished_at: self.finished_at.map(ts),
            error: self.error,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct WorkerRow {
    pub id: String,
    pub name: String,
    pub handlers: String,
    pub capacity: i64,
    pub last_heartbeat: i64,
    pub state: String,
    pub created_at: i64,
    pub running: i64,
    pub namespaces: Option<String>,
}

impl WorkerRow {
    pub(crate) fn into_worker(self) -> Result<Worker, StoreError> {
        Ok(Worker {
            handlers: serde_json::from_str(&self.handlers).map_err(|_| corrupt("handlers", &self.handlers))?,
            state: WorkerState::parse(&self.state).ok_or_else(|| corrupt("worker state", &self.state))?,
            id: self.id,
            name: self.name,
            capacity: self.capacity as u32,
            last_heartbeat: ts(self.last_heartbeat),
            running: self.running.max(0) as u64,
            created_at: ts(self.created_at),
            namespaces: match &self.namespaces {
                None => None,
                Some(n) => Some(serde_json::from_str(n).map_err(|_| corrupt("worker namespaces", n))?),
            },
        })
    }
}

/// Opaque list cursor: the sort key and id of the last item of a page. Valid on any node.
pub(crate) fn encode_cursor(key: i64, id: &str) -> String {
    format!("{key}_{id}")
}

/// Decodes a cursor; a malformed one is an invalid value for the `cursor` parameter.
pub(crate) fn decode_cursor(c: &str) -> Result<(i64, String), StoreError> {
    let (k, id) = c.split_once('_').ok_or_else(|| StoreError::Invalid("cursor: malformed".into()))?;
    let k = k.parse().map_err(|_| StoreError::Invalid("cursor: malformed".into()))?;
    Ok((k, id.to_string()))
}

/// The job columns plus the fields derived from its runs (computed on read, so claims and
/// completions never write the jobs table). Valid SQL for both backends.
pub(crate) const JOB_SELECT: &str = "SELECT j.id, j.namespace, j.name, j.handler, j.payload, j.priority, \
     j.max_attempts, j.initial_delay_us, j.max_delay_us, j.timeout_us, j.overlap, j.paused, j.idempotency_key, \
     j.fingerprint, j.created_at, j.updated_at, j.limits, j.pause_after_failures, j.paused_reason, \
     EXISTS (SELECT 1 FROM runs r WHERE r.job_id = j.id AND r.state = 'running') AS running, \
     (SELECT MAX(r.started_at) FROM runs r WHERE r.job_id = j.id) AS last_start_time, \
     (SELECT MAX(r.ended_at) FROM runs r WHERE r.job_id = j.id) AS last_end_time, \
     (SELECT r.worker_id FROM runs r WHERE r.job_id = j.id AND r.started_at IS NOT NULL \
        ORDER BY r.started_at DESC LIMIT 1) AS last_worker \
     FROM jobs j";

/// Jobs from their rows and their triggers' rows (ordered by `position` within each job).
pub(crate) fn jobs_with_triggers(
    rows: Vec<JobRow>,
    triggers: Vec<TriggerRow>,
    now: Timestamp,
) -> Result<Vec<Job>, StoreError> {
    let mut by_job: std::collections::HashMap<String, Vec<Trigger>> = std::collections::HashMap::new();
    for t in triggers {
        by_job.entry(t.job_id.clone()).or_default().push(t.into_trigger()?);
    }
    rows.into_iter()
        .map(|r| {
            let t = by_job.remove(&r.id).unwrap_or_default();
            r.into_job(t, now)
        })
        .collect()
}

/// What a claim reads of its worker: the handlers it serves, and the namespaces its claims are
/// narrowed to (`None`: every namespace).
#[derive(Debug, Clone)]
pub(crate) struct WorkerScope {
    pub handlers: Vec<String>,
    pub namespaces: Option<Vec<String>>,
}

impl WorkerScope {
    /// From the worker row's JSON columns.
    pub(crate) fn parse(handlers: &str, namespaces: Option<&str>) -> Result<Self, StoreError> {
        Ok(Self {
            handlers: serde_json::from_str(handlers).map_err(|_| corrupt("handlers", handlers))?,
            namespaces: match namespaces {
                None => None,
                Some(n) => Some(serde_json::from_str(n).map_err(|_| corrupt("worker namespaces", n))?),
            },
        })
    }

    /// Whether a claim can find nothing at all (no handler, or no namespace).
    pub(crate) fn claims_nothing(&self) -> bool {
        self.handlers.is_empty() || self.namespaces.as_ref().is_some_and(Vec::is_empty)
    }
}

/// Columns of [`TriggerRow`].
pub(crate) const TRIGGER_COLUMNS: &str = "id, job_id, spec, next_fire_at, fires";

/// Columns of [`WorkerRow`].
pub(crate) const WORKER_SELECT: &str = "SELECT w.id, w.name, w.handlers, w.capacity, w.last_heartbeat, w.state, \
     w.created_at, (SELECT COUNT(*) FROM runs r WHERE r.worker_id = w.id AND r.state = 'running') AS running, \
     w.namespaces FROM workers w";

/// A job built from the definition just inserted (no runs yet, so nothing derived).
pub(crate) fn fresh_job(
    id: &str,
    name: &str,
    spec: &crate::domain::JobSpec,
    triggers: Vec<Trigger>,
    now: Timestamp,
) -> Job {
    Job {
        id: id.to_string(),
        name: name.to_string(),
        namespace: spec.namespace.clone(),
        handler: spec.handler.clone(),
        payload: spec.payload.clone(),
        priority: spec.priority,
        retry: spec.retry,
        timeout: spec.timeout,
        overlap: spec.overlap,
        paused: spec.paused,
        idempotency_key: spec.idempotency_key.clone(),
        next_fire_time: super::plan::next_fire_time(&triggers, spec.paused, now),
        triggers,
        created_at: now,
        updated_at: now,
        running: false,
        last_start_time: None,
        last_end_time: None,
        last_worker: None,
        fingerprint: super::plan::stored_fingerprint(spec, spec.idempotency_key.as_deref()),
        limits: spec.limits.clone(),
        pause_after_failures: spec.pause_after_failures,
        paused_reason: None,
    }
}

/// A stored calendar (both backends).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct CalendarRow {
    pub name: String,
    pub timezone: String,
    pub exclude: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Columns of [`CalendarRow`].
pub(crate) const CALENDAR_COLUMNS: &str = "name, timezone, exclude, created_at, updated_at";

impl CalendarRow {
    pub(crate) fn into_def(self) -> Result<crate::domain::CalendarDef, StoreError> {
        let exclude = serde_json::from_str(&self.exclude).map_err(|_| corrupt("calendar", &self.exclude))?;
        Ok(crate::domain::CalendarDef {
            name: self.name,
            timezone: self.timezone,
            exclude,
            created_at: ts(self.created_at),
            updated_at: ts(self.updated_at),
        })
    }
}

/// Stored calendars by name, compiled.
pub(crate) fn compile_calendars(
    rows: Vec<CalendarRow>,
) -> Result<std::collections::HashMap<String, crate::schedule::Calendar>, StoreError> {
    rows.into_iter()
        .map(|r| {
            let def = r.into_def()?;
            let cal = def.compile().map_err(|e| StoreError::Internal(format!("stored calendar {}: {e}", def.name)))?;
            Ok((def.name, cal))
        })
        .collect()
}
