//! PostgreSQL: calendars (storing them; a write recomputes the next due times of the triggers
//! that name the calendar, see `store/fire.rs` for why).
//!
//! Lock order, as everywhere: triggers, then calendars. A write that names calendars (a job's
//! triggers) reads them `FOR SHARE`; a delete locks the calendar `FOR UPDATE` before it looks for
//! triggers naming it, so a trigger cannot come to name a calendar being deleted.

use super::*;
use crate::schedule::Calendar;

/// The calendars among `names` that exist, compiled, read `FOR SHARE` when `share` (the caller is
/// about to store triggers naming them).
pub(super) async fn load(tx: &mut Tx, names: &[String], share: bool) -> Result<HashMap<String, Calendar>> {
    Shared::calendars(tx, names, share).await
}

/// Writes the new due times of triggers whose calendar changed, in one statement.
pub(super) async fn move_triggers(tx: &mut Tx, moved: Vec<(String, Option<i64>)>) -> Result<()> {
    if moved.is_empty() {
        return Ok(());
    }
    let (ids, nexts): (Vec<String>, Vec<Option<i64>>) = moved.into_iter().unzip();
    let sql = "UPDATE triggers SET next_fire_at = u.next FROM UNNEST($1::text[], $2::int8[]) AS u(id, next) \
               WHERE triggers.id = ANY($1) AND triggers.id = u.id";
    sqlx::query(sql).bind(ids).bind(nexts).execute(&mut **tx).await.map_err(db_err)?;
    Ok(())
}
