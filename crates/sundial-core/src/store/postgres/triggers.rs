//! PostgreSQL: triggers (storing them, firing the due ones with `SKIP LOCKED`).

use super::*;
use crate::store::fire::{calendar_names, calendars_of, unknown_calendar};

/// Inserts the triggers of several jobs in one statement; returns them per job id.
pub(super) async fn insert_triggers(
    tx: &mut Tx,
    jobs: &[(&str, &JobSpec)],
    now: Timestamp,
) -> Result<HashMap<String, Vec<Trigger>>> {
    let mut out: HashMap<String, Vec<Trigger>> = HashMap::new();
    let names = calendar_names(jobs.iter().flat_map(|(_, spec)| spec.triggers.iter()));
    let loaded = Shared::calendars(tx, &names, true).await?;
    // The whole batch fails (a caller with several jobs, such as Kafka ingest, then stores them
    // one by one); the API checks names first, so only other entry points get here.
    if let Some(e) = jobs.iter().find_map(|(_, spec)| unknown_calendar(&spec.triggers, &loaded)) {
        return Err(e);
    }
    let (mut ids, mut job_ids, mut positions, mut specs, mut nexts, mut paused) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (job_id, spec) in jobs {
        for (pos, t) in spec.triggers.iter().enumerate() {
            let id = new_id();
            let next = crate::schedule::first_fire_in(t, now, &calendars_of(t, &loaded));
            ids.push(id.clone());
            job_ids.push(job_id.to_string());
            positions.push(pos as i64);
            specs.push(trigger_spec_json(t));
            nexts.push(next.map(us));
            paused.push(spec.paused);
            out.entry(job_id.to_string()).or_default().push(Trigger {
                id,
                spec: t.clone(),
                next_fire_at: next,
                fires: 0,
            });
        }
    }
    if ids.is_empty() {
        return Ok(out);
    }
    let sql = "INSERT INTO triggers (id, job_id, position, spec, next_fire_at, fires, paused) \
               SELECT u.id, u.job_id, u.position, u.spec, u.next_fire_at, 0, u.paused \
               FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::int8[], $6::bool[]) \
               AS u(id, job_id, position, spec, next_fire_at, paused)";
    let q = sqlx::query(sql).bind(ids).bind(job_ids).bind(positions).bind(specs).bind(nexts).bind(paused);
    q.execute(&mut **tx).await.map_err(db_err)?;
    Ok(out)
}

/// [`Store::trigger_fire_due`].
pub(super) async fn fire_due(s: &PostgresStore, now: Timestamp, limit: u32, misfire: Duration) -> Result<FireReport> {
    let mut tx = s.begin().await?;
    let (triggers, job_ids) = Shared::due_triggers(&mut tx, now, limit).await?;
    if triggers.is_empty() {
        return Ok(FireReport::default());
    }
    // Jobs with an overlap policy: lock their rows (sorted), so overlap decisions for one job
    // are serial across nodes, and read their active runs after the lock.
    let mut snaps: Vec<JobSnapshot> = sqlx::query_as(&format!(
        "SELECT {JOB_SNAPSHOT_COLUMNS} FROM jobs WHERE id = ANY($1) AND overlap <> 'allow' ORDER BY id FOR UPDATE"
    ))
    .bind(&job_ids)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err)?;
    let locked: Vec<String> = snaps.iter().map(|s| s.id.clone()).collect();
    let allow: Vec<JobSnapshot> =
        sqlx::query_as(&format!("SELECT {JOB_SNAPSHOT_COLUMNS} FROM jobs WHERE id = ANY($1) AND overlap = 'allow'"))
            .bind(&job_ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
    snaps.extend(allow);
    let mut active = Shared::active_runs(&mut tx, &locked).await?;
    let jobs: HashMap<String, JobSnapshot> = snaps.into_iter().map(|s| (s.id.clone(), s)).collect();
    let specs = triggers.iter().map(|t| t.spec()).collect::<Result<Vec<_>>>()?;
    let calendars = Shared::calendars(&mut tx, &calendar_names(&specs), false).await?;
    let mut actions = fire_actions(&triggers, &jobs, &mut active, &calendars, now, misfire)?;
    if !actions.advances.is_empty() {
        let (mut ids, mut old, mut new, mut added) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for a in &actions.advances {
            ids.push(a.id.clone());
            old.push(a.old_next);
            new.push(a.new_next);
            added.push(a.fires_added);
        }
        let advanced: Vec<String> = sqlx::query_scalar(
            "UPDATE triggers SET next_fire_at = u.new_next, fires = fires + u.added \
             FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[]) AS u(trigger_id, old_next, new_next, added) \
             WHERE triggers.id = ANY($1) AND triggers.id = u.trigger_id AND triggers.next_fire_at = u.old_next \
             RETURNING triggers.id",
        )
        .bind(ids)
        .bind(old)
        .bind(new)
        .bind(added)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        // A trigger another scheduler advanced first: its runs are that scheduler's to create.
        let advanced: HashSet<String> = advanced.into_iter().collect();
        actions.misfires.retain(|m| advanced.contains(&m.trigger_id));
        insert_runs(
            &mut tx,
            actions.inserts.iter().filter(|r| r.trigger_id.as_ref().is_some_and(|t| advanced.contains(t))),
        )
        .await?;
    }
    cancel_pending(&mut tx, &actions.cancel_pending, us(now)).await?;
    Shared::request_cancel(&mut tx, &actions.cancel_running).await?;
    let ready = actions.inserts.iter().any(|r| r.state == RunState::Pending && !r.blocked);
    if ready {
        s.notify_ready(&mut tx).await?;
    }
    tx.commit().await.map_err(db_err)?;
    if ready {
        s.ready_anywhere();
    }
    Ok(actions.report())
}
