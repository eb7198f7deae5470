//! PostgreSQL: leases (claims, heartbeats, completions and the reaper), fenced by [`Lease`] and
//! taking row locks in the order the module docs of [`super`] give.

use super::*;

/// The fence: the run is `running` under the lease whose worker id is the SQL expression
/// `worker` and whose `run_id:attempt` ([`lease_key`]) the expression `key` matches (`= u_key`,
/// `= ANY($4)`).
fn fence(worker: &str, key: &str) -> String {
    format!("runs.worker_id = {worker} AND runs.id || ':' || runs.attempt {key} AND runs.state = 'running'")
}

/// A lease as the `key` of [`fence`].
fn lease_key(l: &Lease) -> String {
    format!("{}:{}", l.run_id, l.attempt)
}

/// An attempt to settle.
pub(super) struct Settle<'a> {
    row: RunRow,
    ended: Ended,
    output: Option<&'a serde_json::Value>,
    error: Option<&'a str>,
}

/// Applies settlements to running runs in one statement, each fenced by the lease it is held
/// under; a retry of a paused job's run is held until resume. Then lets `buffer_one` jobs'
/// waiting runs go. The caller holds the row locks of the runs and of the jobs that
/// [`must_lock_job`] names. Returns the updated rows by id.
pub(super) async fn settle_rows(tx: &mut Tx, items: &[Settle<'_>], now: Timestamp) -> Result<HashMap<String, RunRow>> {
    if items.is_empty() {
        return Ok(HashMap::new());
    }
    let n = items.len();
    let (mut ids, mut states, mut retry_at, mut finished) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut outputs, mut errors, mut reasons, mut workers, mut keys) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for it in items {
        let row = &it.row;
        let w = settle_row(row, it.ended, it.error, now);
        let lease = lease_of(row);
        ids.push(row.id.clone());
        states.push(w.settlement.state.as_str().to_string());
        retry_at.push(w.settlement.retry_at.map(us));
        finished.push(w.finished_at);
        outputs.push(it.output.map(|o| o.to_string()));
        errors.push(it.error.map(str::to_string));
        reasons.push(w.reason);
        keys.push(lease_key(&lease));
        workers.push(lease.worker_id);
    }
    let rows: Vec<RunRow> = sqlx::query_as(&format!(
        "UPDATE runs SET state = u_state, scheduled_for = COALESCE(u_retry_at, scheduled_for), \
         finished_at = u_finished, ended_at = $1, output = COALESCE(u_output, output), \
         error = COALESCE(u_error, error), reason = u_reason, lease_expires_at = NULL, \
         held = CASE WHEN u_state = 'pending' THEN NOT manual AND COALESCE((SELECT j.paused FROM jobs j \
           WHERE j.id = runs.job_id), FALSE) ELSE held END \
         FROM UNNEST($2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[], $7::text[], $8::text[], \
         $9::text[], $10::text[]) AS u(u_id, u_state, u_retry_at, u_finished, u_output, u_error, u_reason, \
         u_worker, u_key) \
         WHERE runs.id = ANY($2) AND runs.id = u_id AND {} RETURNING {RUN_COLUMNS}",
        fence("u_worker", "= u_key")
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
    .bind(keys)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)?;
    settle_attempts(tx, items, &rows, now).await?;
    let mut unblock: Vec<&str> =
        rows.iter().filter(|r| r.overlap == Overlap::BufferOne.as_str()).map(|r| r.job_id.as_str()).collect();
    unblock.sort_unstable();
    unblock.dedup();
    for job_id in unblock {
        Shared::unblock_next(tx, job_id).await?;
    }
    Ok(rows.into_iter().map(|r| (r.id.clone(), r)).collect())
}

/// Records how the attempts that `settled` (the rows [`settle_rows`] changed) ended, in their
/// history rows: one statement for the batch.
async fn settle_attempts(tx: &mut Tx, items: &[Settle<'_>], settled: &[RunRow], now: Timestamp) -> Result<()> {
    let settled: HashSet<&str> = settled.iter().map(|r| r.id.as_str()).collect();
    let (mut ids, mut attempts, mut states, mut errors) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for it in items.iter().filter(|it| settled.contains(it.row.id.as_str())) {
        let (state, error) = attempt_outcome(it.ended, it.error);
        ids.push(it.row.id.clone());
        attempts.push(it.row.attempt);
        states.push(state.as_str().to_string());
        errors.push(error);
    }
    if ids.is_empty() {
        return Ok(());
    }
    let sql = "UPDATE run_attempts SET finished_at = $1, state = u_state, error = u_error \
               FROM UNNEST($2::text[], $3::int8[], $4::text[], $5::text[]) AS u(u_id, u_attempt, u_state, u_error) \
               WHERE run_id = u_id AND attempt = u_attempt";
    let q = sqlx::query(sql).bind(us(now)).bind(ids).bind(attempts).bind(states).bind(errors);
    q.execute(&mut **tx).await.map_err(db_err)?;
    Ok(())
}

/// Starts the history rows of the attempts a claim just made (one statement per claim batch;
/// the claim itself named their worker on the runs).
async fn record_claims(tx: &mut Tx, rows: &[RunRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let attempts: Vec<i64> = rows.iter().map(|r| r.attempt).collect();
    let workers: Vec<&str> = rows.iter().map(|r| r.worker_id.as_deref().unwrap_or_default()).collect();
    let names: Vec<&str> = rows.iter().map(|r| r.worker_name.as_deref().unwrap_or_default()).collect();
    let started: Vec<i64> = rows.iter().map(|r| r.started_at.unwrap_or_default()).collect();
    let due: Vec<i64> = rows.iter().map(|r| r.scheduled_for).collect();
    sqlx::query(
        "INSERT INTO run_attempts (run_id, attempt, worker_id, worker_name, started_at, due_at, state) \
         SELECT i, a, w, n, s, d, 'running' \
         FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::int8[], $6::int8[]) AS u(i, a, w, n, s, d)",
    )
    .bind(ids)
    .bind(attempts)
    .bind(workers)
    .bind(names)
    .bind(started)
    .bind(due)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Whether settling a run reads or writes its job's state, so the job's row must be locked
/// first: a `buffer_one` job's waiting run is released, and a retry reads `paused` (a
/// concurrent pause must not miss the run going back to `pending`).
pub(super) fn must_lock_job(overlap: &str, attempt: i64, max_attempts: i64, may_retry: bool) -> bool {
    overlap == Overlap::BufferOne.as_str() || (may_retry && attempt < max_attempts)
}

/// Whether an attempt that ended so may go back to `pending`.
pub(super) fn may_retry(ended: Ended) -> bool {
    !matches!(ended, Ended::Reported(RunState::Succeeded | RunState::Cancelled) | Ended::Final(_))
}

/// For a transaction that already holds run locks (the reaper): locks the jobs of `rows` that
/// [`must_lock_job`] names, and those whose run ends `failed` or `timed_out` here while the job
/// counts runs toward `pause_after_failures` (with their triggers, which a pause writes),
/// without waiting, and drops the rows whose job or triggers are locked elsewhere (they are
/// picked again on the next pass). Never waiting here keeps the lock order deadlock-free.
/// Returns the counts of the jobs locked for counting.
pub(super) async fn lock_jobs_or_skip(tx: &mut Tx, rows: &mut Vec<RunRow>, ended: Ended) -> Result<Vec<JobStreak>> {
    let all = sorted_unique(rows.iter().map(|r| r.job_id.clone()).collect());
    let counting: HashSet<String> = if all.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1) AND pause_after_failures IS NOT NULL")
            .bind(&all)
            .fetch_all(&mut **tx)
            .await
            .map_err(db_err)?
            .into_iter()
            .collect()
    };
    // Reaped attempts are failures: the run ends failed or timed_out once its attempts are spent.
    let ends_failed = |r: &RunRow| !r.cancel_requested && r.attempt >= r.max_attempts;
    let counts = |r: &RunRow| counting.contains(&r.job_id) && ends_failed(r);
    let needs = |r: &RunRow| must_lock_job(&r.overlap, r.attempt, r.max_attempts, may_retry(ended)) || counts(r);
    let jobs = sorted_unique(rows.iter().filter(|r| needs(r)).map(|r| r.job_id.clone()).collect());
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut busy: HashSet<String> = HashSet::new();
    let pausing = sorted_unique(rows.iter().filter(|r| counts(r)).map(|r| r.job_id.clone()).collect());
    if !pausing.is_empty() {
        let locked: Vec<String> =
            sqlx::query_scalar("SELECT job_id FROM triggers WHERE job_id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED")
                .bind(&pausing)
                .fetch_all(&mut **tx)
                .await
                .map_err(db_err)?;
        let all: Vec<String> = sqlx::query_scalar("SELECT job_id FROM triggers WHERE job_id = ANY($1)")
            .bind(&pausing)
            .fetch_all(&mut **tx)
            .await
            .map_err(db_err)?;
        let mut left: HashMap<String, i64> = HashMap::new();
        for j in all {
            *left.entry(j).or_default() += 1;
        }
        for j in locked {
            *left.entry(j).or_default() -= 1;
        }
        busy.extend(left.into_iter().filter(|(_, n)| *n > 0).map(|(j, _)| j));
    }
    let wanted: Vec<String> = jobs.iter().filter(|j| !busy.contains(*j)).cloned().collect();
    let locked: Vec<String> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED")
            .bind(&wanted)
            .fetch_all(&mut **tx)
            .await
            .map_err(db_err)?;
    if locked.len() != wanted.len() {
        let existing: Vec<String> = sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1)")
            .bind(&wanted)
            .fetch_all(&mut **tx)
            .await
            .map_err(db_err)?;
        busy.extend(existing.into_iter().filter(|id| !locked.contains(id)));
    }
    rows.retain(|r| !(needs(r) && busy.contains(&r.job_id)));
    let counted: Vec<String> = locked.into_iter().filter(|j| counting.contains(j)).collect();
    jobs::streaks(tx, &counted).await
}

/// [`Store::run_claim`].
pub(super) async fn claim(s: &PostgresStore, p: &ClaimParams) -> Result<Vec<ClaimedRun>> {
    let mut tx = s.begin().await?;
    let scope = touch_worker(&mut tx, &p.worker_id, p.now).await?;
    if p.max == 0 || scope.claims_nothing() {
        tx.commit().await.map_err(db_err)?;
        return Ok(Vec::new());
    }
    let scope_key = format!("{:?}/{:?}", scope.handlers, scope.namespaces);
    let start = s.cursors.start(&scope_key, us(p.now));
    let began = std::time::Instant::now();
    let (rows, read) = limits::claim_rows(&mut tx, p, &scope, start.from.as_ref()).await?;
    let took_us = i64::try_from(began.elapsed().as_micros()).unwrap_or(i64::MAX);
    record_claims(&mut tx, &rows).await?;
    tx.commit().await.map_err(db_err)?;
    s.cursors.after_claim(&scope_key, start, read, us(p.now), took_us);
    let mut claimed: Vec<ClaimedRun> = rows.into_iter().map(RunRow::into_claimed).collect::<Result<_>>()?;
    claimed.sort_by_key(|c| c.scheduled_for);
    Ok(claimed)
}

/// [`Store::run_heartbeat`].
pub(super) async fn heartbeat(
    s: &PostgresStore,
    worker_id: &str,
    held: &[Lease],
    lease: Duration,
    now: Timestamp,
) -> Result<HeartbeatOutcome> {
    let mut tx = s.begin().await?;
    Shared::touch_worker(&mut tx, worker_id, now).await?;
    let expires = us(now) + dur_us(lease);
    let mut out = HeartbeatOutcome { lease_expires_at: Some(ts(expires)), ..Default::default() };
    if !held.is_empty() {
        // One statement, driven by an index (the primary key, or this worker's running runs);
        // the attempt is fenced with a filter on `id:attempt` rather than a join with the
        // list, as a join of two large inputs is one bad row estimate away from quadratic.
        // Sorted ids: an index scan locks the rows in id order, as completions do.
        // Another worker's lease is never this worker's to extend.
        let own: Vec<&Lease> = held.iter().filter(|l| l.worker_id == worker_id).collect();
        let keys: Vec<String> = own.iter().map(|l| lease_key(l)).collect();
        let still: Vec<(String, i64, bool)> = sqlx::query_as(&format!(
            "UPDATE runs SET lease_expires_at = $1 WHERE runs.id = ANY($2) AND {} \
             RETURNING id, attempt, cancel_requested",
            fence("$3", "= ANY($4)")
        ))
        .bind(expires)
        .bind(sorted_unique(own.iter().map(|l| l.run_id.clone()).collect()))
        .bind(worker_id)
        .bind(keys)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        let still: HashMap<(String, i64), bool> = still.into_iter().map(|(id, a, c)| ((id, a), c)).collect();
        for l in held {
            let key = (l.run_id.clone(), i64::from(l.attempt));
            match still.get(&key).filter(|_| l.worker_id == worker_id) {
                None => out.lost.push(l.run_id.clone()),
                Some(true) => out.cancel.push(l.run_id.clone()),
                Some(false) => {}
            }
        }
    }
    tx.commit().await.map_err(db_err)?;
    Ok(out)
}

/// What a completion reads of its run (and whether its job counts runs toward
/// `pause_after_failures`) before taking locks.
#[derive(sqlx::FromRow)]
struct Peek {
    id: String,
    job_id: String,
    overlap: String,
    attempt: i64,
    max_attempts: i64,
    cancel_requested: bool,
    counts: bool,
}

/// [`Store::run_complete_many`].
pub(super) async fn complete_many(
    s: &PostgresStore,
    completions: Vec<Completion>,
    now: Timestamp,
) -> Result<Vec<Result<Run>>> {
    if completions.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<String> = completions.iter().map(|c| c.lease.run_id.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut tx = s.begin().await?;
    // Lock order: the triggers of jobs a run may pause, the jobs settling reads or writes (see
    // `must_lock_job`; and those counting runs toward `pause_after_failures`) first, then the
    // runs, sorted by id.
    let peek: Vec<Peek> = sqlx::query_as(
        "SELECT r.id, r.job_id, r.overlap, r.attempt, r.max_attempts, r.cancel_requested, \
         COALESCE(j.pause_after_failures IS NOT NULL, FALSE) AS counts \
         FROM runs r LEFT JOIN jobs j ON j.id = r.job_id WHERE r.id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err)?;
    let peek: HashMap<&str, &Peek> = peek.iter().map(|p| (p.id.as_str(), p)).collect();
    let (mut jobs, mut counting, mut may_pause) = (Vec::new(), Vec::new(), Vec::new());
    for c in &completions {
        let Some(p) = peek.get(c.lease.run_id.as_str()) else { continue };
        if must_lock_job(&p.overlap, p.attempt, p.max_attempts, may_retry(c.ended())) {
            jobs.push(p.job_id.clone());
        }
        if p.counts && c.state != RunState::Cancelled {
            counting.push(p.job_id.clone());
            let last = p.attempt >= p.max_attempts || !may_retry(c.ended());
            if c.state != RunState::Succeeded && !p.cancel_requested && last {
                may_pause.push(p.job_id.clone());
            }
        }
    }
    let counting = sorted_unique(counting);
    jobs.extend(counting.iter().cloned());
    lock_triggers_of_jobs(&mut tx, &sorted_unique(may_pause)).await?;
    lock_jobs(&mut tx, &sorted_unique(jobs)).await?;
    let streaks = jobs::streaks(&mut tx, &counting).await?;
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
        let run_id = &c.lease.run_id;
        let Some(row) = rows.get(run_id) else {
            out.push(Some(Err(StoreError::NotFound(format!("run {run_id}")))));
            continue;
        };
        if !holds(row, &c.lease) {
            out.push(Some(Err(StoreError::StaleAttempt(run_id.clone()))));
            continue;
        }
        // Settled once: a repeat in this batch finds it no longer running, as on SQLite.
        let row = rows.remove(run_id).expect("present");
        let mut after = row.clone();
        after.state = "settled".into();
        rows.insert(run_id.clone(), after);
        settles.push(Settle { row, ended: c.ended(), output: c.output.as_ref(), error: c.error.as_deref() });
        settled_at.push((i, run_id.clone()));
        out.push(None);
    }
    let mut updated = settle_rows(&mut tx, &settles, now).await?;
    let ready = made_ready(updated.values(), us(now));
    let finished: Vec<&RunRow> = settled_at.iter().filter_map(|(_, id)| updated.get(id)).collect();
    jobs::count_settled(&mut tx, &streaks, &finished, now).await?;
    for (i, id) in settled_at {
        out[i] = Some(match updated.remove(&id) {
            Some(r) => r.into_run(),
            None => Err(StoreError::StaleAttempt(id)),
        });
    }
    tx.commit().await.map_err(db_err)?;
    s.cursors.ready_at(ready, us(now));
    Ok(out.into_iter().map(|o| o.expect("every completion answered")).collect())
}

/// When the settled `rows` made runs ready, for the claim cursors once committed: a retry at its
/// due time; a `buffer_one` run's end now (its job's waiting run may go).
fn made_ready<'a>(rows: impl IntoIterator<Item = &'a RunRow>, now: i64) -> Vec<i64> {
    rows.into_iter()
        .filter_map(|r| match r.state.as_str() {
            "pending" => Some(r.scheduled_for),
            _ if r.overlap == Overlap::BufferOne.as_str() => Some(now),
            _ => None,
        })
        .collect()
}

/// Settles the runs the reaper picked, ended so: their jobs locked first, or the rows passed
/// over ([`lock_jobs_or_skip`]), then counted toward `pause_after_failures`. Returns each settled
/// run's id and new state, in pick order; adds to `ready` when runs became ready ([`made_ready`]).
async fn settle_picked(
    tx: &mut Tx,
    mut picked: Vec<RunRow>,
    ended: Ended,
    now: Timestamp,
    ready: &mut Vec<i64>,
) -> Result<Vec<(String, RunState)>> {
    let streaks = lock_jobs_or_skip(tx, &mut picked, ended).await?;
    let order: Vec<String> = picked.iter().map(|r| r.id.clone()).collect();
    let items: Vec<Settle> = picked.into_iter().map(|row| Settle { row, ended, output: None, error: None }).collect();
    let mut done = settle_rows(tx, &items, now).await?;
    ready.extend(made_ready(done.values(), us(now)));
    let finished: Vec<&RunRow> = order.iter().filter_map(|id| done.get(id)).collect();
    jobs::count_settled(tx, &streaks, &finished, now).await?;
    let mut out = Vec::with_capacity(order.len());
    for id in order {
        if let Some(r) = done.remove(&id) {
            out.push((r.id.clone(), r.state()?));
        }
    }
    Ok(out)
}

/// [`Store::run_reap`].
pub(super) async fn reap(s: &PostgresStore, p: &ReapParams) -> Result<ReapReport> {
    let mut tx = s.begin().await?;
    let now = us(p.now);
    // Every pick skips rows another node's reaper holds.
    let workers_dead = Shared::reap_workers(&mut tx, now - dur_us(p.dead_after)).await?;
    let mut ready = Vec::new();
    let picked = Shared::expired_runs(&mut tx, now, p.limit).await?;
    let expired = settle_picked(&mut tx, picked, Ended::LeaseExpired, p.now, &mut ready).await?;
    let picked = Shared::overrun_runs(&mut tx, dur_us(p.timeout_grace), now, p.limit).await?;
    let timed_out = settle_picked(&mut tx, picked, Ended::TimeoutOverrun, p.now, &mut ready).await?;
    tx.commit().await.map_err(db_err)?;
    s.cursors.ready_at(ready, now);
    Ok(ReapReport { expired, timed_out, workers_dead })
}
