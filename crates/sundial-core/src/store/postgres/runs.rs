//! PostgreSQL: runs (batched inserts, batched cancels, operator cancels and retries in the lock
//! order, prunes).

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
    let turns = limits::turns_for(tx, &runs, None).await?;
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

/// Cancels pending runs, each with its reason.
pub(super) async fn cancel_pending(tx: &mut Tx, runs: &[(String, String)], now: i64) -> Result<u64> {
    if runs.is_empty() {
        return Ok(0);
    }
    let (ids, reasons): (Vec<String>, Vec<String>) = runs.iter().cloned().unzip();
    let done = sqlx::query(&format!(
        "UPDATE runs SET state = 'cancelled', reason = {NOTE_THEN} u.reason, finished_at = $3 \
         FROM UNNEST($1::text[], $2::text[]) AS u(run_id, reason) WHERE runs.id = ANY($1) AND runs.id = u.run_id \
         AND runs.state = 'pending'"
    ))
    .bind(ids)
    .bind(reasons)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(done.rows_affected())
}

/// Inserts runs (a manual run, a backfill's) as [`insert_runs`] does; returns how many.
pub(super) async fn insert_all(tx: &mut Tx, runs: &[NewRun]) -> Result<u64> {
    insert_runs(tx, runs.iter()).await
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
                    Shared::unblock_next(&mut tx, &row.job_id).await?;
                }
                outcome.push(Ok(()));
            }
            RunState::Running => {
                Shared::request_cancel(&mut tx, std::slice::from_ref(id)).await?;
                outcome.push(Ok(()));
            }
            _ => outcome.push(Err(StoreError::AlreadyFinished(id.clone()))),
        }
    }
    let mut now_rows = rows_now(&mut tx, ids).await?;
    tx.commit().await.map_err(db_err)?;
    s.ready_anywhere();
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
        let row = Shared::retry(&mut tx, id, &w, now).await?;
        out.push(row.into_run());
    }
    tx.commit().await.map_err(db_err)?;
    s.ready_anywhere();
    Ok(out)
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
