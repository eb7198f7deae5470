//! SQLite: triggers (storing them, firing the due ones, the scheduler's next wake-up).

use super::*;
use crate::domain::{BackfillOutcome, BackfillRequest};
use crate::store::fire::{backfill_actions, backfill_due, calendar_names, calendars_of, unknown_calendar};
use std::collections::HashSet;

/// The triggers of a new definition, with their first due times (not yet stored), passing over
/// the times their calendars exclude; `Invalid` when one names no stored calendar.
pub(super) async fn new_triggers(tx: &mut Tx, spec: &JobSpec, now: Timestamp) -> Result<Vec<Trigger>> {
    let loaded = super::calendars::load(tx, &calendar_names(&spec.triggers)).await?;
    if let Some(e) = unknown_calendar(&spec.triggers, &loaded) {
        return Err(e);
    }
    Ok(spec
        .triggers
        .iter()
        .map(|t| Trigger {
            id: new_id(),
            spec: t.clone(),
            next_fire_at: crate::schedule::first_fire_in(t, now, &calendars_of(t, &loaded)),
            fires: 0,
        })
        .collect())
}

/// Stores triggers as `(job_id, paused, trigger)` rows in multi-row statements.
pub(super) async fn insert_triggers(tx: &mut Tx, rows: &[(&str, bool, usize, &Trigger)]) -> Result<()> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO triggers (id, job_id, position, spec, next_fire_at, fires, paused) ",
        );
        q.push_values(chunk, |mut b, (job_id, paused, pos, t)| {
            b.push_bind(t.id.clone())
                .push_bind(job_id.to_string())
                .push_bind(*pos as i64)
                .push_bind(trigger_spec_json(&t.spec))
                .push_bind(t.next_fire_at.map(us))
                .push_bind(0i64)
                .push_bind(*paused);
        });
        q.build().execute(&mut **tx).await.map_err(db_err)?;
    }
    Ok(())
}

/// [`Store::trigger_fire_due`].
pub(super) async fn fire_due(
    s: &SqliteStore,
    now: Timestamp,
    limit: u32,
    misfire_threshold: Duration,
) -> Result<FireReport> {
    let mut tx = s.begin().await?;
    let triggers: Vec<TriggerRow> = sqlx::query_as(&format!(
        "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE paused = 0 AND next_fire_at IS NOT NULL \
         AND next_fire_at <= ? ORDER BY next_fire_at LIMIT ?"
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
    job_ids.sort();
    job_ids.dedup();
    let snaps: Vec<JobSnapshot> = sqlx::query_as(&format!(
        "SELECT {JOB_SNAPSHOT_COLUMNS} FROM jobs WHERE id IN (SELECT value FROM json_each(?))"
    ))
    .bind(serde_json::to_string(&job_ids).expect("ids serialize"))
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err)?;
    let mut active = HashMap::new();
    for s in snaps.iter().filter(|s| s.overlap() != Overlap::Allow) {
        active.insert(s.id.clone(), active_runs(&mut tx, &s.id).await?);
    }
    let jobs: HashMap<String, JobSnapshot> = snaps.into_iter().map(|s| (s.id.clone(), s)).collect();
    let specs = triggers.iter().map(|t| t.spec()).collect::<Result<Vec<_>>>()?;
    let calendars = super::calendars::load(&mut tx, &calendar_names(&specs)).await?;
    let mut actions = fire_actions(&triggers, &jobs, &mut active, &calendars, now, misfire_threshold)?;
    let mut advanced = std::collections::HashSet::new();
    for a in &actions.advances {
        let done =
            sqlx::query("UPDATE triggers SET next_fire_at = ?, fires = fires + ? WHERE id = ? AND next_fire_at = ?")
                .bind(a.new_next)
                .bind(a.fires_added)
                .bind(&a.id)
                .bind(a.old_next)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        if done.rows_affected() == 1 {
            advanced.insert(a.id.clone());
        }
    }
    // Only triggers this pass advanced get runs; another scheduler that got to a trigger
    // first creates that trigger's runs itself.
    let runs: Vec<&NewRun> =
        actions.inserts.iter().filter(|r| r.trigger_id.as_ref().is_some_and(|t| advanced.contains(t))).collect();
    insert_runs(&mut tx, &runs).await?;
    for (id, reason) in &actions.cancel_pending {
        cancel_pending(&mut tx, id, reason, us(now)).await?;
    }
    for id in &actions.cancel_running {
        request_cancel(&mut tx, id).await?;
    }
    tx.commit().await.map_err(db_err)?;
    actions.misfires.retain(|m| advanced.contains(&m.trigger_id));
    Ok(actions.report())
}

/// [`Store::trigger_next_due`].
pub(super) async fn next_due(s: &SqliteStore) -> Result<Option<Timestamp>> {
    s.reader(&s.read).next_due().await
}

/// [`Store::job_backfill`].
pub(super) async fn backfill(
    s: &SqliteStore,
    id: &str,
    req: &BackfillRequest,
    now: Timestamp,
) -> Result<BackfillOutcome> {
    let mut tx = s.begin().await?;
    let job: Option<JobSnapshot> = sqlx::query_as(&format!("SELECT {JOB_SNAPSHOT_COLUMNS} FROM jobs WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
    let job = job.ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
    let (paused, updated_at): (bool, i64) = sqlx::query_as("SELECT paused, updated_at FROM jobs WHERE id = ?")
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
    let triggers: Vec<TriggerRow> =
        sqlx::query_as(&format!("SELECT {TRIGGER_COLUMNS} FROM triggers WHERE job_id = ? ORDER BY position"))
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
    let specs = triggers.iter().map(|t| t.spec()).collect::<Result<Vec<_>>>()?;
    let calendars = super::calendars::load(&mut tx, &calendar_names(&specs)).await?;
    let due = backfill_due(&triggers, &calendars, req, ts(updated_at), now)?;
    let existing = existing_fires(&mut tx, &due, req).await?;
    let policy = req.overlap.unwrap_or_default();
    let active = if policy == Overlap::Allow { ActiveRuns::default() } else { active_runs(&mut tx, id).await? };
    let (actions, _) = backfill_actions(&job, paused, &due, &existing, policy, active, now);
    let created = insert_runs(&mut tx, &actions.inserts.iter().collect::<Vec<_>>()).await?;
    for (run, reason) in &actions.cancel_pending {
        cancel_pending(&mut tx, run, reason, us(now)).await?;
    }
    for run in &actions.cancel_running {
        request_cancel(&mut tx, run).await?;
    }
    tx.commit().await.map_err(db_err)?;
    Ok(BackfillOutcome { created, existing: due.len() as u64 - created })
}

/// The `(trigger_id, fire_time)` of the runs the triggers in `due` have in `[from, until)`
/// (a range scan of the once-per-due-time key's index).
async fn existing_fires(
    tx: &mut Tx,
    due: &[(String, Timestamp)],
    req: &BackfillRequest,
) -> Result<HashSet<(String, i64)>> {
    let ids = crate::store::fire::trigger_ids(due);
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT trigger_id, fire_time FROM runs WHERE trigger_id IN (SELECT value FROM json_each(?)) \
         AND fire_time >= ? AND fire_time < ?",
    )
    .bind(serde_json::to_string(&ids).expect("ids serialize"))
    .bind(us(req.from))
    .bind(us(req.until))
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(rows.into_iter().collect())
}
