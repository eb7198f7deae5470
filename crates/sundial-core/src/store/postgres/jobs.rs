//! PostgreSQL: job definitions (group-committed submissions racing other nodes on names and keys,
//! storing an updated job's triggers, counting settled runs toward `pause_after_failures`). The
//! other job writes are `store_by_noun!`'s, from `store::writes`.

use super::*;
use crate::store::fire::{calendar_names, unknown_calendar};

impl PostgresStore {
    async fn jobs_by_id(&self, ids: &[String], now: Timestamp) -> Result<HashMap<String, Job>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<JobRow> = sqlx::query_as(&format!("{JOB_SELECT} WHERE j.id = ANY($1)"))
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(self.reader().with_triggers(rows, now).await?.into_iter().map(|j| (j.id.clone(), j)).collect())
    }

    /// One group-commit attempt of [`Store::job_create_many`].
    async fn create_batch(&self, jobs: &[JobCreate], now: Timestamp) -> Result<Vec<Staged>> {
        let items: Vec<Item> = jobs
            .iter()
            .map(|c| {
                let key = c.spec.idempotency_key.clone().or_else(|| c.derived_idempotency_key.clone());
                let fingerprint = crate::store::plan::stored_fingerprint(&c.spec, key.as_deref());
                Item { fingerprint, explicit_key: c.spec.idempotency_key.is_some(), key }
            })
            .collect();
        if jobs.iter().zip(&items).all(|(c, item)| crate::store::plan::stands_alone(&c.spec, item.key.as_deref())) {
            return self.create_alone(jobs, &items, now).await;
        }
        self.create_general(jobs, &items, now).await
    }

    /// [`Self::create_batch`] in a transaction: calendars read `FOR SHARE`, names and keys looked
    /// up and decided in submission order, inserts that lost a race to a concurrent transaction
    /// decided again.
    async fn create_general(&self, jobs: &[JobCreate], items: &[Item], now: Timestamp) -> Result<Vec<Staged>> {
        let mut staged: Vec<Option<Staged>> = vec![None; jobs.len()];
        let mut created: Vec<(usize, String, String)> = Vec::new(); // (item, id, name)
        let mut todo: Vec<usize> = (0..jobs.len()).collect();
        let mut ready: Vec<ReadyKey> = Vec::new();
        let mut tx = self.begin().await?;
        // An item naming no stored calendar is refused alone; the calendars named are read FOR
        // SHARE here, so none of them can be deleted before this transaction ends.
        let names = calendar_names(jobs.iter().flat_map(|c| c.spec.triggers.iter()));
        let loaded = super::calendars::load(&mut tx, &names, true).await?;
        todo.retain(|&i| match unknown_calendar(&jobs[i].spec.triggers, &loaded) {
            Some(e) => {
                staged[i] = Some(Staged::Invalid(e.to_string()));
                false
            }
            None => true,
        });
        for _round in 0..5 {
            if todo.is_empty() {
                break;
            }
            let (mut by_key, mut by_name) = lookup_existing(&mut tx, jobs, items, &todo).await?;
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
            let (inserted, keys) = self.insert_jobs(&mut tx, jobs, items, &inserts, now).await?;
            ready.extend(keys);
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
        tx.commit().await.map_err(db_err)?;
        self.cursors.note_ready(&ready, us(now));
        for (i, id, name) in created {
            let mut spec = jobs[i].spec.clone();
            spec.idempotency_key = items[i].key.clone();
            let t = triggers.remove(&id).unwrap_or_default();
            staged[i] = Some(Staged::Created(Box::new(fresh_job(&id, &name, &spec, t, now))));
        }
        staged.into_iter().map(|s| s.ok_or_else(|| StoreError::Internal("unresolved submission".into()))).collect()
    }

    /// [`Self::create_batch`] of submissions that each stand alone
    /// ([`crate::store::plan::stands_alone`]): nothing to look up, lock or decide, so after the
    /// read of the runs' fair turns, the jobs, their runs and the runs-ready notice are one
    /// statement that commits by itself (durable before it answers, so before this returns). An
    /// item whose generated name happens to be taken (a job was given that name by hand) goes
    /// through the full path again.
    async fn create_alone(&self, jobs: &[JobCreate], items: &[Item], now: Timestamp) -> Result<Vec<Staged>> {
        let inserts: Vec<(usize, String, String)> = (0..jobs.len())
            .map(|i| {
                let id = new_id();
                (i, id.clone(), id)
            })
            .collect();
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        let (inserted, ready) = self.insert_jobs(&mut conn, jobs, items, &inserts, now).await?;
        drop(conn);
        self.cursors.note_ready(&ready, us(now));
        let mut staged: Vec<Option<Staged>> = vec![None; jobs.len()];
        let mut again = Vec::new();
        for (i, id, name) in inserts {
            if inserted.contains(&id) {
                let mut spec = jobs[i].spec.clone();
                spec.idempotency_key = items[i].key.clone();
                staged[i] = Some(Staged::Created(Box::new(fresh_job(&id, &name, &spec, Vec::new(), now))));
            } else {
                again.push(i);
            }
        }
        if !again.is_empty() {
            let rest: Vec<JobCreate> = again.iter().map(|&i| jobs[i].clone()).collect();
            let rest_items: Vec<Item> = again.iter().map(|&i| items[i].clone()).collect();
            let rest = self.create_general(&rest, &rest_items, now).await?;
            for (i, s) in again.into_iter().zip(rest) {
                staged[i] = Some(s);
            }
        }
        staged.into_iter().map(|s| s.ok_or_else(|| StoreError::Internal("unresolved submission".into()))).collect()
    }
}

/// What one submission became inside the group commit.
#[derive(Debug, Clone)]
pub(super) enum Staged {
    Created(Box<Job>),
    Replay(String),
    Failed(Conflict),
    /// Refused on a field (a calendar name).
    Invalid(String),
}

#[derive(Clone)]
pub(super) struct Item {
    fingerprint: String,
    explicit_key: bool,
    /// The key stored: the client's, else the derived one.
    key: Option<String>,
}

pub(super) enum Resolution {
    Existing(Staged, String),
    Create,
}

pub(super) type Existing = HashMap<(String, String), (String, String)>;

/// [`submission_vs_existing`] against what exists (committed, or earlier in this batch).
pub(super) fn resolve(spec: &JobSpec, item: &Item, by_key: &Existing, by_name: &Existing) -> Resolution {
    let ns = &spec.namespace;
    let by_key = item.key.as_deref().and_then(|k| Some((Taken::Key(k), by_key.get(&(ns.clone(), k.to_string()))?)));
    let by_name = || {
        let name = spec.name.as_deref()?;
        Some((Taken::Name { name, namespace: ns }, by_name.get(&(ns.clone(), name.to_string()))?))
    };
    let Some((taken, (id, fp))) = by_key.or_else(by_name) else { return Resolution::Create };
    match submission_vs_existing(taken, item.explicit_key, *fp == item.fingerprint) {
        Ok(()) => Resolution::Existing(Staged::Replay(id.clone()), id.clone()),
        Err(c) => Resolution::Existing(Staged::Failed(c), id.clone()),
    }
}

/// Existing jobs with the keys and names of the items in `todo`, in two index lookups.
pub(super) async fn lookup_existing(
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

impl PostgresStore {
    /// Inserts the jobs `inserts` and, for those with no trigger, their one run due now (held
    /// while the job is paused; its fair turn as [`limits::turns_for`] gives it), and queues the
    /// runs-ready notice, all in one statement. Returns the ids of the jobs actually inserted (a
    /// job whose name or key a concurrent transaction took first is left out, and so is its
    /// run), and where the ready runs sort, for the claim cursors once they are committed.
    async fn insert_jobs(
        &self,
        conn: &mut sqlx::PgConnection,
        jobs: &[JobCreate],
        items: &[Item],
        inserts: &[(usize, String, String)],
        now: Timestamp,
    ) -> Result<(HashSet<String>, Vec<ReadyKey>)> {
        if inserts.is_empty() {
            return Ok((HashSet::new(), Vec::new()));
        }
        // Sorted by name, so concurrent batches take the unique-index entries in one order.
        let mut order: Vec<&(usize, String, String)> = inserts.iter().collect();
        order.sort_by(|a, b| (&jobs[a.0].spec.namespace, &a.2).cmp(&(&jobs[b.0].spec.namespace, &b.2)));
        let mut c = JobCols::default();
        let mut runs: Vec<(usize, NewRun)> = Vec::new(); // (row, run)
        for (row, (i, id, name)) in order.into_iter().enumerate() {
            let spec = &jobs[*i].spec;
            let snap = JobSnapshot::from_spec(id, spec);
            if spec.triggers.is_empty() {
                // No trigger: one run, due now (held until resume when created paused).
                runs.push((row, NewRun::untriggered(snap.clone(), now, spec.paused, false)));
            }
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
            c.limits.push(snap.limits);
            c.paused.push(spec.paused);
            c.key.push(items[*i].key.clone());
            c.fingerprint.push(items[*i].fingerprint.clone());
            c.pause_after_failures.push(spec.pause_after_failures.map(i64::from));
            c.run_id.push(None);
            c.fair_key.push(None);
            c.turn.push(None);
        }
        let refs: Vec<&NewRun> = runs.iter().map(|(_, r)| r).collect();
        let turns = limits::turns_for(&mut *conn, &refs, self.cursors.lowest(us(now)).as_ref()).await?;
        let mut ready = Vec::with_capacity(runs.len());
        for ((row, r), (fair_key, turn)) in runs.iter().zip(turns) {
            if !r.held {
                ready.push(ReadyKey { neg_priority: -r.job.priority, turn, scheduled_for: us(now), id: r.id.clone() });
            }
            c.run_id[*row] = Some(r.id.clone());
            c.fair_key[*row] = Some(fair_key);
            c.turn[*row] = Some(turn);
        }
        // A run due now that is not held makes runs ready (the notice goes out at commit).
        let notify = runs.iter().any(|(_, r)| !r.held);
        let ids: Vec<Option<String>> = sqlx::query_scalar(
            "WITH u AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::text[], $12::bool[], $13::text[], \
             $14::text[], $15::text[], $17::int8[], $18::text[], $19::text[], $20::int8[]) \
             AS u(id, namespace, name, handler, payload, priority, max_attempts, initial_delay_us, max_delay_us, \
             timeout_us, overlap, paused, idempotency_key, fingerprint, limits, pause_after_failures, run_id, \
             fair_key, turn)), \
             j AS (INSERT INTO jobs (id, namespace, name, handler, payload, priority, max_attempts, \
             initial_delay_us, max_delay_us, timeout_us, overlap, paused, idempotency_key, fingerprint, limits, \
             pause_after_failures, created_at, updated_at) \
             SELECT id, namespace, name, handler, payload, priority, max_attempts, initial_delay_us, max_delay_us, \
             timeout_us, overlap, paused, idempotency_key, fingerprint, limits, pause_after_failures, $16, $16 \
             FROM u ON CONFLICT DO NOTHING RETURNING id), \
             r AS (INSERT INTO runs (id, job_id, trigger_id, fire_time, namespace, handler, payload, priority, \
             timeout_us, max_attempts, initial_delay_us, max_delay_us, overlap, scheduled_for, state, reason, note, \
             finished_at, manual, held, blocked, created_at, limits, fair_key, turn) \
             SELECT u.run_id, u.id, NULL::text, $16, u.namespace, u.handler, u.payload, u.priority, u.timeout_us, \
             u.max_attempts, u.initial_delay_us, u.max_delay_us, u.overlap, $16, 'pending', NULL::text, \
             NULL::text, NULL::int8, false, u.paused, false, $16, u.limits, u.fair_key, u.turn FROM u \
             WHERE u.run_id IS NOT NULL AND u.id IN (SELECT id FROM j)) \
             SELECT id FROM j UNION ALL SELECT NULL::text FROM (SELECT pg_notify($21, $22) WHERE $23) AS n",
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
        .bind(c.limits)
        .bind(us(now))
        .bind(c.pause_after_failures)
        .bind(c.run_id)
        .bind(c.fair_key)
        .bind(c.turn)
        .bind(READY_CHANNEL)
        .bind(self.schema.as_deref().unwrap_or_default())
        .bind(notify)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
        Ok((ids.into_iter().flatten().collect(), ready))
    }
}

#[derive(Default)]
pub(super) struct JobCols {
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
    limits: Vec<String>,
    pause_after_failures: Vec<Option<i64>>,
    /// The run of a job with no trigger.
    run_id: Vec<Option<String>>,
    fair_key: Vec<Option<String>>,
    turn: Vec<Option<i64>>,
}

/// [`Store::job_create_many`].
pub(super) async fn create_many(
    s: &PostgresStore,
    jobs: Vec<JobCreate>,
    now: Timestamp,
) -> Result<Vec<Result<JobCreated>>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut tries = 0;
    let staged = loop {
        tries += 1;
        match s.create_batch(&jobs, now).await {
            Err(e) if is_retryable(&e) && tries < 4 => continue,
            other => break other?,
        }
    };
    // Replays are read back after the commit (they were committed earlier).
    let mut replays: Vec<String> =
        staged.iter().filter_map(|s| if let Staged::Replay(id) = s { Some(id.clone()) } else { None }).collect();
    replays.sort_unstable();
    replays.dedup();
    let found = s.jobs_by_id(&replays, now).await?;
    Ok(staged
        .into_iter()
        .map(|s| match s {
            Staged::Created(job) => Ok(JobCreated { job: *job, created: true }),
            Staged::Replay(id) => match found.get(&id) {
                Some(job) => Ok(JobCreated { job: job.clone(), created: false }),
                None => Err(StoreError::NotFound(format!("job {id}"))),
            },
            Staged::Failed(c) => Err(c.into()),
            Staged::Invalid(m) => Err(StoreError::Invalid(m)),
        })
        .collect())
}

/// Stores a job's new triggers ([`Store::job_update`]).
pub(super) async fn store_triggers(tx: &mut Tx, id: &str, spec: &JobSpec, now: Timestamp) -> Result<()> {
    insert_triggers(tx, &[(id, spec)], now).await?;
    Ok(())
}

/// Reads the counts of the jobs `ids` toward `pause_after_failures`, for a transaction that
/// holds their row locks.
pub(super) async fn streaks(tx: &mut Tx, ids: &[String]) -> Result<Vec<JobStreak>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT id, pause_after_failures, failure_streak, paused FROM jobs \
         WHERE id = ANY($1) AND pause_after_failures IS NOT NULL",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)
}

/// Counts settled runs (in the order they finished) toward their jobs' `pause_after_failures`
/// ([`streak_write`]), pausing a job when a run completes its streak: in the transaction that
/// settled the runs, which holds the row locks of the jobs `counted` (read by [`streaks`]) and,
/// where a run may have completed a streak, of their triggers.
pub(super) async fn count_settled(
    tx: &mut Tx,
    counted: &[JobStreak],
    settled: &[&RunRow],
    now: Timestamp,
) -> Result<()> {
    let writes: Vec<_> = counted
        .iter()
        .filter_map(|job| {
            let states = settled.iter().filter(|r| r.job_id == job.id).filter_map(|r| r.state().ok());
            streak_write(job, states)
        })
        .collect();
    if writes.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = writes.iter().map(|w| w.job_id.clone()).collect();
    let counts: Vec<i64> = writes.iter().map(|w| w.streak).collect();
    let reasons: Vec<Option<String>> = writes.iter().map(|w| w.pause.clone()).collect();
    sqlx::query(
        "UPDATE jobs SET failure_streak = u_streak, paused = paused OR u_reason IS NOT NULL, \
         paused_reason = COALESCE(u_reason, paused_reason), \
         updated_at = CASE WHEN u_reason IS NULL THEN updated_at ELSE $4 END \
         FROM UNNEST($1::text[], $2::int8[], $3::text[]) AS u(u_id, u_streak, u_reason) WHERE id = ANY($1) AND id = u_id",
    )
    .bind(ids)
    .bind(counts)
    .bind(reasons)
    .bind(us(now))
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    let paused: Vec<String> = writes.into_iter().filter(|w| w.pause.is_some()).map(|w| w.job_id).collect();
    if !paused.is_empty() {
        Shared::hold_jobs(tx, &paused, true).await?;
    }
    Ok(())
}
