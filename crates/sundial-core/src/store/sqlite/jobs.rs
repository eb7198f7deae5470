//! SQLite: job definitions (submissions with their idempotency and name decisions, storing an
//! updated job's triggers, counting settled runs toward `pause_after_failures`). The other job
//! writes are `store_by_noun!`'s, from `store::writes`.

use super::*;

pub(super) async fn find_existing(
    tx: &mut Tx,
    namespace: &str,
    column: &str,
    value: &str,
) -> Result<Option<(String, String)>> {
    sqlx::query_as(&format!("SELECT id, fingerprint FROM jobs WHERE namespace = ? AND {column} = ?"))
        .bind(namespace)
        .bind(value)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err)
}

/// A new job staged for the batch's multi-row inserts.
pub(super) struct StagedJob {
    job: Job,
    snap: JobSnapshot,
    key: Option<String>,
}

/// What one submission of a batch turned out to be.
pub(super) enum Decided {
    /// Stored as `staged[i]`.
    New(usize),
    /// A replay of a job committed earlier.
    Existing(String),
    /// A replay of `staged[i]`, submitted earlier in this same batch.
    SameAsStaged(usize),
    /// Refused (conflict); the rest of the batch goes on.
    Refused(StoreError),
}

/// Decides one submission: a replay, a conflict, or a new job to stage. Earlier items of the
/// same batch count as taken, exactly as committed jobs do.
pub(super) async fn decide_one(
    tx: &mut Tx,
    c: JobCreate,
    now: Timestamp,
    staged: &mut Vec<StagedJob>,
    taken: &mut HashMap<(String, String, String), usize>,
) -> Result<Decided> {
    let spec = c.spec;
    let key = spec.idempotency_key.clone().or(c.derived_idempotency_key);
    let fingerprint = crate::store::plan::stored_fingerprint(&spec, key.as_deref());
    let lookups = [("idempotency_key", key.clone()), ("name", spec.name.clone())];
    for (column, value) in &lookups {
        let Some(value) = value else { continue };
        let existing = match taken.get(&(column.to_string(), spec.namespace.clone(), value.clone())) {
            Some(&i) => Some((None, Some(i), staged[i].job.fingerprint.clone())),
            None => find_existing(tx, &spec.namespace, column, value).await?.map(|(id, fp)| (Some(id), None, fp)),
        };
        let Some((id, staged_index, fp)) = existing else { continue };
        let holder = if *column == "idempotency_key" {
            Taken::Key(value)
        } else {
            Taken::Name { name: value, namespace: &spec.namespace }
        };
        if let Err(e) = submission_vs_existing(holder, spec.idempotency_key.is_some(), fp == fingerprint) {
            return Ok(Decided::Refused(e.into()));
        }
        return Ok(match (id, staged_index) {
            (Some(id), _) => Decided::Existing(id),
            (None, Some(i)) => Decided::SameAsStaged(i),
            (None, None) => unreachable!("an existing job has an id or a batch index"),
        });
    }
    let id = new_id();
    let name = spec.name.clone().unwrap_or_else(|| id.clone());
    let snap = JobSnapshot::from_spec(&id, &spec);
    let mut spec = spec;
    spec.idempotency_key = key.clone();
    // A trigger naming no stored calendar refuses this item only.
    let triggers = match new_triggers(tx, &spec, now).await {
        Ok(t) => t,
        Err(e @ StoreError::Invalid(_)) => return Ok(Decided::Refused(e)),
        Err(e) => return Err(e),
    };
    let job = fresh_job(&id, &name, &spec, triggers, now);
    let index = staged.len();
    for (column, value) in lookups {
        if let Some(v) = value {
            taken.insert((column.to_string(), spec.namespace.clone(), v), index);
        }
    }
    staged.push(StagedJob { job, snap, key });
    Ok(Decided::New(index))
}

/// Stores the staged jobs, their triggers and their due-now runs in multi-row statements.
pub(super) async fn insert_staged(tx: &mut Tx, staged: &[StagedJob], now: Timestamp) -> Result<()> {
    for chunk in staged.chunks(INSERT_CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO jobs (id, namespace, name, handler, payload, priority, max_attempts, initial_delay_us, \
             max_delay_us, timeout_us, overlap, paused, idempotency_key, fingerprint, limits, pause_after_failures, \
             created_at, updated_at) ",
        );
        q.push_values(chunk, |mut b, s| {
            b.push_bind(s.job.id.clone())
                .push_bind(s.job.namespace.clone())
                .push_bind(s.job.name.clone())
                .push_bind(s.snap.handler.clone())
                .push_bind(s.snap.payload.clone())
                .push_bind(s.snap.priority)
                .push_bind(s.snap.max_attempts)
                .push_bind(s.snap.initial_delay_us)
                .push_bind(s.snap.max_delay_us)
                .push_bind(s.snap.timeout_us)
                .push_bind(s.snap.overlap.clone())
                .push_bind(s.job.paused)
                .push_bind(s.key.clone())
                .push_bind(s.job.fingerprint.clone())
                .push_bind(s.snap.limits.clone())
                .push_bind(s.job.pause_after_failures.map(i64::from))
                .push_bind(us(now))
                .push_bind(us(now));
        });
        q.build().execute(&mut **tx).await.map_err(db_err)?;
    }
    let triggers: Vec<(&str, bool, usize, &Trigger)> = staged
        .iter()
        .flat_map(|s| s.job.triggers.iter().enumerate().map(|(pos, t)| (s.job.id.as_str(), s.job.paused, pos, t)))
        .collect();
    insert_triggers(tx, &triggers).await?;
    // No trigger: one run, due now (held until resume when created paused).
    let runs: Vec<NewRun> = staged
        .iter()
        .filter(|s| s.job.triggers.is_empty())
        .map(|s| NewRun::untriggered(s.snap.clone(), now, s.job.paused, false))
        .collect();
    insert_runs(tx, &runs.iter().collect::<Vec<_>>()).await?;
    Ok(())
}

/// [`Store::job_create_many`].
pub(super) async fn create_many(
    s: &SqliteStore,
    jobs: Vec<JobCreate>,
    now: Timestamp,
) -> Result<Vec<Result<JobCreated>>> {
    let mut tx = s.begin().await?;
    let mut staged = Vec::new();
    let mut taken = HashMap::new();
    let mut decided = Vec::with_capacity(jobs.len());
    for c in jobs {
        decided.push(decide_one(&mut tx, c, now, &mut staged, &mut taken).await?);
    }
    insert_staged(&mut tx, &staged, now).await?;
    tx.commit().await.map_err(db_err)?;
    // Replays of earlier commits are read back after this one.
    let mut out = Vec::with_capacity(decided.len());
    for d in decided {
        out.push(match d {
            Decided::New(i) => Ok(JobCreated { job: staged[i].job.clone(), created: true }),
            Decided::SameAsStaged(i) => Ok(JobCreated { job: staged[i].job.clone(), created: false }),
            Decided::Existing(id) => s.job_get(&id, now).await.map(|job| JobCreated { job, created: false }),
            Decided::Refused(e) => Err(e),
        });
    }
    Ok(out)
}

/// Stores a job's new triggers ([`Store::job_update`]).
pub(super) async fn store_triggers(tx: &mut Tx, id: &str, spec: &JobSpec, now: Timestamp) -> Result<()> {
    let triggers = new_triggers(tx, spec, now).await?;
    insert_triggers(tx, &triggers.iter().enumerate().map(|(pos, t)| (id, spec.paused, pos, t)).collect::<Vec<_>>())
        .await
}

/// Counts a settled run toward its job's `pause_after_failures` ([`streak_write`]), pausing the
/// job when the run completes the streak: in the transaction that settled the run.
pub(super) async fn count_settled(tx: &mut Tx, run: &RunRow, now: Timestamp) -> Result<()> {
    let state = run.state()?;
    if !state.is_finished() {
        return Ok(());
    }
    let job: Option<JobStreak> =
        sqlx::query_as("SELECT id, pause_after_failures, failure_streak, paused FROM jobs WHERE id = ?")
            .bind(&run.job_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_err)?;
    let Some(w) = job.and_then(|j| streak_write(&j, [state])) else {
        return Ok(());
    };
    sqlx::query(
        "UPDATE jobs SET failure_streak = ?1, paused = paused OR ?2 IS NOT NULL, \
         paused_reason = COALESCE(?2, paused_reason), updated_at = CASE WHEN ?2 IS NULL THEN updated_at ELSE ?3 END \
         WHERE id = ?4",
    )
    .bind(w.streak)
    .bind(&w.pause)
    .bind(us(now))
    .bind(&w.job_id)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    if w.pause.is_some() {
        Shared::hold_jobs(tx, std::slice::from_ref(&w.job_id), true).await?;
    }
    Ok(())
}
