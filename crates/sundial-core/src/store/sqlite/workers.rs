//! SQLite: workers (registration, sign of life, deregistration).

use super::*;

/// A claim or heartbeat is a sign of life: a dead worker comes back `active`. Draining
/// (deregistered) and unknown workers get `NotFound`.
pub(super) async fn touch_worker(tx: &mut Tx, id: &str, now: Timestamp) -> Result<WorkerScope> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "UPDATE workers SET last_heartbeat = ?, state = 'active' WHERE id = ? AND state != 'draining' \
         RETURNING handlers, namespaces",
    )
    .bind(us(now))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_err)?;
    let (handlers, namespaces) = row.ok_or_else(|| StoreError::NotFound(format!("worker {id}")))?;
    WorkerScope::parse(&handlers, namespaces.as_deref())
}

/// [`Store::worker_register`].
pub(super) async fn register(
    s: &SqliteStore,
    name: &str,
    handlers: &[String],
    capacity: u32,
    namespaces: Option<&[String]>,
    now: Timestamp,
) -> Result<Worker> {
    let id = new_id();
    let mut tx = s.begin().await?;
    sqlx::query(
        "INSERT INTO workers (id, name, handlers, capacity, last_heartbeat, state, created_at, namespaces) \
         VALUES (?,?,?,?,?,'active',?,?)",
    )
    .bind(&id)
    .bind(name)
    .bind(serde_json::to_string(handlers).expect("handlers serialize"))
    .bind(capacity as i64)
    .bind(us(now))
    .bind(us(now))
    .bind(namespaces.map(|n| serde_json::to_string(n).expect("namespaces serialize")))
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    s.worker_get(&id).await
}

/// [`Store::worker_get`].
pub(super) async fn get(s: &SqliteStore, id: &str) -> Result<Worker> {
    // SQLite: on the writer, so a worker just registered is seen at once.
    s.reader(&s.write).worker(id).await
}

/// [`Store::worker_list`].
pub(super) async fn list(s: &SqliteStore) -> Result<Vec<Worker>> {
    s.reader(&s.read).workers().await
}

/// [`Store::worker_deregister`].
pub(super) async fn deregister(s: &SqliteStore, id: &str, now: Timestamp) -> Result<()> {
    let mut tx = s.begin().await?;
    let done = sqlx::query("UPDATE workers SET state = 'draining', last_heartbeat = ? WHERE id = ?")
        .bind(us(now))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("worker {id}")));
    }
    tx.commit().await.map_err(db_err)
}

/// [`Store::worker_forget_dead`].
pub(super) async fn forget_dead(s: &SqliteStore, before: Timestamp, limit: u32) -> Result<u64> {
    let gone = sqlx::query(
        "DELETE FROM workers WHERE id IN (SELECT id FROM workers w WHERE w.state = 'dead' AND w.last_heartbeat < ? \
         AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.worker_id = w.id AND r.state = 'running') LIMIT ?)",
    )
    .bind(us(before))
    .bind(i64::from(limit))
    .execute(&s.write)
    .await
    .map_err(db_err)?;
    Ok(gone.rows_affected())
}
