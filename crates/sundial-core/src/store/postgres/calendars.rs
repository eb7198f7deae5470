//! PostgreSQL: calendars (storing them; a write recomputes the next due times of the triggers
//! that name the calendar, see `store/fire.rs` for why).
//!
//! Lock order, as everywhere: triggers, then calendars. A write that names calendars (a job's
//! triggers) reads them `FOR SHARE`; a delete locks the calendar `FOR UPDATE` before it looks for
//! triggers naming it, so a trigger cannot come to name a calendar being deleted.

use super::*;
use crate::domain::CalendarDef;
use crate::schedule::Calendar;
use crate::store::fire::{calendar_names, calendars_of};
use crate::store::rows::{compile_calendars, CalendarRow, CALENDAR_COLUMNS};

/// The calendars among `names` that exist, compiled, read `FOR SHARE` when `share` (the caller is
/// about to store triggers naming them).
pub(super) async fn load(tx: &mut Tx, names: &[String], share: bool) -> Result<HashMap<String, Calendar>> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let lock = if share { " ORDER BY name FOR SHARE" } else { "" };
    let rows: Vec<CalendarRow> =
        sqlx::query_as(&format!("SELECT {CALENDAR_COLUMNS} FROM calendars WHERE name = ANY($1){lock}"))
            .bind(names)
            .fetch_all(&mut **tx)
            .await
            .map_err(db_err)?;
    compile_calendars(rows)
}

/// [`Store::calendar_put`].
pub(super) async fn put(
    s: &PostgresStore,
    calendar: &Calendar,
    exclude: &[serde_json::Value],
    now: Timestamp,
) -> Result<CalendarDef> {
    let mut tx = s.begin().await?;
    // Triggers first (the lock order); those still to plan a time at or before `now` read the
    // calendar when they do.
    let triggers: Vec<TriggerRow> = sqlx::query_as(&format!(
        "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE next_fire_at > $1 AND spec::jsonb -> 'calendars' ? $2 \
         ORDER BY id FOR UPDATE"
    ))
    .bind(us(now))
    .bind(&calendar.name)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err)?;
    let row: CalendarRow = sqlx::query_as(&format!(
        "INSERT INTO calendars (name, timezone, exclude, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
         ON CONFLICT (name) DO UPDATE SET timezone = EXCLUDED.timezone, exclude = EXCLUDED.exclude, \
         updated_at = EXCLUDED.updated_at RETURNING {CALENDAR_COLUMNS}"
    ))
    .bind(&calendar.name)
    .bind(&calendar.timezone)
    .bind(serde_json::to_string(exclude).expect("exclude serializes"))
    .bind(us(now))
    .fetch_one(&mut *tx)
    .await
    .map_err(db_err)?;
    let specs = triggers.iter().map(|t| t.spec()).collect::<Result<Vec<_>>>()?;
    let loaded = load(&mut tx, &calendar_names(&specs), false).await?;
    let (mut ids, mut nexts) = (Vec::new(), Vec::new());
    for (t, spec) in triggers.iter().zip(&specs) {
        let next =
            crate::schedule::next_fire_after_change(spec, t.next_fire_at.map(ts), now, &calendars_of(spec, &loaded));
        if next.map(us) != t.next_fire_at {
            ids.push(t.id.clone());
            nexts.push(next.map(us));
        }
    }
    if !ids.is_empty() {
        sqlx::query(
            "UPDATE triggers SET next_fire_at = u.next FROM UNNEST($1::text[], $2::int8[]) AS u(id, next) \
             WHERE triggers.id = u.id",
        )
        .bind(ids)
        .bind(nexts)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)?;
    row.into_def()
}

/// [`Store::calendar_get`].
pub(super) async fn get(s: &PostgresStore, name: &str) -> Result<CalendarDef> {
    s.reader().calendar(name).await
}

/// [`Store::calendar_list`].
pub(super) async fn list(s: &PostgresStore) -> Result<Vec<CalendarDef>> {
    s.reader().calendars().await
}

/// [`Store::calendar_delete`].
pub(super) async fn delete(s: &PostgresStore, name: &str) -> Result<()> {
    let mut tx = s.begin().await?;
    let found: Option<(String,)> = sqlx::query_as("SELECT name FROM calendars WHERE name = $1 FOR UPDATE")
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
    if found.is_none() {
        return Err(StoreError::NotFound(format!("calendar {name}")));
    }
    let user: Option<(String,)> =
        sqlx::query_as("SELECT job_id FROM triggers WHERE spec::jsonb -> 'calendars' ? $1 LIMIT 1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
    if let Some((job_id,)) = user {
        return Err(crate::store::plan::calendar_in_use(name, &job_id));
    }
    sqlx::query("DELETE FROM calendars WHERE name = $1").bind(name).execute(&mut *tx).await.map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(())
}
