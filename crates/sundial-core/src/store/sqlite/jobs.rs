//! SQLite: job definitions (submissions with their idempotency and name decisions, reads, updates,
//! pauses, deletes, manual runs).

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

/// [`Store::job_get`].
pub(super) async fn get(s: &SqliteStore, id: &str, now: Timestamp) -> Result<Job> {
    let row = s.reader(&s.read).job_row(id).await?;
    Ok(s.jobs_from_rows(vec![row], now).await?.remove(0))
}

/// [`Store::job_list`].
pub(super) async fn list(s: &SqliteStore, f: &JobFilter, now: Timestamp) -> Result<Page<Job>> {
    let mut q = crate::store::listing::job_query::<Sqlite>(f)?;
    let mut rows: Vec<JobRow> = q.build_query_as().fetch_all(&s.read).await.map_err(db_err)?;
    let next_cursor = crate::store::listing::split_page(&mut rows, f.limit, |r| (r.created_at, r.id.as_str()));
    Ok(Page { items: s.jobs_from_rows(rows, now).await?, next_cursor })
}

/// [`Store::job_update`].
pub(super) async fn update(s: &SqliteStore, id: &str, spec: JobSpec, now: Timestamp) -> Result<Job> {
    let mut tx = s.begin().await?;
    let current: Option<(String, bool)> = sqlx::query_as("SELECT name, paused FROM jobs WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
    let (old_name, was_paused) = current.ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
    let name = spec.name.clone().unwrap_or(old_name);
    let taken: Option<(String,)> = sqlx::query_as("SELECT id FROM jobs WHERE namespace = ? AND name = ? AND id != ?")
        .bind(&spec.namespace)
        .bind(&name)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
    if taken.is_some() {
        return Err(update_conflict(Taken::Name { name: &name, namespace: &spec.namespace }));
    }
    if let Some(key) = &spec.idempotency_key {
        let taken: Option<(String,)> =
            sqlx::query_as("SELECT id FROM jobs WHERE namespace = ? AND idempotency_key = ? AND id != ?")
                .bind(&spec.namespace)
                .bind(key)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        if taken.is_some() {
            return Err(update_conflict(Taken::Key(key)));
        }
    }
    let snap = JobSnapshot::from_spec(id, &spec);
    sqlx::query(
        "UPDATE jobs SET namespace = ?, name = ?, handler = ?, payload = ?, priority = ?, max_attempts = ?, \
         initial_delay_us = ?, max_delay_us = ?, timeout_us = ?, overlap = ?, paused = ?, idempotency_key = ?, \
         fingerprint = ?, updated_at = ?, limits = ?, pause_after_failures = ?, \
         paused_reason = CASE WHEN ? THEN paused_reason END, failure_streak = CASE WHEN ? THEN 0 ELSE failure_streak END \
         WHERE id = ?",
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
    .bind(&snap.limits)
    .bind(spec.pause_after_failures.map(i64::from))
    // A resume clears the server's reason and the count; so does dropping the threshold, as
    // the count is kept only while one is set.
    .bind(spec.paused)
    .bind((was_paused && !spec.paused) || spec.pause_after_failures.is_none())
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    sqlx::query("DELETE FROM triggers WHERE job_id = ?").bind(id).execute(&mut *tx).await.map_err(db_err)?;
    let triggers = new_triggers(&mut tx, &spec, now).await?;
    let rows: Vec<_> = triggers.iter().enumerate().map(|(pos, t)| (id, spec.paused, pos, t)).collect();
    insert_triggers(&mut tx, &rows).await?;
    if was_paused != spec.paused {
        sqlx::query("UPDATE runs SET held = ? WHERE job_id = ? AND state = 'pending' AND manual = 0")
            .bind(spec.paused)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)?;
    s.job_get(id, now).await
}

/// [`Store::job_delete`].
pub(super) async fn delete(s: &SqliteStore, id: &str, now: Timestamp) -> Result<()> {
    let mut tx = s.begin().await?;
    let done = sqlx::query("DELETE FROM jobs WHERE id = ?").bind(id).execute(&mut *tx).await.map_err(db_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("job {id}")));
    }
    sqlx::query("DELETE FROM triggers WHERE job_id = ?").bind(id).execute(&mut *tx).await.map_err(db_err)?;
    sqlx::query(&format!(
        "UPDATE runs SET state = 'cancelled', reason = {NOTE_THEN} 'job deleted', finished_at = ? \
         WHERE job_id = ? AND state = 'pending'"
    ))
    .bind(us(now))
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)
}

/// [`Store::job_set_paused`].
pub(super) async fn set_paused(s: &SqliteStore, id: &str, paused: bool, now: Timestamp) -> Result<Job> {
    let mut tx = s.begin().await?;
    // A resume clears the server's reason and resets the count of failed runs in a row.
    let done = sqlx::query(
        "UPDATE jobs SET paused = ?1, updated_at = ?2, paused_reason = CASE WHEN ?1 THEN paused_reason END, \
         failure_streak = CASE WHEN ?1 THEN failure_streak ELSE 0 END WHERE id = ?3",
    )
    .bind(paused)
    .bind(us(now))
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("job {id}")));
    }
    hold_job(&mut tx, id, paused).await?;
    tx.commit().await.map_err(db_err)?;
    s.job_get(id, now).await
}

/// [`Store::job_run_now`].
pub(super) async fn run_now(s: &SqliteStore, id: &str, now: Timestamp) -> Result<Run> {
    let mut tx = s.begin().await?;
    let snap: Option<JobSnapshot> = sqlx::query_as(&format!("SELECT {JOB_SNAPSHOT_COLUMNS} FROM jobs WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
    let snap = snap.ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
    let run = insert_untriggered(&mut tx, NewRun::untriggered(snap, now, false, true), us(now)).await?;
    let row = run_row(&mut tx, &run.id).await?.ok_or_else(|| StoreError::Internal("run vanished".into()))?;
    tx.commit().await.map_err(db_err)?;
    row.into_run()
}

/// Stops (or restarts) a paused (or resumed) job's triggers, and holds (or releases) its
/// pending runs. Manual runs of a paused job still run; everything else waits for resume.
async fn hold_job(tx: &mut Tx, id: &str, paused: bool) -> Result<()> {
    sqlx::query("UPDATE triggers SET paused = ? WHERE job_id = ?")
        .bind(paused)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    sqlx::query("UPDATE runs SET held = ? WHERE job_id = ? AND state = 'pending' AND manual = 0")
        .bind(paused)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
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
        hold_job(tx, &w.job_id, true).await?;
    }
    Ok(())
}
