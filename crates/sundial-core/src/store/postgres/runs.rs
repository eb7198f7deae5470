//! PostgreSQL: runs (batched inserts with overlap applied, reads, cancels, prunes, counts).

use super::*;

#[derive(Default)]
pub(super) struct RunCols {
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
    note: Vec<Option<String>>,
    finished_at: Vec<Option<i64>>,
    manual: Vec<bool>,
    held: Vec<bool>,
    blocked: Vec<bool>,
    created_at: Vec<i64>,
    limits: Vec<String>,
    fair_key: Vec<String>,
    turn: Vec<i64>,
}

/// Inserts runs in one statement; a run whose `(trigger_id, fire_time)` exists is left out.
/// Returns how many were inserted.
pub(super) async fn insert_runs<'a>(tx: &mut Tx, runs: impl IntoIterator<Item = &'a NewRun>) -> Result<u64> {
    let runs: Vec<&NewRun> = runs.into_iter().collect();
    let turns = limits::turns_for(tx, &runs).await?;
    let mut c = RunCols::default();
    for (r, (fair_key, turn)) in runs.into_iter().zip(turns) {
        c.limits.push(r.job.limits.clone());
        c.fair_key.push(fair_key);
        c.turn.push(turn);
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
        c.note.push(r.note.clone());
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
         max_attempts, initial_delay_us, max_delay_us, overlap, scheduled_for, state, reason, note, finished_at, \
         manual, held, blocked, created_at, limits, fair_key, turn) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[], \
         $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::text[], $14::int8[], $15::text[], \
         $16::text[], $17::text[], $18::int8[], $19::bool[], $20::bool[], $21::bool[], $22::int8[], $23::text[], \
         $24::text[], $25::int8[]) \
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
    .bind(c.note)
    .bind(c.finished_at)
    .bind(c.manual)
    .bind(c.held)
    .bind(c.blocked)
    .bind(c.created_at)
    .bind(c.limits)
    .bind(c.fair_key)
    .bind(c.turn)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(done.rows_affected())
}

/// The active runs of several jobs, each job's oldest first.
pub(super) async fn active_runs(tx: &mut Tx, job_ids: &[String]) -> Result<HashMap<String, ActiveRuns>> {
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
pub(super) async fn cancel_pending(tx: &mut Tx, runs: &[(String, String)], now: i64) -> Result<u64> {
    if runs.is_empty() {
        return Ok(0);
    }
    let (ids, reasons): (Vec<String>, Vec<String>) = runs.iter().cloned().unzip();
    let done = sqlx::query(&format!(
        "UPDATE runs SET state = 'cancelled', reason = {NOTE_THEN} u.reason, finished_at = $3 \
         FROM UNNEST($1::text[], $2::text[]) AS u(run_id, reason) WHERE runs.id = u.run_id AND runs.state = 'pending'"
    ))
    .bind(ids)
    .bind(reasons)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(done.rows_affected())
}

pub(super) async fn request_cancel(tx: &mut Tx, run_ids: &[String]) -> Result<()> {
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
pub(super) async fn unblock_next(tx: &mut Tx, job_id: &str) -> Result<()> {
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

/// Inserts a run that is not from a trigger, applying the job's overlap policy. The caller
/// holds the job's row lock.
pub(super) async fn insert_untriggered(tx: &mut Tx, mut run: NewRun, now: i64) -> Result<NewRun> {
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

pub(super) async fn run_row(tx: &mut Tx, id: &str, lock: bool) -> Result<Option<RunRow>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1{lock}"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err)
}

/// [`Store::run_get`].
pub(super) async fn get(s: &PostgresStore, id: &str) -> Result<Run> {
    s.reader().run(id).await
}

/// [`Store::run_list`].
pub(super) async fn list(s: &PostgresStore, f: &RunFilter) -> Result<Page<Run>> {
    let mut q = crate::store::listing::run_query::<Postgres>(f)?;
    let mut rows: Vec<RunRow> = q.build_query_as().fetch_all(&s.pool).await.map_err(db_err)?;
    let next_cursor = crate::store::listing::split_page(&mut rows, f.limit, |r| (r.scheduled_for, r.id.as_str()));
    Ok(Page { items: rows.into_iter().map(RunRow::into_run).collect::<Result<_>>()?, next_cursor })
}

/// [`Store::run_next_pending`].
pub(super) async fn next_pending(s: &PostgresStore) -> Result<Option<Timestamp>> {
    s.reader().next_pending().await
}

/// The runs `ids` names, locked in the lock order (their jobs first, sorted, when `lock_job`
/// says a run's job must be; then the runs, sorted), by id.
async fn lock_batch(
    tx: &mut Tx,
    ids: &[String],
    lock_job: impl Fn(&RunRow) -> bool,
) -> Result<HashMap<String, RunRow>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY($1)");
    let peek: Vec<RunRow> = sqlx::query_as(&sql).bind(ids).fetch_all(&mut **tx).await.map_err(db_err)?;
    let jobs = sorted_unique(peek.iter().filter(|r| lock_job(r)).map(|r| r.job_id.clone()).collect());
    lock_jobs(tx, &jobs).await?;
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY($1) ORDER BY id FOR UPDATE");
    let rows: Vec<RunRow> = sqlx::query_as(&sql).bind(ids).fetch_all(&mut **tx).await.map_err(db_err)?;
    Ok(rows.into_iter().map(|r| (r.id.clone(), r)).collect())
}

/// The rows of `ids` as they are now in `tx`, by id.
async fn rows_now(tx: &mut Tx, ids: &[String]) -> Result<HashMap<String, RunRow>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY($1)");
    let rows: Vec<RunRow> = sqlx::query_as(&sql).bind(ids).fetch_all(&mut **tx).await.map_err(db_err)?;
    Ok(rows.into_iter().map(|r| (r.id.clone(), r)).collect())
}

/// [`Store::run_cancel_many`]: one transaction for the batch, locks taken up front in the lock
/// order, then each run as [`cancel`] does it.
pub(super) async fn cancel_many(s: &PostgresStore, ids: &[String], now: Timestamp) -> Result<Vec<Result<Run>>> {
    let mut tx = s.begin().await?;
    let locked = lock_batch(&mut tx, ids, |r| r.overlap == Overlap::BufferOne.as_str()).await?;
    let mut outcome: Vec<Result<()>> = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(row) = locked.get(id) else {
            outcome.push(Err(StoreError::NotFound(format!("run {id}"))));
            continue;
        };
        match row.state()? {
            RunState::Pending => {
                cancel_pending(&mut tx, &[(id.clone(), "cancelled by request".to_string())], us(now)).await?;
                if row.overlap == Overlap::BufferOne.as_str() {
                    unblock_next(&mut tx, &row.job_id).await?;
                }
                outcome.push(Ok(()));
            }
            RunState::Running => {
                request_cancel(&mut tx, std::slice::from_ref(id)).await?;
                outcome.push(Ok(()));
            }
            _ => outcome.push(Err(StoreError::AlreadyFinished(id.clone()))),
        }
    }
    let mut now_rows = rows_now(&mut tx, ids).await?;
    tx.commit().await.map_err(db_err)?;
    ids.iter()
        .zip(outcome)
        .map(|(id, o)| {
            Ok(o.and_then(|()| {
                now_rows.remove(id).ok_or_else(|| StoreError::NotFound(format!("run {id}")))?.into_run()
            }))
        })
        .collect()
}

/// [`Store::run_retry_many`]: one transaction for the batch, locks taken up front in the lock
/// order (every run's job: a retry reads `paused` and `max_attempts`), then each run as
/// [`retry`] does it.
pub(super) async fn retry_many(s: &PostgresStore, ids: &[String], now: Timestamp) -> Result<Vec<Result<Run>>> {
    let mut tx = s.begin().await?;
    let locked = lock_batch(&mut tx, ids, |_| true).await?;
    let jobs: Vec<String> = sorted_unique(locked.values().map(|r| r.job_id.clone()).collect());
    let max: HashMap<String, i64> = sqlx::query_as("SELECT id, max_attempts FROM jobs WHERE id = ANY($1)")
        .bind(&jobs)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?
        .into_iter()
        .collect();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(row) = locked.get(id) else {
            out.push(Err(StoreError::NotFound(format!("run {id}"))));
            continue;
        };
        let w = match operator_retry(row, max.get(&row.job_id).copied()) {
            Ok(w) => w,
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        let row: RunRow = sqlx::query_as(&format!(
            "UPDATE runs SET state = 'pending', scheduled_for = $1, max_attempts = $2, reason = $3, note = $5, finished_at = NULL, \
             lease_expires_at = NULL, cancel_requested = FALSE, blocked = FALSE, held = NOT manual AND \
             COALESCE((SELECT j.paused FROM jobs j WHERE j.id = runs.job_id), FALSE) WHERE id = $4 RETURNING {RUN_COLUMNS}"
        ))
        .bind(us(now))
        .bind(w.max_attempts)
        .bind(&w.reason)
        .bind(id)
        .bind(&w.note)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        out.push(row.into_run());
    }
    tx.commit().await.map_err(db_err)?;
    Ok(out)
}

/// [`Store::run_attempts`].
pub(super) async fn attempts(s: &PostgresStore, id: &str) -> Result<Vec<Attempt>> {
    let rows: Vec<AttemptRow> =
        sqlx::query_as(&format!("SELECT {ATTEMPT_COLUMNS} FROM run_attempts WHERE run_id = $1 ORDER BY attempt"))
            .bind(id)
            .fetch_all(&s.pool)
            .await
            .map_err(db_err)?;
    if rows.is_empty() {
        // Never claimed, or no such run.
        get(s, id).await?;
    }
    rows.into_iter().map(AttemptRow::into_attempt).collect()
}

/// [`Store::run_prune`].
pub(super) async fn prune(s: &PostgresStore, before: Timestamp, limit: u32) -> Result<u64> {
    let gone: i64 = sqlx::query_scalar(
        "WITH gone AS (DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE finished_at IS NOT NULL \
         AND finished_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id), \
         history AS (DELETE FROM run_attempts WHERE run_id IN (SELECT id FROM gone)) SELECT COUNT(*) FROM gone",
    )
    .bind(us(before))
    .bind(limit as i64)
    .fetch_one(&s.pool)
    .await
    .map_err(db_err)?;
    Ok(gone as u64)
}

/// [`Store::stats`].
pub(super) async fn stats(s: &PostgresStore, now: Timestamp) -> Result<Stats> {
    s.reader().stats(now).await
}
