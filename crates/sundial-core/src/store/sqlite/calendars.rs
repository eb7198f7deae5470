//! SQLite: calendars (storing them; a write recomputes the next due times of the triggers that
//! name the calendar, see `store/fire.rs` for why).

use super::*;
use crate::domain::CalendarDef;
use crate::schedule::Calendar;
use crate::store::fire::{calendar_names, calendars_of};
use crate::store::rows::{compile_calendars, CalendarRow, CALENDAR_COLUMNS};

/// The calendars among `names` that exist, compiled (one read in the caller's transaction).
pub(super) async fn load(tx: &mut Tx, names: &[String]) -> Result<HashMap<String, Calendar>> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<CalendarRow> = sqlx::query_as(&format!(
        "SELECT {CALENDAR_COLUMNS} FROM calendars WHERE name IN (SELECT value FROM json_each(?))"
    ))
    .bind(serde_json::to_string(names).expect("names serialize"))
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)?;
    compile_calendars(rows)
}

/// [`Store::calendar_put`].
pub(super) async fn put(
    s: &SqliteStore,
    calendar: &Calendar,
    exclude: &[serde_json::Value],
    now: Timestamp,
) -> Result<CalendarDef> {
    let mut tx = s.begin().await?;
    let row: CalendarRow = sqlx::query_as(&format!(
        "INSERT INTO calendars (name, timezone, exclude, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4) \
         ON CONFLICT (name) DO UPDATE SET timezone = excluded.timezone, exclude = excluded.exclude, \
         updated_at = excluded.updated_at RETURNING {CALENDAR_COLUMNS}"
    ))
    .bind(&calendar.name)
    .bind(&calendar.timezone)
    .bind(serde_json::to_string(exclude).expect("exclude serializes"))
    .bind(us(now))
    .fetch_one(&mut *tx)
    .await
    .map_err(db_err)?;
    // Triggers still to plan a time at or before `now` read the calendar when they do.
    let triggers: Vec<TriggerRow> = sqlx::query_as(&format!(
        "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE next_fire_at > ? \
         AND EXISTS (SELECT 1 FROM json_each(triggers.spec, '$.calendars') WHERE value = ?)"
    ))
    .bind(us(now))
    .bind(&calendar.name)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err)?;
    let specs = triggers.iter().map(|t| t.spec()).collect::<Result<Vec<_>>>()?;
    let loaded = load(&mut tx, &calendar_names(&specs)).await?;
    for (t, spec) in triggers.iter().zip(&specs) {
        let next =
            crate::schedule::next_fire_after_change(spec, t.next_fire_at.map(ts), now, &calendars_of(spec, &loaded));
        if next.map(us) != t.next_fire_at {
            sqlx::query("UPDATE triggers SET next_fire_at = ? WHERE id = ?")
                .bind(next.map(us))
                .bind(&t.id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
    }
    tx.commit().await.map_err(db_err)?;
    row.into_def()
}

/// [`Store::calendar_get`].
pub(super) async fn get(s: &SqliteStore, name: &str) -> Result<CalendarDef> {
    s.reader(&s.read).calendar(name).await
}

/// [`Store::calendar_list`].
pub(super) async fn list(s: &SqliteStore) -> Result<Vec<CalendarDef>> {
    s.reader(&s.read).calendars().await
}

/// [`Store::calendar_delete`].
pub(super) async fn delete(s: &SqliteStore, name: &str) -> Result<()> {
    let mut tx = s.begin().await?;
    let user: Option<(String,)> = sqlx::query_as(
        "SELECT job_id FROM triggers WHERE EXISTS \
         (SELECT 1 FROM json_each(triggers.spec, '$.calendars') WHERE value = ?) LIMIT 1",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err)?;
    if let Some((job_id,)) = user {
        return Err(crate::store::plan::calendar_in_use(name, &job_id));
    }
    let done =
        sqlx::query("DELETE FROM calendars WHERE name = ?").bind(name).execute(&mut *tx).await.map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("calendar {name}")));
    }
    Ok(())
}
