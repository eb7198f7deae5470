//! SQLite: runs (inserts with overlap applied, reads, cancels, prunes, counts).

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

pub(super) async fn insert_run(tx: &mut Tx, r: &NewRun) -> Result<bool> {
    Ok(insert_runs(tx, &[r]).await? == 1)
}

pub(super) async fn active_runs(tx: &mut Tx, job_id: &str) -> Result<ActiveRuns> {
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT id, state, blocked FROM runs WHERE job_id = ? AND state IN ('pending', 'running') \
         ORDER BY scheduled_for",
    )
    .bind(job_id)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)?;
    let mut a = ActiveRuns::default();
    for (id, state, blocked) in rows {
        match (state.as_str(), blocked) {
            ("running", _) => a.running.push(id),
            (_, true) => a.blocked.push(id),
            _ => a.pending.push(id),
        }
    }
    Ok(a)
}

pub(super) async fn cancel_pending(tx: &mut Tx, run_id: &str, reason: &str, now: i64) -> Result<bool> {
    let done = sqlx::query(
        &format!("UPDATE runs SET state = 'cancelled', reason = {NOTE_THEN} ?, finished_at = ? WHERE id = ? AND state = 'pending'"),
    )
    .bind(reason)
    .bind(now)
    .bind(run_id)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn request_cancel(tx: &mut Tx, run_id: &str) -> Result<()> {
    sqlx::query("UPDATE runs SET cancel_requested = 1 WHERE id = ? AND state = 'running'")
        .bind(run_id)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// `buffer_one`: when the job has nothing running or claimable left, its waiting run may go.
pub(super) async fn unblock_next(tx: &mut Tx, job_id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE runs SET blocked = 0 WHERE id = (SELECT id FROM runs WHERE job_id = ?1 AND state = 'pending' \
         AND blocked = 1 ORDER BY scheduled_for LIMIT 1) AND NOT EXISTS (SELECT 1 FROM runs WHERE job_id = ?1 \
         AND (state = 'running' OR (state = 'pending' AND blocked = 0)))",
    )
    .bind(job_id)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Inserts a run that is not from a trigger, applying the job's overlap policy.
pub(super) async fn insert_untriggered(tx: &mut Tx, mut run: NewRun, now: i64) -> Result<NewRun> {
    if run.job.overlap() != Overlap::Allow {
        let mut active = active_runs(tx, &run.job.id).await?;
        match decide(run.job.overlap(), &mut active, &run.id) {
            Decision::Pending { blocked } => run.blocked = blocked,
            Decision::Skipped(why) => {
                run.state = RunState::Skipped;
                run.reason = Some(why);
            }
            Decision::Supersede { cancel_pending: p, cancel_running } => {
                for id in p {
                    cancel_pending(tx, &id, &superseded_reason(&run.id), now).await?;
                }
                for id in cancel_running {
                    request_cancel(tx, &id).await?;
                }
            }
        }
    }
    insert_run(tx, &run).await?;
    Ok(run)
}

pub(super) async fn run_row(tx: &mut Tx, id: &str) -> Result<Option<RunRow>> {
    sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err)
}

/// [`Store::run_get`].
pub(super) async fn get(s: &SqliteStore, id: &str) -> Result<Run> {
    s.reader(&s.read).run(id).await
}

/// [`Store::run_list`].
pub(super) async fn list(s: &SqliteStore, f: &RunFilter) -> Result<Page<Run>> {
    let mut q = crate::store::listing::run_query::<Sqlite>(f)?;
    let mut rows: Vec<RunRow> = q.build_query_as().fetch_all(&s.read).await.map_err(db_err)?;
    let next_cursor = crate::store::listing::split_page(&mut rows, f.limit, |r| (r.scheduled_for, r.id.as_str()));
    Ok(Page { items: rows.into_iter().map(RunRow::into_run).collect::<Result<_>>()?, next_cursor })
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
    let row = run_row(tx, id).await?.ok_or_else(|| StoreError::NotFound(format!("run {id}")))?;
    match row.state()? {
        RunState::Pending => {
            cancel_pending(tx, id, "cancelled by request", us(now)).await?;
            if row.overlap == Overlap::BufferOne.as_str() {
                unblock_next(tx, &row.job_id).await?;
            }
        }
        RunState::Running => request_cancel(tx, id).await?,
        _ => return Err(StoreError::AlreadyFinished(id.to_string())),
    }
    run_row(tx, id).await?.ok_or_else(|| StoreError::NotFound(format!("run {id}")))
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
    let row = run_row(tx, id).await?.ok_or_else(|| StoreError::NotFound(format!("run {id}")))?;
    let job_max: Option<i64> = sqlx::query_scalar("SELECT max_attempts FROM jobs WHERE id = ?")
        .bind(&row.job_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err)?;
    let w = operator_retry(&row, job_max)?;
    // A paused job's retried run waits for resume like its other pending runs.
    sqlx::query_as(&format!(
        "UPDATE runs SET state = 'pending', scheduled_for = ?1, max_attempts = ?2, reason = ?3, note = ?5, finished_at = NULL, \
         lease_expires_at = NULL, cancel_requested = 0, blocked = 0, held = (manual = 0 AND EXISTS \
         (SELECT 1 FROM jobs j WHERE j.id = runs.job_id AND j.paused = 1)) WHERE id = ?4 RETURNING {RUN_COLUMNS}"
    ))
    .bind(us(now))
    .bind(w.max_attempts)
    .bind(&w.reason)
    .bind(id)
    .bind(&w.note)
    .fetch_one(&mut **tx)
    .await
    .map_err(db_err)
}

/// [`Store::run_attempts`].
pub(super) async fn attempts(s: &SqliteStore, id: &str) -> Result<Vec<Attempt>> {
    let rows: Vec<AttemptRow> =
        sqlx::query_as(&format!("SELECT {ATTEMPT_COLUMNS} FROM run_attempts WHERE run_id = ? ORDER BY attempt"))
            .bind(id)
            .fetch_all(&s.read)
            .await
            .map_err(db_err)?;
    if rows.is_empty() {
        // Never claimed, or no such run.
        get(s, id).await?;
    }
    rows.into_iter().map(AttemptRow::into_attempt).collect()
}

/// [`Store::run_next_pending`].
pub(super) async fn next_pending(s: &SqliteStore) -> Result<Option<Timestamp>> {
    s.reader(&s.read).next_pending().await
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

/// [`Store::stats`].
pub(super) async fn stats(s: &SqliteStore, now: Timestamp) -> Result<Stats> {
    s.reader(&s.read).stats(now).await
}
