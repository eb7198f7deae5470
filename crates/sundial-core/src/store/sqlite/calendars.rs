//! SQLite: calendars (storing them; a write recomputes the next due times of the triggers that
//! name the calendar, see `store/fire.rs` for why).

use super::*;

/// Writes the new due times of triggers whose calendar changed.
pub(super) async fn move_triggers(tx: &mut Tx, moved: Vec<(String, Option<i64>)>) -> Result<()> {
    for (id, next) in moved {
        let q = sqlx::query("UPDATE triggers SET next_fire_at = ? WHERE id = ?").bind(next).bind(id);
        q.execute(&mut **tx).await.map_err(db_err)?;
    }
    Ok(())
}
