//! The PostgreSQL store: any number of stateless nodes share one database, with no leader.
//!
//! Same tables and semantics as [`SqliteStore`](super::sqlite::SqliteStore); what differs is
//! how concurrent nodes are kept apart:
//! * claims, due triggers, expired leases and prunes are picked with `FOR UPDATE SKIP LOCKED`,
//!   so nodes never wait on each other's picks;
//! * overlap decisions are serialised per job by locking the job's row (`buffer_one`,
//!   `skip`, `cancel_other` jobs only), and so are settlements that read the job (a retry
//!   checks `paused`; a `buffer_one` finish releases the waiting run);
//! * to rule out deadlocks, every transaction takes row locks in one order: triggers, then jobs
//!   (sorted by id), then runs (sorted by id); a transaction that already holds run locks only
//!   takes job locks with `SKIP LOCKED`;
//! * hot paths are batched into a handful of statements (`UNNEST` arrays), whatever the batch
//!   size: submissions, fires, completions and heartbeats.
//!
//! Tests isolate themselves in a schema of their own: [`PostgresStore::connect_with_schema`], or
//! `?schema=NAME` in the URL given to [`PostgresStore::connect`].

use super::fire::{fire_actions, JobSnapshot, NewRun, JOB_SNAPSHOT_COLUMNS};
use super::rows::{
    dur_us, fresh_job, trigger_spec_json, ts, us, JobRow, RunRow, TriggerRow, WorkerRow, JOB_SELECT, RUN_COLUMNS,
    TRIGGER_COLUMNS, WORKER_SELECT,
};
use super::*;
use crate::attempt::{settle, AttemptInfo, Ended};
use crate::domain::{new_id, Overlap, Trigger};
use crate::overlap::{decide, superseded_reason, ActiveRuns, Decision};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

type Tx = Transaction<'static, Postgres>;

/// Connections per node.
const POOL_SIZE: u32 = 16;

/// Marks [`StoreError::Unavailable`] messages of transient transaction failures (deadlock,
/// serialization failure) that a caller may simply retry.
const RETRYABLE: &str = "transient conflict with a concurrent transaction";

/// The notification channel of [`PostgresStore::listen_runs_ready`]; the payload is the schema.
const READY_CHANNEL: &str = "sundial_runs_ready";

/// Wake-ups for idle claimers: see [`PostgresStore::listen_runs_ready`].
pub struct RunsReadyListener {
    listener: sqlx::postgres::PgListener,
    schema: String,
}

impl std::fmt::Debug for RunsReadyListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunsReadyListener").field("schema", &self.schema).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Wakeups for RunsReadyListener {
    async fn recv(&mut self) -> Result<()> {
        RunsReadyListener::recv(self).await
    }
}

impl RunsReadyListener {
    /// Waits for the next notice. Several notices may arrive as one, and a lost connection
    /// (reconnected on the next call) also returns, since notices sent meanwhile are lost: a
    /// caller treats every return as "look now", never as a promise that a run is there.
    pub async fn recv(&mut self) -> Result<()> {
        loop {
            match self.listener.try_recv().await.map_err(db_err)? {
                None => return Ok(()),
                Some(n) if n.payload() == self.schema => {
                    // Drain what is already buffered: one wake-up for a burst.
                    while self.listener.next_buffered().is_some() {}
                    return Ok(());
                }
                Some(_) => {}
            }
        }
    }
}

/// The PostgreSQL-backed [`Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    schema: Option<String>,
}

/// Maps driver errors to domain errors (the one place that knows sqlx's error kinds).
fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound("row".into()),
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(ref d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                // Deadlock detected, serialization failure: nothing is committed, try again.
                "40P01" | "40001" => StoreError::Unavailable(format!("{RETRYABLE}: {e}")),
                // Connection exceptions, insufficient resources, shutdown, lock timeouts.
                c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") || c == "55P03" => {
                    StoreError::Unavailable(e.to_string())
                }
                // Unique violation: a concurrent writer took the name or key first.
                "23505" => match d.constraint() {
                    Some("jobs_name") => StoreError::Conflict {
                        code: "name_conflict",
                        message: "name: is taken in this namespace by another job".into(),
                    },
                    Some("jobs_idempotency_key") => StoreError::Conflict {
                        code: "idempotency_conflict",
                        message: "idempotency_key: was already used for a different job definition".into(),
                    },
                    _ => StoreError::Internal(e.to_string()),
                },
                // Text PostgreSQL cannot store (a NUL character).
                "22021" | "22P05" => StoreError::Invalid(format!("value cannot be stored: {}", d.message())),
                _ => StoreError::Internal(e.to_string()),
            }
        }
        other => StoreError::Internal(other.to_string()),
    }
}

fn is_retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(m) if m.starts_with(RETRYABLE))
}

fn migrate_err(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => db_err(e),
        other => StoreError::Internal(format!("migration failed: {other}")),
    }
}

/// Schema names are used unquoted in the connection's `search_path`: keep them plain.
fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

/// Takes `schema=NAME` out of a URL's query (sqlx does not know that parameter).
fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_string(), None) };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("schema=") {
            Some(v) => {
                schema = Some(v.to_string());
                false
            }
            None => !kv.is_empty(),
        })
        .collect();
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    (url, schema)
}

impl PostgresStore {
    /// Connects to `postgres://…` and migrates. A `schema=NAME` query parameter works like
    /// [`PostgresStore::connect_with_schema`].
    pub async fn connect(url: &str) -> Result<Self> {
        let (url, schema) = split_schema(url);
        Self::connect_inner(&url, schema).await
    }

    /// Connects with every pooled connection's `search_path` set to `schema` (created if
    /// missing), and migrates inside it (the migrations table included), so several sundial
    /// installations, or tests, share one database without seeing each other. `schema` is
    /// lower-case letters, digits and `_`.
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<Self> {
        Self::connect_inner(url, Some(schema.to_string())).await
    }

    async fn connect_inner(url: &str, schema: Option<String>) -> Result<Self> {
        let mut opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Internal(format!("bad postgres URL: {e}")))?
            .application_name("sundial");
        if let Some(s) = &schema {
            if !valid_schema(s) {
                return Err(StoreError::Invalid(format!(
                    "schema: {s:?} must be lower-case letters, digits and '_', starting with a letter or '_'"
                )));
            }
            // A startup parameter: set on every connection before its first statement.
            opts = opts.options([("search_path", s.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(0)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .idle_timeout(std::time::Duration::from_secs(60))
            .connect_with(opts)
            .await
            .map_err(db_err)?;
        if let Some(s) = &schema {
            if let Err(e) = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {s}")).execute(&pool).await {
                // Two processes creating it at once: the loser sees a unique violation.
                let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                    .bind(s)
                    .fetch_one(&pool)
                    .await
                    .map_err(db_err)?;
                if !exists {
                    return Err(db_err(e));
                }
            }
        }
        sqlx::migrate!("src/store/postgres/migrations").run(&pool).await.map_err(migrate_err)?;
        Ok(Self { pool, schema })
    }

    /// The schema this store lives in, when it was given one.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Listens for "runs may be ready" notices from every node sharing this database (and
    /// schema): sent when a commit makes pending runs due (fires, submissions, manual runs,
    /// resumes), so idle claimers can look at once instead of waiting out a poll interval.
    pub async fn listen_runs_ready(&self) -> Result<RunsReadyListener> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await.map_err(db_err)?;
        listener.listen(READY_CHANNEL).await.map_err(db_err)?;
        Ok(RunsReadyListener { listener, schema: self.schema.clone().unwrap_or_default() })
    }

    /// Queues a [`READY_CHANNEL`] notice, delivered when (and only if) `tx` commits; PostgreSQL
    /// folds repeats within one transaction into one.
    async fn notify_ready(&self, tx: &mut Tx) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(READY_CHANNEL)
            .bind(self.schema.as_deref().unwrap_or_default())
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn begin(&self) -> Result<Tx> {
        self.pool.begin().await.map_err(db_err)
    }

    async fn load_triggers(&self, job_ids: &[String]) -> Result<HashMap<String, Vec<Trigger>>> {
        let mut out: HashMap<String, Vec<Trigger>> = HashMap::new();
        if job_ids.is_empty() {
            return Ok(out);
        }
        let rows: Vec<TriggerRow> = sqlx::query_as(&format!(
            "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE job_id = ANY($1) ORDER BY job_id, position"
        ))
        .bind(job_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        for r in rows {
            out.entry(r.job_id.clone()).or_default().push(r.into_trigger()?);
        }
        Ok(out)
    }

    async fn jobs_from_rows(&self, rows: Vec<JobRow>, now: Timestamp) -> Result<Vec<Job>> {
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let mut triggers = self.load_triggers(&ids).await?;
        rows.into_iter()
            .map(|r| {
                let t = triggers.remove(&r.id).unwrap_or_default();
                r.into_job(t, now)
            })
            .collect()
    }

    async fn jobs_by_id(&self, ids: &[String], now: Timestamp) -> Result<HashMap<String, Job>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<JobRow> = sqlx::query_as(&format!("{JOB_SELECT} WHERE j.id = ANY($1)"))
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(self.jobs_from_rows(rows, now).await?.into_iter().map(|j| (j.id.clone(), j)).collect())
    }

    /// One group-commit attempt of [`Store::job_create_many`].
    async fn create_batch(&self, jobs: &[JobCreate], now: Timestamp) -> Result<Vec<Staged>> {
        let items: Vec<Item> = jobs
            .iter()
            .map(|c| {
                let key = c.spec.idempotency_key.clone().or_else(|| c.derived_idempotency_key.clone());
                Item { fingerprint: c.spec.fingerprint(), explicit_key: c.spec.idempotency_key.is_some(), key }
            })
            .collect();
        let mut staged: Vec<Option<Staged>> = vec![None; jobs.len()];
        let mut created: Vec<(usize, String, String)> = Vec::new(); // (item, id, name)
        let mut todo: Vec<usize> = (0..jobs.len()).collect();
        let mut tx = self.begin().await?;
        for _round in 0..5 {
            if todo.is_empty() {
                break;
            }
            let (mut by_key, mut by_name) = lookup_existing(&mut tx, jobs, &items, &todo).await?;
            // Decide in submission order: an item sees the items before it (as on SQLite).
            let mut round_new: HashMap<String, usize> = HashMap::new(); // new job id -> item
            let mut depends: Vec<(usize, String)> = Vec::new(); // item -> new job id it resolved to
            let mut inserts: Vec<(usize, String, String)> = Vec::new();
            for &i in &todo {
                let spec = &jobs[i].spec;
                let item = &items[i];
                match resolve(spec, item, &by_key, &by_name) {
                    Resolution::Existing(s, id) => {
                        if round_new.contains_key(&id) {
                            depends.push((i, id));
                        }
                        staged[i] = Some(s);
                    }
                    Resolution::Create => {
                        let id = new_id();
                        let name = spec.name.clone().unwrap_or_else(|| id.clone());
                        if let Some(k) = &item.key {
                            by_key.insert((spec.namespace.clone(), k.clone()), (id.clone(), item.fingerprint.clone()));
                        }
                        by_name.insert((spec.namespace.clone(), name.clone()), (id.clone(), item.fingerprint.clone()));
                        round_new.insert(id.clone(), i);
                        inserts.push((i, id, name));
                    }
                }
            }
            let inserted = insert_jobs(&mut tx, jobs, &items, &inserts, now).await?;
            let mut lost: HashSet<String> = HashSet::new();
            for (i, id, name) in inserts {
                if inserted.contains(&id) {
                    created.push((i, id, name));
                } else {
                    // A concurrent transaction committed the same name or key first: look again.
                    lost.insert(id);
                }
            }
            todo = round_new.iter().filter(|(id, _)| lost.contains(*id)).map(|(_, &i)| i).collect();
            todo.extend(depends.iter().filter(|(_, id)| lost.contains(id)).map(|&(i, _)| i));
            todo.sort_unstable();
            for &i in &todo {
                staged[i] = None;
            }
        }
        if !todo.is_empty() {
            return Err(StoreError::Unavailable(format!("{RETRYABLE}: submissions kept racing")));
        }
        let specs: Vec<(&str, &JobSpec)> = created.iter().map(|(i, id, _)| (id.as_str(), &jobs[*i].spec)).collect();
        let mut triggers = insert_triggers(&mut tx, &specs, now).await?;
        let once: Vec<NewRun> = created
            .iter()
            .filter(|(i, _, _)| jobs[*i].spec.triggers.is_empty())
            .map(|(i, id, _)| {
                let spec = &jobs[*i].spec;
                // No trigger: one run, due now (held until resume when created paused).
                NewRun::untriggered(JobSnapshot::from_spec(id, spec), now, spec.paused, false)
            })
            .collect();
        insert_runs(&mut tx, once.iter()).await?;
        if once.iter().any(|r| !r.held) {
            self.notify_ready(&mut tx).await?;
        }
        tx.commit().await.map_err(db_err)?;
        for (i, id, name) in created {
            let mut spec = jobs[i].spec.clone();
            spec.idempotency_key = items[i].key.clone();
            let t = triggers.remove(&id).unwrap_or_default();
            staged[i] = Some(Staged::Created(Box::new(fresh_job(&id, &name, &spec, t, now))));
        }
        staged.into_iter().map(|s| s.ok_or_else(|| StoreError::Internal("unresolved submission".into()))).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Submissions.

/// What one submission became inside the group commit.
#[derive(Debug, Clone)]
enum Staged {
    Created(Box<Job>),
    Replay(String),
    Failed(ConflictKind, String),
}

#[derive(Debug, Clone, Copy)]
enum ConflictKind {
    Idempotency,
    Name,
}

struct Item {
    fingerprint: String,
    explicit_key: bool,
    /// The key stored: the client's, else the derived one.
    key: Option<String>,
}

enum Resolution {
    Existing(Staged, String),
    Create,
}

type Existing = HashMap<(String, String), (String, String)>;

/// The decision of the SQLite store's `create_one`, against what exists (committed, or earlier
/// in this batch).
fn resolve(spec: &JobSpec, item: &Item, by_key: &Existing, by_name: &Existing) -> Resolution {
    if let Some(k) = &item.key {
        if let Some((id, fp)) = by_key.get(&(spec.namespace.clone(), k.clone())) {
            if *fp == item.fingerprint || !item.explicit_key {
                return Resolution::Existing(Staged::Replay(id.clone()), id.clone());
            }
            let message = format!("idempotency_key: {k:?} was already used for a different job definition");
            return Resolution::Existing(Staged::Failed(ConflictKind::Idempotency, message), id.clone());
        }
    }
    if let Some(name) = &spec.name {
        if let Some((id, fp)) = by_name.get(&(spec.namespace.clone(), name.clone())) {
            if *fp == item.fingerprint {
                return Resolution::Existing(Staged::Replay(id.clone()), id.clone());
            }
            let message = format!(
                "name: {name:?} is taken in namespace {:?} by a job with a different definition",
                spec.namespace
            );
            return Resolution::Existing(Staged::Failed(ConflictKind::Name, message), id.clone());
        }
    }
    Resolution::Create
}

/// Existing jobs with the keys and names of the items in `todo`, in two index lookups.
async fn lookup_existing(
    tx: &mut Tx,
    jobs: &[JobCreate],
    items: &[Item],
    todo: &[usize],
) -> Result<(Existing, Existing)> {
    let (mut key_ns, mut keys, mut name_ns, mut names) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &i in todo {
        let spec = &jobs[i].spec;
        if let Some(k) = &items[i].key {
            key_ns.push(spec.namespace.clone());
            keys.push(k.clone());
        }
        if let Some(n) = &spec.name {
            name_ns.push(spec.namespace.clone());
            names.push(n.clone());
        }
    }
    let mut by_key = HashMap::new();
    let mut by_name = HashMap::new();
    if keys.is_empty() && names.is_empty() {
        return Ok((by_key, by_name));
    }
    let rows: Vec<(String, String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT j.id, j.namespace, j.name, j.idempotency_key, j.fingerprint FROM jobs j \
         JOIN UNNEST($1::text[], $2::text[]) AS k(ns, key) ON j.namespace = k.ns AND j.idempotency_key = k.key \
         UNION \
         SELECT j.id, j.namespace, j.name, j.idempotency_key, j.fingerprint FROM jobs j \
         JOIN UNNEST($3::text[], $4::text[]) AS n(ns, name) ON j.namespace = n.ns AND j.name = n.name",
    )
    .bind(&key_ns)
    .bind(&keys)
    .bind(&name_ns)
    .bind(&names)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)?;
    for (id, ns, name, key, fp) in rows {
        if let Some(k) = key {
            by_key.insert((ns.clone(), k), (id.clone(), fp.clone()));
        }
        by_name.insert((ns, name), (id, fp));
    }
    Ok((by_key, by_name))
}

/// Inserts the jobs in one statement; returns the ids actually inserted (a row whose name or
/// key a concurrent transaction took first is left out).
async fn insert_jobs(
    tx: &mut Tx,
    jobs: &[JobCreate],
    items: &[Item],
    inserts: &[(usize, String, String)],
    now: Timestamp,
) -> Result<HashSet<String>> {
    if inserts.is_empty() {
        return Ok(HashSet::new());
    }
    // Sorted by name, so concurrent batches take the unique-index entries in one order.
    let mut order: Vec<&(usize, String, String)> = inserts.iter().collect();
    order.sort_by(|a, b| (&jobs[a.0].spec.namespace, &a.2).cmp(&(&jobs[b.0].spec.namespace, &b.2)));
    let mut c = JobCols::default();
    for (i, id, name) in order {
        let spec = &jobs[*i].spec;
        let snap = JobSnapshot::from_spec(id, spec);
        c.id.push(id.clone());
        c.namespace.push(snap.namespace);
        c.name.push(name.clone());
        c.handler.push(snap.handler);
        c.payload.push(snap.payload);
        c.priority.push(snap.priority);
        c.max_attempts.push(snap.max_attempts);
        c.initial_delay_us.push(snap.initial_delay_us);
        c.max_delay_us.push(snap.max_delay_us);
        c.timeout_us.push(snap.timeout_us);
        c.overlap.push(snap.overlap);
        c.paused.push(spec.paused);
        c.key.push(items[*i].key.clone());
        c.fingerprint.push(items[*i].fingerprint.clone());
    }
    let ids: Vec<String> = sqlx::query_scalar(
        "INSERT INTO jobs (id, namespace, name, handler, payload, priority, max_attempts, initial_delay_us, \
         max_delay_us, timeout_us, overlap, paused, idempotency_key, fingerprint, created_at, updated_at) \
         SELECT u.*, $15, $15 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], \
         $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::text[], $12::bool[], $13::text[], $14::text[]) AS u \
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(c.id)
    .bind(c.namespace)
    .bind(c.name)
    .bind(c.handler)
    .bind(c.payload)
    .bind(c.priority)
    .bind(c.max_attempts)
    .bind(c.initial_delay_us)
    .bind(c.max_delay_us)
    .bind(c.timeout_us)
    .bind(c.overlap)
    .bind(c.paused)
    .bind(c.key)
    .bind(c.fingerprint)
    .bind(us(now))
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(ids.into_iter().collect())
}

#[derive(Default)]
struct JobCols {
    id: Vec<String>,
    namespace: Vec<String>,
    name: Vec<String>,
    handler: Vec<String>,
    payload: Vec<String>,
    priority: Vec<i64>,
    max_attempts: Vec<i64>,
    initial_delay_us: Vec<i64>,
    max_delay_us: Vec<i64>,
    timeout_us: Vec<Option<i64>>,
    overlap: Vec<String>,
    paused: Vec<bool>,
    key: Vec<Option<String>>,
    fingerprint: Vec<String>,
}

/// Inserts the triggers of several jobs in one statement; returns them per job id.
async fn insert_triggers(
    tx: &mut Tx,
    jobs: &[(&str, &JobSpec)],
    now: Timestamp,
) -> Result<HashMap<String, Vec<Trigger>>> {
    let mut out: HashMap<String, Vec<Trigger>> = HashMap::new();
    let (mut ids, mut job_ids, mut positions, mut specs, mut nexts, mut paused) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (job_id, spec) in jobs {
        for (pos, t) in spec.triggers.iter().enumerate() {
            let id = new_id();
            let next = crate::schedule::first_fire(t, now);
            ids.push(id.clone());
            job_ids.push(job_id.to_string());
            positions.push(pos as i64);
            specs.push(trigger_spec_json(t));
            nexts.push(next.map(us));
            paused.push(spec.paused);
            out.entry(job_id.to_string()).or_default().push(Trigger {
                id,
                spec: t.clone(),
                next_fire_at: next,
                fires: 0,
            });
        }
    }
    if ids.is_empty() {
        return Ok(out);
    }
    sqlx::query(
        "INSERT INTO triggers (id, job_id, position, spec, next_fire_at, fires, paused) \
         SELECT u.id, u.job_id, u.position, u.spec, u.next_fire_at, 0, u.paused \
         FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::int8[], $6::bool[]) \
         AS u(id, job_id, position, spec, next_fire_at, paused)",
    )
    .bind(ids)
    .bind(job_ids)
    .bind(positions)
    .bind(specs)
    .bind(nexts)
    .bind(paused)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Transaction-scoped helpers shared by several trait methods.

#[derive(Default)]
struct RunCols {
    id: Vec<String>,
    job_id: Vec<String>,
    trigger_id: Vec<Option<String>>,
    fire_time: Vec<i64>,
    namespace: Vec<String>,
    handler: Vec<String>,
    payload: Vec<String>,
    priority: Vec<i64>,
    timeout_us: Vec<Option<i64>>,
    max_attempts: Vec<i64>,
    initial_delay_us: Vec<i64>,
    max_delay_us: Vec<i64>,
    overlap: Vec<String>,
    scheduled_for: Vec<i64>,
    state: Vec<String>,
    reason: Vec<Option<String>>,
    finished_at: Vec<Option<i64>>,
    manual: Vec<bool>,
    held: Vec<bool>,
    blocked: Vec<bool>,
    created_at: Vec<i64>,
}

/// Inserts runs in one statement; a run whose `(trigger_id, fire_time)` exists is left out.
/// Returns how many were inserted.
async fn insert_runs<'a>(tx: &mut Tx, runs: impl IntoIterator<Item = &'a NewRun>) -> Result<u64> {
    let mut c = RunCols::default();
    for r in runs {
        c.id.push(r.id.clone());
        c.job_id.push(r.job.id.clone());
        c.trigger_id.push(r.trigger_id.clone());
        c.fire_time.push(r.fire_time);
        c.namespace.push(r.job.namespace.clone());
        c.handler.push(r.job.handler.clone());
        c.payload.push(r.job.payload.clone());
        c.priority.push(r.job.priority);
        c.timeout_us.push(r.job.timeout_us);
        c.max_attempts.push(r.job.max_attempts);
        c.initial_delay_us.push(r.job.initial_delay_us);
        c.max_delay_us.push(r.job.max_delay_us);
        c.overlap.push(r.job.overlap.clone());
        c.scheduled_for.push(r.scheduled_for);
        c.state.push(r.state.as_str().to_string());
        c.reason.push(r.reason.clone());
        c.finished_at.push(r.finished_at());
        c.manual.push(r.manual);
        c.held.push(r.held);
        c.blocked.push(r.blocked);
        c.created_at.push(r.created_at);
    }
    if c.id.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO runs (id, job_id, trigger_id, fire_time, namespace, handler, payload, priority, timeout_us, \
         max_attempts, initial_delay_us, max_delay_us, overlap, scheduled_for, state, reason, finished_at, manual, \
         held, blocked, created_at) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[], \
         $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::text[], $14::int8[], $15::text[], \
         $16::text[], $17::int8[], $18::bool[], $19::bool[], $20::bool[], $21::int8[]) \
         ON CONFLICT (trigger_id, fire_time) DO NOTHING",
    )
    .bind(c.id)
    .bind(c.job_id)
    .bind(c.trigger_id)
    .bind(c.fire_time)
    .bind(c.namespace)
    .bind(c.handler)
    .bind(c.payload)
    .bind(c.priority)
    .bind(c.timeout_us)
    .bind(c.max_attempts)
    .bind(c.initial_delay_us)
    .bind(c.max_delay_us)
    .bind(c.overlap)
    .bind(c.scheduled_for)
    .bind(c.state)
    .bind(c.reason)
    .bind(c.finished_at)
    .bind(c.manual)
    .bind(c.held)
    .bind(c.blocked)
    .bind(c.created_at)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(done.rows_affected())
}

/// The active runs of several jobs, each job's oldest first.
async fn active_runs(tx: &mut Tx, job_ids: &[String]) -> Result<HashMap<String, ActiveRuns>> {
    let mut out: HashMap<String, ActiveRuns> = job_ids.iter().map(|id| (id.clone(), ActiveRuns::default())).collect();
    if job_ids.is_empty() {
        return Ok(out);
    }
    let rows: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT job_id, id, state, blocked FROM runs WHERE job_id = ANY($1) AND state IN ('pending', 'running') \
         ORDER BY scheduled_for, id",
    )
    .bind(job_ids)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)?;
    for (job_id, id, state, blocked) in rows {
        let a = out.entry(job_id).or_default();
        match (state.as_str(), blocked) {
            ("running", _) => a.running.push(id),
            (_, true) => a.blocked.push(id),
            _ => a.pending.push(id),
        }
    }
    Ok(out)
}

/// Cancels pending runs, each with its reason.
async fn cancel_pending(tx: &mut Tx, runs: &[(String, String)], now: i64) -> Result<u64> {
    if runs.is_empty() {
        return Ok(0);
    }
    let (ids, reasons): (Vec<String>, Vec<String>) = runs.iter().cloned().unzip();
    let done = sqlx::query(
        "UPDATE runs SET state = 'cancelled', reason = u.reason, finished_at = $3 \
         FROM UNNEST($1::text[], $2::text[]) AS u(run_id, reason) WHERE runs.id = u.run_id AND runs.state = 'pending'",
    )
    .bind(ids)
    .bind(reasons)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(done.rows_affected())
}

async fn request_cancel(tx: &mut Tx, run_ids: &[String]) -> Result<()> {
    if run_ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE runs SET cancel_requested = TRUE WHERE id = ANY($1) AND state = 'running'")
        .bind(run_ids)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// `buffer_one`: when the job has nothing running or claimable left, its waiting run may go.
/// The caller holds the job's row lock, so a scheduler cannot add a blocked run unseen.
async fn unblock_next(tx: &mut Tx, job_id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE runs SET blocked = FALSE WHERE id = (SELECT id FROM runs WHERE job_id = $1 AND state = 'pending' \
         AND blocked ORDER BY scheduled_for, id LIMIT 1) AND NOT EXISTS (SELECT 1 FROM runs WHERE job_id = $1 \
         AND (state = 'running' OR (state = 'pending' AND NOT blocked)))",
    )
    .bind(job_id)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Locks job rows (sorted by id, so concurrent lockers queue instead of deadlocking).
async fn lock_jobs(tx: &mut Tx, job_ids: &[String]) -> Result<()> {
    if job_ids.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT id FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(job_ids)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Locks a job's triggers (before its row: the lock order is triggers, jobs, runs).
async fn lock_triggers_of(tx: &mut Tx, job_id: &str) -> Result<()> {
    sqlx::query("SELECT id FROM triggers WHERE job_id = $1 ORDER BY id FOR UPDATE")
        .bind(job_id)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Inserts a run that is not from a trigger, applying the job's overlap policy. The caller
/// holds the job's row lock.
async fn insert_untriggered(tx: &mut Tx, mut run: NewRun, now: i64) -> Result<NewRun> {
    if run.job.overlap() != Overlap::Allow {
        let mut active =
            active_runs(tx, std::slice::from_ref(&run.job.id)).await?.remove(&run.job.id).unwrap_or_default();
        match decide(run.job.overlap(), &mut active, &run.id) {
            Decision::Pending { blocked } => run.blocked = blocked,
            Decision::Skipped(why) => {
                run.state = RunState::Skipped;
                run.reason = Some(why);
            }
            Decision::Supersede { cancel_pending: p, cancel_running } => {
                let reason = superseded_reason(&run.id);
                let p: Vec<(String, String)> = p.into_iter().map(|id| (id, reason.clone())).collect();
                cancel_pending(tx, &p, now).await?;
                request_cancel(tx, &cancel_running).await?;
            }
        }
    }
    insert_runs(tx, [&run]).await?;
    Ok(run)
}

/// An attempt to settle.
struct Settle<'a> {
    row: RunRow,
    ended: Ended,
    output: Option<&'a serde_json::Value>,
    error: Option<&'a str>,
}

/// Applies settlements to running runs in one statement, each fenced by `(worker_id,
/// attempt)`; a retry of a paused job's run is held until resume. Then lets `buffer_one` jobs'
/// waiting runs go. The caller holds the row locks of the runs and of the jobs that
/// [`must_lock_job`] names. Returns the updated rows by id.
async fn settle_rows(tx: &mut Tx, items: &[Settle<'_>], now: Timestamp) -> Result<HashMap<String, RunRow>> {
    if items.is_empty() {
        return Ok(HashMap::new());
    }
    let n = items.len();
    let (mut ids, mut states, mut retry_at, mut finished) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut outputs, mut errors, mut reasons, mut workers, mut attempts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for it in items {
        let row = &it.row;
        let info =
            AttemptInfo { attempt: row.attempt as u32, retry: row.retry(), cancel_requested: row.cancel_requested };
        let s = settle(info, it.ended, it.error, now);
        ids.push(row.id.clone());
        states.push(s.state.as_str().to_string());
        retry_at.push(s.retry_at.map(us));
        finished.push(s.state.is_finished().then_some(us(now)));
        outputs.push(it.output.map(|o| o.to_string()));
        errors.push(it.error.map(str::to_string));
        reasons.push(s.reason);
        workers.push(row.worker_id.clone());
        attempts.push(row.attempt);
    }
    let rows: Vec<RunRow> = sqlx::query_as(&format!(
        "UPDATE runs SET state = u_state, scheduled_for = COALESCE(u_retry_at, scheduled_for), \
         finished_at = u_finished, ended_at = $1, output = COALESCE(u_output, output), \
         error = COALESCE(u_error, error), reason = u_reason, lease_expires_at = NULL, \
         held = CASE WHEN u_state = 'pending' THEN NOT manual AND COALESCE((SELECT j.paused FROM jobs j \
           WHERE j.id = runs.job_id), FALSE) ELSE held END \
         FROM UNNEST($2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[], $7::text[], $8::text[], \
         $9::text[], $10::int8[]) AS u(u_id, u_state, u_retry_at, u_finished, u_output, u_error, u_reason, \
         u_worker, u_attempt) \
         WHERE id = u_id AND worker_id = u_worker AND attempt = u_attempt AND state = 'running' \
         RETURNING {RUN_COLUMNS}"
    ))
    .bind(us(now))
    .bind(ids)
    .bind(states)
    .bind(retry_at)
    .bind(finished)
    .bind(outputs)
    .bind(errors)
    .bind(reasons)
    .bind(workers)
    .bind(attempts)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)?;
    let mut unblock: Vec<&str> =
        rows.iter().filter(|r| r.overlap == Overlap::BufferOne.as_str()).map(|r| r.job_id.as_str()).collect();
    unblock.sort_unstable();
    unblock.dedup();
    for job_id in unblock {
        unblock_next(tx, job_id).await?;
    }
    Ok(rows.into_iter().map(|r| (r.id.clone(), r)).collect())
}

/// Whether settling a run reads or writes its job's state, so the job's row must be locked
/// first: a `buffer_one` job's waiting run is released, and a retry reads `paused` (a
/// concurrent pause must not miss the run going back to `pending`).
fn must_lock_job(overlap: &str, attempt: i64, max_attempts: i64, may_retry: bool) -> bool {
    overlap == Overlap::BufferOne.as_str() || (may_retry && attempt < max_attempts)
}

/// Whether an attempt that ended so may go back to `pending`.
fn may_retry(ended: Ended) -> bool {
    !matches!(ended, Ended::Reported(RunState::Succeeded | RunState::Cancelled))
}

fn sorted_unique(mut v: Vec<String>) -> Vec<String> {
    v.sort_unstable();
    v.dedup();
    v
}

/// For a transaction that already holds run locks (the reaper): locks the jobs of `rows` that
/// [`must_lock_job`] names, without waiting, and drops the rows whose job is locked elsewhere
/// (they are picked again on the next pass). Never waiting here keeps the lock order
/// deadlock-free.
async fn lock_jobs_or_skip(tx: &mut Tx, rows: &mut Vec<RunRow>, ended: Ended) -> Result<()> {
    let needs = |r: &RunRow| must_lock_job(&r.overlap, r.attempt, r.max_attempts, may_retry(ended));
    let jobs = sorted_unique(rows.iter().filter(|r| needs(r)).map(|r| r.job_id.clone()).collect());
    if jobs.is_empty() {
        return Ok(());
    }
    let locked: Vec<String> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED")
            .bind(&jobs)
            .fetch_all(&mut **tx)
            .await
            .map_err(db_err)?;
    if locked.len() == jobs.len() {
        return Ok(());
    }
    let existing: Vec<String> = sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1)")
        .bind(&jobs)
        .fetch_all(&mut **tx)
        .await
        .map_err(db_err)?;
    let busy: HashSet<String> = existing.into_iter().filter(|id| !locked.contains(id)).collect();
    rows.retain(|r| !(needs(r) && busy.contains(&r.job_id)));
    Ok(())
}

async fn run_row(tx: &mut Tx, id: &str, lock: bool) -> Result<Option<RunRow>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1{lock}"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err)
}

/// A claim or heartbeat is a sign of life: a dead worker comes back `active`. Draining
/// (deregistered) and unknown workers get `NotFound`.
async fn touch_worker(tx: &mut Tx, id: &str, now: Timestamp) -> Result<Vec<String>> {
    let row: Option<(String,)> = sqlx::query_as(
        "UPDATE workers SET last_heartbeat = $1, state = 'active' WHERE id = $2 AND state <> 'draining' \
         RETURNING handlers",
    )
    .bind(us(now))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_err)?;
    let (handlers,) = row.ok_or_else(|| StoreError::NotFound(format!("worker {id}")))?;
    serde_json::from_str(&handlers).map_err(|e| StoreError::Internal(e.to_string()))
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn wakeups(&self) -> Result<Option<Box<dyn Wakeups>>> {
        Ok(Some(Box::new(self.listen_runs_ready().await?)))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { multi_node: true }
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }

    async fn job_create_many(&self, jobs: Vec<JobCreate>, now: Timestamp) -> Result<Vec<Result<JobCreated>>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut tries = 0;
        let staged = loop {
            tries += 1;
            match self.create_batch(&jobs, now).await {
                Err(e) if is_retryable(&e) && tries < 4 => continue,
                other => break other?,
            }
        };
        // Replays are read back after the commit (they were committed earlier).
        let mut replays: Vec<String> =
            staged.iter().filter_map(|s| if let Staged::Replay(id) = s { Some(id.clone()) } else { None }).collect();
        replays.sort_unstable();
        replays.dedup();
        let found = self.jobs_by_id(&replays, now).await?;
        Ok(staged
            .into_iter()
            .map(|s| match s {
                Staged::Created(job) => Ok(JobCreated { job: *job, created: true }),
                Staged::Replay(id) => match found.get(&id) {
                    Some(job) => Ok(JobCreated { job: job.clone(), created: false }),
                    None => Err(StoreError::NotFound(format!("job {id}"))),
                },
                Staged::Failed(ConflictKind::Idempotency, message) => {
                    Err(StoreError::Conflict { code: "idempotency_conflict", message })
                }
                Staged::Failed(ConflictKind::Name, message) => {
                    Err(StoreError::Conflict { code: "name_conflict", message })
                }
            })
            .collect())
    }

    async fn job_get(&self, id: &str, now: Timestamp) -> Result<Job> {
        let row: Option<JobRow> = sqlx::query_as(&format!("{JOB_SELECT} WHERE j.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        let row = row.ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        Ok(self.jobs_from_rows(vec![row], now).await?.remove(0))
    }

    async fn job_list(&self, f: &JobFilter, now: Timestamp) -> Result<Page<Job>> {
        let mut q = super::listing::job_query::<Postgres>(f)?;
        let mut rows: Vec<JobRow> = q.build_query_as().fetch_all(&self.pool).await.map_err(db_err)?;
        let next_cursor = super::listing::split_page(&mut rows, f.limit, |r| (r.created_at, r.id.as_str()));
        Ok(Page { items: self.jobs_from_rows(rows, now).await?, next_cursor })
    }

    async fn job_update(&self, id: &str, spec: JobSpec, now: Timestamp) -> Result<Job> {
        let mut tx = self.begin().await?;
        lock_triggers_of(&mut tx, id).await?;
        let current: Option<(String, bool)> = sqlx::query_as("SELECT name, paused FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let (old_name, was_paused) = current.ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        let name = spec.name.clone().unwrap_or(old_name);
        let taken: Option<(String,)> =
            sqlx::query_as("SELECT id FROM jobs WHERE namespace = $1 AND name = $2 AND id <> $3")
                .bind(&spec.namespace)
                .bind(&name)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        if taken.is_some() {
            return Err(StoreError::Conflict {
                code: "name_conflict",
                message: format!("name: {name:?} is taken in namespace {:?}", spec.namespace),
            });
        }
        let snap = JobSnapshot::from_spec(id, &spec);
        sqlx::query(
            "UPDATE jobs SET namespace = $1, name = $2, handler = $3, payload = $4, priority = $5, \
             max_attempts = $6, initial_delay_us = $7, max_delay_us = $8, timeout_us = $9, overlap = $10, \
             paused = $11, idempotency_key = $12, fingerprint = $13, updated_at = $14 WHERE id = $15",
        )
        .bind(&spec.namespace)
        .bind(&name)
        .bind(&snap.handler)
        .bind(&snap.payload)
        .bind(snap.priority)
        .bind(snap.max_attempts)
        .bind(snap.initial_delay_us)
        .bind(snap.max_delay_us)
        .bind(snap.timeout_us)
        .bind(&snap.overlap)
        .bind(spec.paused)
        .bind(&spec.idempotency_key)
        .bind(spec.fingerprint())
        .bind(us(now))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("DELETE FROM triggers WHERE job_id = $1").bind(id).execute(&mut *tx).await.map_err(db_err)?;
        insert_triggers(&mut tx, &[(id, &spec)], now).await?;
        if was_paused != spec.paused {
            sqlx::query("UPDATE runs SET held = $1 WHERE job_id = $2 AND state = 'pending' AND NOT manual")
                .bind(spec.paused)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        self.job_get(id, now).await
    }

    async fn job_delete(&self, id: &str, now: Timestamp) -> Result<()> {
        let mut tx = self.begin().await?;
        lock_triggers_of(&mut tx, id).await?;
        let done = sqlx::query("DELETE FROM jobs WHERE id = $1").bind(id).execute(&mut *tx).await.map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("job {id}")));
        }
        sqlx::query("DELETE FROM triggers WHERE job_id = $1").bind(id).execute(&mut *tx).await.map_err(db_err)?;
        sqlx::query(
            "UPDATE runs SET state = 'cancelled', reason = 'job deleted', finished_at = $1 \
             WHERE job_id = $2 AND state = 'pending'",
        )
        .bind(us(now))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn job_set_paused(&self, id: &str, paused: bool, now: Timestamp) -> Result<Job> {
        let mut tx = self.begin().await?;
        lock_triggers_of(&mut tx, id).await?;
        let done = sqlx::query("UPDATE jobs SET paused = $1, updated_at = $2 WHERE id = $3")
            .bind(paused)
            .bind(us(now))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("job {id}")));
        }
        sqlx::query("UPDATE triggers SET paused = $1 WHERE job_id = $2")
            .bind(paused)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        // Manual runs of a paused job still run; everything else waits for resume.
        sqlx::query("UPDATE runs SET held = $1 WHERE job_id = $2 AND state = 'pending' AND NOT manual")
            .bind(paused)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if !paused {
            self.notify_ready(&mut tx).await?;
        }
        tx.commit().await.map_err(db_err)?;
        self.job_get(id, now).await
    }

    async fn job_run_now(&self, id: &str, now: Timestamp) -> Result<Run> {
        let mut tx = self.begin().await?;
        // The row lock serialises this overlap decision with the schedulers'.
        let snap: Option<JobSnapshot> =
            sqlx::query_as(&format!("SELECT {JOB_SNAPSHOT_COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE"))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        let snap = snap.ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        let run = insert_untriggered(&mut tx, NewRun::untriggered(snap, now, false, true), us(now)).await?;
        if run.state == RunState::Pending && !run.blocked {
            self.notify_ready(&mut tx).await?;
        }
        let row = run_row(&mut tx, &run.id, false).await?.ok_or_else(|| StoreError::Internal("run vanished".into()))?;
        tx.commit().await.map_err(db_err)?;
        row.into_run()
    }

    async fn trigger_fire_due(&self, now: Timestamp, limit: u32, misfire_threshold: Duration) -> Result<FireReport> {
        let mut tx = self.begin().await?;
        // Other nodes' schedulers take other due triggers; none waits for another.
        let triggers: Vec<TriggerRow> = sqlx::query_as(&format!(
            "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE NOT paused AND next_fire_at IS NOT NULL \
             AND next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        ))
        .bind(us(now))
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        if triggers.is_empty() {
            return Ok(FireReport::default());
        }
        let mut job_ids: Vec<String> = triggers.iter().map(|t| t.job_id.clone()).collect();
        job_ids.sort_unstable();
        job_ids.dedup();
        // Jobs with an overlap policy: lock their rows (sorted), so overlap decisions for one job
        // are serial across nodes, and read their active runs after the lock.
        let mut snaps: Vec<JobSnapshot> = sqlx::query_as(&format!(
            "SELECT {JOB_SNAPSHOT_COLUMNS} FROM jobs WHERE id = ANY($1) AND overlap <> 'allow' ORDER BY id FOR UPDATE"
        ))
        .bind(&job_ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        let locked: Vec<String> = snaps.iter().map(|s| s.id.clone()).collect();
        let allow: Vec<JobSnapshot> = sqlx::query_as(&format!(
            "SELECT {JOB_SNAPSHOT_COLUMNS} FROM jobs WHERE id = ANY($1) AND overlap = 'allow'"
        ))
        .bind(&job_ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        snaps.extend(allow);
        let mut active = active_runs(&mut tx, &locked).await?;
        let jobs: HashMap<String, JobSnapshot> = snaps.into_iter().map(|s| (s.id.clone(), s)).collect();
        let actions = fire_actions(&triggers, &jobs, &mut active, now, misfire_threshold)?;
        if !actions.advances.is_empty() {
            let (mut ids, mut old, mut new, mut added) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for a in &actions.advances {
                ids.push(a.id.clone());
                old.push(a.old_next);
                new.push(a.new_next);
                added.push(a.fires_added);
            }
            let advanced: Vec<String> = sqlx::query_scalar(
                "UPDATE triggers SET next_fire_at = u.new_next, fires = fires + u.added \
                 FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[]) AS u(trigger_id, old_next, new_next, added) \
                 WHERE triggers.id = u.trigger_id AND triggers.next_fire_at = u.old_next RETURNING triggers.id",
            )
            .bind(ids)
            .bind(old)
            .bind(new)
            .bind(added)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
            // A trigger another scheduler advanced first: its runs are that scheduler's to create.
            let advanced: HashSet<String> = advanced.into_iter().collect();
            insert_runs(
                &mut tx,
                actions.inserts.iter().filter(|r| r.trigger_id.as_ref().is_some_and(|t| advanced.contains(t))),
            )
            .await?;
        }
        cancel_pending(&mut tx, &actions.cancel_pending, us(now)).await?;
        request_cancel(&mut tx, &actions.cancel_running).await?;
        if actions.inserts.iter().any(|r| r.state == RunState::Pending && !r.blocked) {
            self.notify_ready(&mut tx).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(actions.report())
    }

    async fn trigger_next_due(&self) -> Result<Option<Timestamp>> {
        let next: Option<i64> =
            sqlx::query_scalar("SELECT MIN(next_fire_at) FROM triggers WHERE NOT paused AND next_fire_at IS NOT NULL")
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(next.map(ts))
    }

    async fn run_get(&self, id: &str) -> Result<Run> {
        let row: Option<RunRow> = sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.ok_or_else(|| StoreError::NotFound(format!("run {id}")))?.into_run()
    }

    async fn run_list(&self, f: &RunFilter) -> Result<Page<Run>> {
        let mut q = super::listing::run_query::<Postgres>(f)?;
        let mut rows: Vec<RunRow> = q.build_query_as().fetch_all(&self.pool).await.map_err(db_err)?;
        let next_cursor = super::listing::split_page(&mut rows, f.limit, |r| (r.scheduled_for, r.id.as_str()));
        Ok(Page { items: rows.into_iter().map(RunRow::into_run).collect::<Result<_>>()?, next_cursor })
    }

    async fn run_cancel(&self, id: &str, now: Timestamp) -> Result<Run> {
        let mut tx = self.begin().await?;
        let peek = run_row(&mut tx, id, false).await?.ok_or_else(|| StoreError::NotFound(format!("run {id}")))?;
        if peek.overlap == Overlap::BufferOne.as_str() {
            // Job before run: the lock order every transaction keeps.
            lock_jobs(&mut tx, std::slice::from_ref(&peek.job_id)).await?;
        }
        let row = run_row(&mut tx, id, true).await?.ok_or_else(|| StoreError::NotFound(format!("run {id}")))?;
        match row.state()? {
            RunState::Pending => {
                cancel_pending(&mut tx, &[(id.to_string(), "cancelled by request".to_string())], us(now)).await?;
                if row.overlap == Overlap::BufferOne.as_str() {
                    unblock_next(&mut tx, &row.job_id).await?;
                }
            }
            RunState::Running => request_cancel(&mut tx, &[id.to_string()]).await?,
            _ => return Err(StoreError::AlreadyFinished(id.to_string())),
        }
        let row = run_row(&mut tx, id, false).await?.ok_or_else(|| StoreError::NotFound(format!("run {id}")))?;
        tx.commit().await.map_err(db_err)?;
        row.into_run()
    }

    async fn run_claim(&self, p: &ClaimParams) -> Result<Vec<ClaimedRun>> {
        let mut tx = self.begin().await?;
        let handlers = touch_worker(&mut tx, &p.worker_id, p.now).await?;
        let rows: Vec<RunRow> = if p.max == 0 || handlers.is_empty() {
            Vec::new()
        } else {
            // Concurrent claimers (other nodes, other workers) skip each other's rows.
            sqlx::query_as(&format!(
                "UPDATE runs SET state = 'running', attempt = attempt + 1, worker_id = $1, lease_expires_at = $2, \
                 started_at = $3, reason = NULL WHERE id IN (SELECT id FROM runs WHERE state = 'pending' \
                 AND NOT held AND NOT blocked AND scheduled_for <= $3 AND handler = ANY($4) \
                 ORDER BY priority DESC, scheduled_for, id LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING {RUN_COLUMNS}"
            ))
            .bind(&p.worker_id)
            .bind(us(p.now) + dur_us(p.lease))
            .bind(us(p.now))
            .bind(&handlers)
            .bind(p.max as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
        };
        tx.commit().await.map_err(db_err)?;
        let mut claimed: Vec<ClaimedRun> = rows.into_iter().map(RunRow::into_claimed).collect::<Result<_>>()?;
        claimed.sort_by_key(|c| c.scheduled_for);
        Ok(claimed)
    }

    async fn run_heartbeat(
        &self,
        worker_id: &str,
        runs: &[(String, u32)],
        lease: Duration,
        now: Timestamp,
    ) -> Result<HeartbeatOutcome> {
        let mut tx = self.begin().await?;
        touch_worker(&mut tx, worker_id, now).await?;
        let expires = us(now) + dur_us(lease);
        let mut out = HeartbeatOutcome { lease_expires_at: Some(ts(expires)), ..Default::default() };
        if !runs.is_empty() {
            // One statement, driven by an index (the primary key, or this worker's running runs);
            // the attempt is fenced with a filter on `id:attempt` rather than a join with the
            // list, as a join of two large inputs is one bad row estimate away from quadratic.
            // Sorted ids: an index scan locks the rows in id order, as completions do.
            let keys: Vec<String> = runs.iter().map(|(id, a)| format!("{id}:{a}")).collect();
            let held: Vec<(String, i64, bool)> = sqlx::query_as(
                "UPDATE runs SET lease_expires_at = $1 WHERE id = ANY($2) AND worker_id = $3 AND state = 'running' \
                 AND id || ':' || attempt = ANY($4) RETURNING id, attempt, cancel_requested",
            )
            .bind(expires)
            .bind(sorted_unique(runs.iter().map(|(id, _)| id.clone()).collect()))
            .bind(worker_id)
            .bind(keys)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
            let held: HashMap<(String, i64), bool> = held.into_iter().map(|(id, a, c)| ((id, a), c)).collect();
            for (run_id, attempt) in runs {
                match held.get(&(run_id.clone(), *attempt as i64)) {
                    None => out.lost.push(run_id.clone()),
                    Some(true) => out.cancel.push(run_id.clone()),
                    Some(false) => {}
                }
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    async fn run_complete_many(&self, completions: Vec<Completion>, now: Timestamp) -> Result<Vec<Result<Run>>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<String> = completions.iter().map(|c| c.run_id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut tx = self.begin().await?;
        // Lock order: the jobs settling reads or writes (see `must_lock_job`) first, then the
        // runs, sorted by id.
        let peek: Vec<(String, String, String, i64, i64)> =
            sqlx::query_as("SELECT id, job_id, overlap, attempt, max_attempts FROM runs WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
        let retrying: HashSet<&str> =
            completions.iter().filter(|c| may_retry(Ended::Reported(c.state))).map(|c| c.run_id.as_str()).collect();
        let jobs = peek
            .iter()
            .filter(|(id, _, overlap, attempt, max)| {
                must_lock_job(overlap, *attempt, *max, retrying.contains(id.as_str()))
            })
            .map(|(_, job, ..)| job.clone())
            .collect();
        lock_jobs(&mut tx, &sorted_unique(jobs)).await?;
        let rows: Vec<RunRow> =
            sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY($1) ORDER BY id FOR UPDATE"))
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
        let mut rows: HashMap<String, RunRow> = rows.into_iter().map(|r| (r.id.clone(), r)).collect();
        let mut out: Vec<Option<Result<Run>>> = Vec::with_capacity(completions.len());
        let mut settles = Vec::new();
        let mut settled_at: Vec<(usize, String)> = Vec::new();
        for (i, c) in completions.iter().enumerate() {
            let Some(row) = rows.get(&c.run_id) else {
                out.push(Some(Err(StoreError::NotFound(format!("run {}", c.run_id)))));
                continue;
            };
            let held = row.state == "running"
                && row.worker_id.as_deref() == Some(c.worker_id.as_str())
                && row.attempt == c.attempt as i64;
            if !held {
                out.push(Some(Err(StoreError::StaleAttempt(c.run_id.clone()))));
                continue;
            }
            // Settled once: a repeat in this batch finds it no longer running, as on SQLite.
            let row = rows.remove(&c.run_id).expect("present");
            let mut after = row.clone();
            after.state = "settled".into();
            rows.insert(c.run_id.clone(), after);
            settles.push(Settle {
                row,
                ended: Ended::Reported(c.state),
                output: c.output.as_ref(),
                error: c.error.as_deref(),
            });
            settled_at.push((i, c.run_id.clone()));
            out.push(None);
        }
        let mut updated = settle_rows(&mut tx, &settles, now).await?;
        for (i, id) in settled_at {
            out[i] = Some(match updated.remove(&id) {
                Some(r) => r.into_run(),
                None => Err(StoreError::StaleAttempt(id)),
            });
        }
        tx.commit().await.map_err(db_err)?;
        Ok(out.into_iter().map(|o| o.expect("every completion answered")).collect())
    }

    async fn run_reap(&self, p: &ReapParams) -> Result<ReapReport> {
        let mut tx = self.begin().await?;
        let now = us(p.now);
        let mut report = ReapReport::default();
        // Every pick skips rows another node's reaper holds.
        let dead: Vec<(String,)> = sqlx::query_as(
            "UPDATE workers SET state = 'dead' WHERE id IN (SELECT id FROM workers WHERE state = 'active' \
             AND last_heartbeat < $1 FOR UPDATE SKIP LOCKED) RETURNING id",
        )
        .bind(now - dur_us(p.dead_after))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        report.workers_dead = dead.len() as u64;
        // A deregistered worker that holds nothing any more is forgotten.
        sqlx::query(
            "DELETE FROM workers WHERE id IN (SELECT w.id FROM workers w WHERE w.state = 'draining' \
             AND w.last_heartbeat < $1 AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.worker_id = w.id \
             AND r.state = 'running') FOR UPDATE SKIP LOCKED)",
        )
        .bind(now - dur_us(p.dead_after))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let mut expired: Vec<RunRow> = sqlx::query_as(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state = 'running' AND (lease_expires_at < $1 OR worker_id IN \
             (SELECT id FROM workers WHERE state = 'dead')) ORDER BY lease_expires_at LIMIT $2 \
             FOR UPDATE OF runs SKIP LOCKED"
        ))
        .bind(now)
        .bind(p.limit as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        lock_jobs_or_skip(&mut tx, &mut expired, Ended::LeaseExpired).await?;
        let order: Vec<String> = expired.iter().map(|r| r.id.clone()).collect();
        let items: Vec<Settle> = expired
            .into_iter()
            .map(|row| Settle { row, ended: Ended::LeaseExpired, output: None, error: None })
            .collect();
        let mut done = settle_rows(&mut tx, &items, p.now).await?;
        for id in order {
            if let Some(r) = done.remove(&id) {
                report.expired.push((r.id.clone(), r.state()?));
            }
        }
        let mut overrun: Vec<RunRow> = sqlx::query_as(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state = 'running' AND timeout_us IS NOT NULL \
             AND started_at + timeout_us + $1 < $2 LIMIT $3 FOR UPDATE SKIP LOCKED"
        ))
        .bind(dur_us(p.timeout_grace))
        .bind(now)
        .bind(p.limit as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        lock_jobs_or_skip(&mut tx, &mut overrun, Ended::TimeoutOverrun).await?;
        let order: Vec<String> = overrun.iter().map(|r| r.id.clone()).collect();
        let items: Vec<Settle> = overrun
            .into_iter()
            .map(|row| Settle { row, ended: Ended::TimeoutOverrun, output: None, error: None })
            .collect();
        let mut done = settle_rows(&mut tx, &items, p.now).await?;
        for id in order {
            if let Some(r) = done.remove(&id) {
                report.timed_out.push((r.id.clone(), r.state()?));
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(report)
    }

    async fn run_next_pending(&self) -> Result<Option<Timestamp>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(scheduled_for) FROM runs WHERE state = 'pending' AND NOT held AND NOT blocked",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(next.map(ts))
    }

    async fn run_prune(&self, before: Timestamp, limit: u32) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1 \
             LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(us(before))
        .bind(limit as i64)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn worker_register(&self, name: &str, handlers: &[String], capacity: u32, now: Timestamp) -> Result<Worker> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO workers (id, name, handlers, capacity, last_heartbeat, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'active', $5)",
        )
        .bind(&id)
        .bind(name)
        .bind(serde_json::to_string(handlers).expect("handlers serialize"))
        .bind(capacity as i64)
        .bind(us(now))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        self.worker_get(&id).await
    }

    async fn worker_get(&self, id: &str) -> Result<Worker> {
        let row: Option<WorkerRow> = sqlx::query_as(&format!("{WORKER_SELECT} WHERE w.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.ok_or_else(|| StoreError::NotFound(format!("worker {id}")))?.into_worker()
    }

    async fn worker_list(&self) -> Result<Vec<Worker>> {
        let rows: Vec<WorkerRow> = sqlx::query_as(&format!("{WORKER_SELECT} ORDER BY w.created_at DESC, w.id DESC"))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.into_iter().map(WorkerRow::into_worker).collect()
    }

    async fn worker_deregister(&self, id: &str, now: Timestamp) -> Result<()> {
        let done = sqlx::query("UPDATE workers SET state = 'draining', last_heartbeat = $1 WHERE id = $2")
            .bind(us(now))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("worker {id}")));
        }
        Ok(())
    }

    async fn stats(&self, now: Timestamp) -> Result<Stats> {
        let by_state: Vec<(String, i64)> = sqlx::query_as("SELECT state, COUNT(*) FROM runs GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let (due, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(scheduled_for) FROM runs WHERE state = 'pending' AND NOT held AND NOT blocked \
             AND scheduled_for <= $1",
        )
        .bind(us(now))
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs").fetch_one(&self.pool).await.map_err(db_err)?;
        let triggers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM triggers WHERE next_fire_at IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        let workers: Vec<(String, i64)> = sqlx::query_as("SELECT state, COUNT(*) FROM workers GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(Stats {
            runs_by_state: by_state.into_iter().filter_map(|(s, n)| Some((RunState::parse(&s)?, n as u64))).collect(),
            runs_due: due as u64,
            oldest_due_wait_s: oldest.map(|o| (us(now) - o) as f64 / 1e6).unwrap_or(0.0),
            jobs: jobs as u64,
            triggers_active: triggers as u64,
            workers_by_state: workers
                .into_iter()
                .filter_map(|(s, n)| Some((crate::domain::WorkerState::parse(&s)?, n as u64)))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parameter_is_taken_out_of_the_url() {
        assert_eq!(split_schema("postgres://h/db"), ("postgres://h/db".into(), None));
        assert_eq!(split_schema("postgres://h/db?schema=s1"), ("postgres://h/db".into(), Some("s1".into())));
        assert_eq!(
            split_schema("postgres://h/db?sslmode=disable&schema=s1&application_name=x"),
            ("postgres://h/db?sslmode=disable&application_name=x".into(), Some("s1".into()))
        );
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(valid_schema("t_0192abc"));
        assert!(valid_schema("_x"));
        assert!(!valid_schema("1x"));
        assert!(!valid_schema("a b"));
        assert!(!valid_schema("A"));
        assert!(!valid_schema("a;drop"));
        assert!(!valid_schema(""));
    }
}
