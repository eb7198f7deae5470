//! SQLite: runs (multi-row inserts, cancels, operator cancels and retries, prunes).

use super::*;

/// Rows per multi-row INSERT: well under SQLite's 32,766 bound parameters at 21 columns.
pub(super) const INSERT_CHUNK: usize = 1000;

/// Inserts runs in multi-row statements; a run whose `(trigger_id, fire_time)` exists is left
/// out (guarantee 2). Returns how many were inserted.
pub(super) async fn insert_runs(tx: &mut Tx, runs: &[&NewRun]) -> Result<u64> {
    let mut inserted = 0;
    let turns = limits::turns_for(tx, runs).await?;
    let runs: Vec<(&NewRun, (String, i64))> = runs.iter().copied().zip(turns).collect();
    for chunk in runs.chunks(INSERT_CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO runs (id, job_id, trigger_id, fire_time, namespace, handler, payload, priority, timeout_us, \
             max_attempts, initial_delay_us, max_delay_us, overlap, scheduled_for, state, reason, note, finished_at, \
             manual, held, blocked, created_at, limits, fair_key, turn) ",
        );
        q.push_values(chunk, |mut b, (r, (fair_key, turn))| {
            b.push_bind(r.id.clone())
                .push_bind(r.job.id.clone())
                .push_bind(r.trigger_id.clone())
                .push_bind(r.fire_time)
                .push_bind(r.job.namespace.clone())
                .push_bind(r.job.handler.clone())
                .push_bind(r.job.payload.clone())
                .push_bind(r.job.priority)
                .push_bind(r.job.timeout_us)
                .push_bind(r.job.max_attempts)
                .push_bind(r.job.initial_delay_us)
                .push_bind(r.job.max_delay_us)
                .push_bind(r.job.overlap.clone())
                .push_bind(r.scheduled_for)
                .push_bind(r.state.as_str())
                .push_bind(r.reason.clone())
                .push_bind(r.note.clone())
                .push_bind(r.finished_at())
                .push_bind(r.manual)
                .push_bind(r.held)
                .push_bind(r.blocked)
                .push_bind(r.created_at)
                .push_bind(r.job.limits.clone())
                .push_bind(fair_key.clone())
                .push_bind(*turn);
        });
        q.push(" ON CONFLICT (trigger_id, fire_time) DO NOTHING");
        inserted += q.build().execute(&mut **tx).await.map_err(db_err)?.rows_affected();
    }
    Ok(inserted)
}

/// Cancels pending runs, each with its reason; returns how many were still pending.
pub(super) async fn cancel_pending(tx: &mut Tx, runs: &[(String, String)], now: i64) -> Result<u64> {
    let sql = format!(
        "UPDATE runs SET state = 'cancelled', reason = {NOTE_THEN} ?, finished_at = ? WHERE id = ? AND state = 'pending'"
    );
    let mut cancelled = 0;
    for (id, reason) in runs {
        let q = sqlx::query(&sql).bind(reason).bind(now).bind(id);
        cancelled += q.execute(&mut **tx).await.map_err(db_err)?.rows_affected();
    }
    Ok(cancelled)
}

/// Inserts runs (a manual run, a backfill's) as [`insert_runs`] does; returns how many.
pub(super) async fn insert_all(tx: &mut Tx, runs: &[NewRun]) -> Result<u64> {
    insert_runs(tx, &runs.iter().collect::<Vec<_>>()).await
}

/// [`Store::run_cancel_many`]: one transaction for the batch.
pub(super) async fn cancel_many(s: &SqliteStore, ids: &[String], now: Timestamp) -> Result<Vec<Result<Run>>> {
    let mut tx = s.begin().await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(each_item(cancel_in(&mut tx, id, now).await)?);
    }
    tx.commit().await.map_err(db_err)?;
    Ok(out)
}

/// A batch item's outcome: a refusal (no such run, finished, not retryable) is the item's;
/// any other error ends the batch (its transaction rolls back).
fn each_item(r: Result<RunRow>) -> Result<Result<Run>> {
    match r {
        Ok(row) => Ok(row.into_run()),
        Err(e @ (StoreError::NotFound(_) | StoreError::AlreadyFinished(_) | StoreError::NotRetryable(_))) => Ok(Err(e)),
        Err(e) => Err(e),
    }
}

/// Cancels one run inside `tx`: a pending run at once, a running one by request. A refusal
/// changes nothing.
async fn cancel_in(tx: &mut Tx, id: &str, now: Timestamp) -> Result<RunRow> {
    let row = run_row(tx, id).await?;
    match row.state()? {
        RunState::Pending => {
            cancel_pending(tx, &[(id.to_string(), "cancelled by request".to_string())], us(now)).await?;
            if row.overlap == Overlap::BufferOne.as_str() {
                Shared::unblock_next(tx, &row.job_id).await?;
            }
        }
        RunState::Running => Shared::request_cancel(tx, &[id.to_string()]).await?,
        _ => return Err(StoreError::AlreadyFinished(id.to_string())),
    }
    run_row(tx, id).await
}

/// The run `id`'s row, `NotFound` when there is none.
async fn run_row(tx: &mut Tx, id: &str) -> Result<RunRow> {
    Shared::run_row(tx, id, false).await?.ok_or_else(|| StoreError::NotFound(format!("run {id}")))
}

/// [`Store::run_retry_many`]: one transaction for the batch.
pub(super) async fn retry_many(s: &SqliteStore, ids: &[String], now: Timestamp) -> Result<Vec<Result<Run>>> {
    let mut tx = s.begin().await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(each_item(retry_in(&mut tx, id, now).await)?);
    }
    tx.commit().await.map_err(db_err)?;
    Ok(out)
}

/// Retries one run inside `tx`; a refusal changes nothing.
async fn retry_in(tx: &mut Tx, id: &str, now: Timestamp) -> Result<RunRow> {
    let row = run_row(tx, id).await?;
    let q = sqlx::query_scalar("SELECT max_attempts FROM jobs WHERE id = ?").bind(&row.job_id);
    let job_max: Option<i64> = q.fetch_optional(&mut **tx).await.map_err(db_err)?;
    Shared::retry(tx, id, &operator_retry(&row, job_max)?, now).await
}

/// [`Store::run_prune`].
pub(super) async fn prune(s: &SqliteStore, before: Timestamp, limit: u32) -> Result<u64> {
    let mut tx = s.begin().await?;
    let gone: Vec<String> = sqlx::query_scalar(
        "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < ? LIMIT ?) \
         RETURNING id",
    )
    .bind(us(before))
    .bind(limit as i64)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err)?;
    sqlx::query("DELETE FROM run_attempts WHERE run_id IN (SELECT value FROM json_each(?))")
        .bind(serde_json::to_string(&gone).expect("ids serialize"))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(gone.len() as u64)
}
