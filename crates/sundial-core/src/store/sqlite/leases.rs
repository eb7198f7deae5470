//! SQLite: leases (claims, heartbeats, completions and the reaper), fenced by `(worker_id, attempt)`.

use super::*;

/// The fence: the run is `running` under the lease bound to these three parameters (run id,
/// worker id, attempt), in that order; see [`bind_lease`].
const FENCE: &str = "id = ? AND worker_id = ? AND attempt = ? AND state = 'running'";

/// Binds a lease to the parameters of [`FENCE`].
fn bind_lease<'q, O>(
    q: sqlx::query::QueryAs<'q, Sqlite, O, sqlx::sqlite::SqliteArguments<'q>>,
    lease: &'q Lease,
) -> sqlx::query::QueryAs<'q, Sqlite, O, sqlx::sqlite::SqliteArguments<'q>> {
    q.bind(&lease.run_id).bind(&lease.worker_id).bind(i64::from(lease.attempt))
}

/// Applies a settlement to a running run, fenced by the lease it is held under.
pub(super) async fn apply_settlement(
    tx: &mut Tx,
    row: &RunRow,
    ended: Ended,
    output: Option<&serde_json::Value>,
    error: Option<&str>,
    now: Timestamp,
) -> Result<Option<RunRow>> {
    let w = settle_row(row, ended, error, now);
    let lease = lease_of(row);
    let sql = format!(
        "UPDATE runs SET state = ?, scheduled_for = COALESCE(?, scheduled_for), finished_at = ?, ended_at = ?, \
         output = COALESCE(?, output), error = COALESCE(?, error), reason = ?, lease_expires_at = NULL, \
         held = (? = 'pending' AND manual = 0 AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = runs.job_id AND j.paused = 1)) \
         WHERE {FENCE} RETURNING {RUN_COLUMNS}"
    );
    let q = sqlx::query_as(&sql)
        .bind(w.settlement.state.as_str())
        .bind(w.settlement.retry_at.map(us))
        .bind(w.finished_at)
        .bind(us(now))
        .bind(output.map(|o| o.to_string()))
        .bind(error)
        .bind(&w.reason)
        // A retry of a paused job's run waits for resume like its other pending runs.
        .bind(w.settlement.state.as_str());
    let updated: Option<RunRow> = bind_lease(q, &lease).fetch_optional(&mut **tx).await.map_err(db_err)?;
    if let Some(run) = &updated {
        settle_attempt(tx, &lease, ended, error, now).await?;
        jobs::count_settled(tx, run, now).await?;
    }
    if updated.is_some() && row.overlap == Overlap::BufferOne.as_str() {
        Shared::unblock_next(tx, &row.job_id).await?;
    }
    Ok(updated)
}

/// Records how the attempt `lease` names ended, in its history row.
async fn settle_attempt(tx: &mut Tx, lease: &Lease, ended: Ended, error: Option<&str>, now: Timestamp) -> Result<()> {
    let (state, error) = attempt_outcome(ended, error);
    sqlx::query("UPDATE run_attempts SET finished_at = ?, state = ?, error = ? WHERE run_id = ? AND attempt = ?")
        .bind(us(now))
        .bind(state.as_str())
        .bind(error)
        .bind(&lease.run_id)
        .bind(i64::from(lease.attempt))
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Starts the history rows of the attempts a claim just made (one statement per claim batch;
/// the claim itself named their worker on the runs).
async fn record_claims(tx: &mut Tx, rows: &[RunRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids = serde_json::to_string(&rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>()).expect("ids serialize");
    sqlx::query(
        "INSERT INTO run_attempts (run_id, attempt, worker_id, worker_name, started_at, due_at, state) \
         SELECT r.id, r.attempt, r.worker_id, w.name, r.started_at, r.scheduled_for, 'running' FROM runs r JOIN workers w \
         ON w.id = r.worker_id WHERE r.id IN (SELECT value FROM json_each(?1))",
    )
    .bind(&ids)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// [`Store::run_claim`].
pub(super) async fn claim(s: &SqliteStore, p: &ClaimParams) -> Result<Vec<ClaimedRun>> {
    let mut tx = s.begin().await?;
    let scope = touch_worker(&mut tx, &p.worker_id, p.now).await?;
    let rows: Vec<RunRow> =
        if p.max == 0 || scope.claims_nothing() { Vec::new() } else { limits::claim_rows(&mut tx, p, &scope).await? };
    record_claims(&mut tx, &rows).await?;
    tx.commit().await.map_err(db_err)?;
    let mut claimed: Vec<ClaimedRun> = rows.into_iter().map(RunRow::into_claimed).collect::<Result<_>>()?;
    claimed.sort_by_key(|c| c.scheduled_for);
    Ok(claimed)
}

/// [`Store::run_heartbeat`].
pub(super) async fn heartbeat(
    s: &SqliteStore,
    worker_id: &str,
    held: &[Lease],
    lease: Duration,
    now: Timestamp,
) -> Result<HeartbeatOutcome> {
    let mut tx = s.begin().await?;
    Shared::touch_worker(&mut tx, worker_id, now).await?;
    let expires = us(now) + dur_us(lease);
    let mut out = HeartbeatOutcome { lease_expires_at: Some(ts(expires)), ..Default::default() };
    let sql = format!("UPDATE runs SET lease_expires_at = ? WHERE {FENCE} RETURNING cancel_requested");
    for l in held {
        let q = sqlx::query_as(&sql).bind(expires);
        // Another worker's lease is never this worker's to extend.
        let still: Option<(bool,)> = if l.worker_id == worker_id {
            bind_lease(q, l).fetch_optional(&mut *tx).await.map_err(db_err)?
        } else {
            None
        };
        match still {
            None => out.lost.push(l.run_id.clone()),
            Some((true,)) => out.cancel.push(l.run_id.clone()),
            Some((false,)) => {}
        }
    }
    tx.commit().await.map_err(db_err)?;
    Ok(out)
}

/// [`Store::run_complete_many`].
pub(super) async fn complete_many(
    s: &SqliteStore,
    completions: Vec<Completion>,
    now: Timestamp,
) -> Result<Vec<Result<Run>>> {
    let mut tx = s.begin().await?;
    let mut out = Vec::with_capacity(completions.len());
    for c in completions {
        let Some(row) = Shared::run_row(&mut tx, &c.lease.run_id, false).await? else {
            out.push(Err(StoreError::NotFound(format!("run {}", c.lease.run_id))));
            continue;
        };
        if !holds(&row, &c.lease) {
            out.push(Err(StoreError::StaleAttempt(c.lease.run_id)));
            continue;
        }
        let updated = apply_settlement(&mut tx, &row, c.ended(), c.output.as_ref(), c.error.as_deref(), now).await?;
        out.push(match updated {
            Some(r) => r.into_run(),
            None => Err(StoreError::StaleAttempt(c.lease.run_id)),
        });
    }
    tx.commit().await.map_err(db_err)?;
    Ok(out)
}

/// [`Store::run_reap`].
pub(super) async fn reap(s: &SqliteStore, p: &ReapParams) -> Result<ReapReport> {
    let mut tx = s.begin().await?;
    let now = us(p.now);
    let workers_dead = Shared::reap_workers(&mut tx, now - dur_us(p.dead_after)).await?;
    let mut report = ReapReport { workers_dead, ..Default::default() };
    let expired = Shared::expired_runs(&mut tx, now, p.limit).await?;
    for row in &expired {
        if let Some(r) = apply_settlement(&mut tx, row, Ended::LeaseExpired, None, None, p.now).await? {
            report.expired.push((r.id.clone(), r.state()?));
        }
    }
    let overrun = Shared::overrun_runs(&mut tx, dur_us(p.timeout_grace), now, p.limit).await?;
    for row in &overrun {
        if let Some(r) = apply_settlement(&mut tx, row, Ended::TimeoutOverrun, None, None, p.now).await? {
            report.timed_out.push((r.id.clone(), r.state()?));
        }
    }
    tx.commit().await.map_err(db_err)?;
    Ok(report)
}
