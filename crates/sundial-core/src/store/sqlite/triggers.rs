//! SQLite: triggers (storing them, firing the due ones).

use super::*;
use crate::store::fire::{calendar_names, calendars_of, unknown_calendar};

/// The triggers of a new definition, with their first due times (not yet stored), passing over
/// the times their calendars exclude; `Invalid` when one names no stored calendar.
pub(super) async fn new_triggers(tx: &mut Tx, spec: &JobSpec, now: Timestamp) -> Result<Vec<Trigger>> {
    let loaded = Shared::calendars(tx, &calendar_names(&spec.triggers), false).await?;
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
pub(super) async fn fire_due(s: &SqliteStore, now: Timestamp, limit: u32, misfire: Duration) -> Result<FireReport> {
    let mut tx = s.begin().await?;
    let (triggers, job_ids) = Shared::due_triggers(&mut tx, now, limit).await?;
    if triggers.is_empty() {
        return Ok(FireReport::default());
    }
    let sql = format!("SELECT {JOB_SNAPSHOT_COLUMNS} FROM jobs WHERE id IN (SELECT value FROM json_each(?))");
    let q = sqlx::query_as(&sql).bind(serde_json::to_string(&job_ids).expect("ids serialize"));
    let snaps: Vec<JobSnapshot> = q.fetch_all(&mut *tx).await.map_err(db_err)?;
    let deciding: Vec<String> = snaps.iter().filter(|s| s.overlap() != Overlap::Allow).map(|s| s.id.clone()).collect();
    let mut active = Shared::active_runs(&mut tx, &deciding).await?;
    let jobs: HashMap<String, JobSnapshot> = snaps.into_iter().map(|s| (s.id.clone(), s)).collect();
    let specs = triggers.iter().map(|t| t.spec()).collect::<Result<Vec<_>>>()?;
    let calendars = Shared::calendars(&mut tx, &calendar_names(&specs), false).await?;
    let mut actions = fire_actions(&triggers, &jobs, &mut active, &calendars, now, misfire)?;
    let mut advanced = std::collections::HashSet::new();
    let advance = "UPDATE triggers SET next_fire_at = ?, fires = fires + ? WHERE id = ? AND next_fire_at = ?";
    for a in &actions.advances {
        let q = sqlx::query(advance).bind(a.new_next).bind(a.fires_added).bind(&a.id).bind(a.old_next);
        if q.execute(&mut *tx).await.map_err(db_err)?.rows_affected() == 1 {
            advanced.insert(a.id.clone());
        }
    }
    // Only triggers this pass advanced get runs; another scheduler that got to a trigger
    // first creates that trigger's runs itself.
    let runs: Vec<&NewRun> =
        actions.inserts.iter().filter(|r| r.trigger_id.as_ref().is_some_and(|t| advanced.contains(t))).collect();
    insert_runs(&mut tx, &runs).await?;
    cancel_pending(&mut tx, &actions.cancel_pending, us(now)).await?;
    Shared::request_cancel(&mut tx, &actions.cancel_running).await?;
    tx.commit().await.map_err(db_err)?;
    actions.misfires.retain(|m| advanced.contains(&m.trigger_id));
    Ok(actions.report())
}
