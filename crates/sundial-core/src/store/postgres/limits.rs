//! PostgreSQL: limits: the claim under flow control, and the fair turns of new runs (storing
//! limits is shared, in `store::writes`). The rules are in [`crate::store::limits`]; why the
//! claim's count is exact across nodes is written there too.

use super::*;
use crate::domain::limit::LimitBounds;
use crate::store::limits::{
    defs_of, fair_key_of, next_page_size, scan_budget, turns, window_floor_us, Candidate, ClaimState, LimitRow,
    CANDIDATE_COLUMNS, ENDED_KEPT_US, LIMIT_COLUMNS,
};

/// The first key of the two-key advisory lock form: sundial's limit keys (the second is the hash
/// of the store's schema and the key). Advisory locks are per database, so the schema is hashed
/// in: two stores in one database (the test suites' schemas) never hold each other's keys back.
/// A hash collision only makes two keys share a lock.
const LIMIT_LOCK_CLASS: i32 = 0x5344_4c4b;

/// Claims up to `p.max` due pending runs of `handlers` under flow control, in fair order, and
/// leases them. Runs another claimer has locked are skipped (`SKIP LOCKED`), and so are runs of
/// a key another claimer is counting (a tried advisory lock). Only runs of `scope`'s namespaces
/// when it names some.
///
/// Reading starts at `from` in the ready order when given (see [`crate::store::cursor`]); what
/// the claim read is returned for the cursor to move.
pub(super) async fn claim_rows(
    tx: &mut Tx,
    p: &ClaimParams,
    scope: &WorkerScope,
    from: Option<&ReadyKey>,
) -> Result<(Vec<RunRow>, ClaimRead)> {
    let mut st = ClaimState::default();
    let budget = scan_budget(p.max);
    let mut size = p.max as usize;
    // A row comparison on the columns of `runs_ready_order`: the index scan starts at the cursor.
    let after = if from.is_some() { "AND (-priority, turn, scheduled_for, id) >= ($6, $7, $8, $9)" } else { "" };
    let sql = format!(
        "SELECT {CANDIDATE_COLUMNS}, -priority AS neg_priority, turn, scheduled_for \
         FROM runs WHERE state = 'pending' AND NOT held AND NOT blocked \
         AND scheduled_for <= $1 AND handler = ANY($2) AND NOT (id = ANY($3)) \
         AND ($5::text[] IS NULL OR namespace = ANY($5)) {after} \
         ORDER BY -priority, turn, scheduled_for, id LIMIT $4 FOR UPDATE SKIP LOCKED"
    );
    let mut read: Vec<ReadyKey> = Vec::new();
    loop {
        let mut q = sqlx::query_as::<_, PageRow>(&sql)
            .bind(us(p.now))
            .bind(&scope.handlers)
            .bind(&st.seen)
            .bind(size as i64)
            .bind(&scope.namespaces);
        if let Some(k) = from {
            q = q.bind(k.neg_priority).bind(k.turn).bind(k.scheduled_for).bind(&k.id);
        }
        let rows: Vec<PageRow> = q.fetch_all(&mut **tx).await.map_err(db_err)?;
        let mut page = Vec::with_capacity(rows.len());
        for r in rows {
            read.push(r.key);
            page.push(r.candidate);
        }
        let exhausted = page.len() < size;
        let unknown = st.unknown_keys(&page);
        if !unknown.is_empty() {
            let rows: Vec<LimitRow> =
                sqlx::query_as(&format!("SELECT {LIMIT_COLUMNS} FROM limits WHERE key = ANY($1) OR pattern"))
                    .bind(&unknown)
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(db_err)?;
            let governed = st.resolve(unknown, &defs_of(rows)?);
            if !governed.is_empty() {
                count_governed(tx, &mut st, governed, p.now).await?;
            }
        }
        let claimed = st.admit_page(&page, p.max) as usize;
        if claimed >= p.max as usize || exhausted || st.seen.len() >= budget {
            break;
        }
        size = next_page_size(p.max, claimed, st.seen.len());
    }
    let rows = write_plan(tx, &st, p).await?;
    let mut read = ClaimRead::of(read, &st.plan.claim);
    if let Some(to) = read.moves_to() {
        // A run not due yet sorts after the cursor unless its priority is higher or its turn
        // earlier (its due time is later than any the claim read): only those make it lapse.
        let (next,): (Option<i64>,) = sqlx::query_as(
            "SELECT MIN(scheduled_for) FROM runs WHERE state = 'pending' AND NOT held AND NOT blocked \
             AND scheduled_for > $1 AND (-priority, turn) < ($2, $3)",
        )
        .bind(us(p.now))
        .bind(to.neg_priority)
        .bind(to.turn)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_err)?;
        read.next_due = next;
    }
    Ok((rows, read))
}

/// A candidate of a claim's page with its place in the ready order.
#[derive(sqlx::FromRow)]
struct PageRow {
    #[sqlx(flatten)]
    candidate: Candidate,
    #[sqlx(flatten)]
    key: ReadyKey,
}

/// Tries each governed key's lock, then counts the locked ones in a statement of its own (so
/// its snapshot includes every claim committed by an earlier holder of the lock).
async fn count_governed(
    tx: &mut Tx,
    st: &mut ClaimState,
    governed: Vec<(String, LimitBounds)>,
    now: Timestamp,
) -> Result<()> {
    let keys: Vec<String> = governed.iter().map(|(k, _)| k.clone()).collect();
    let locked: Vec<(String,)> = sqlx::query_as(
        "SELECT k FROM UNNEST($1::text[]) AS k \
             WHERE pg_try_advisory_xact_lock($2, hashtext(current_schema() || '/' || k))",
    )
    .bind(&keys)
    .bind(LIMIT_LOCK_CLASS)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)?;
    let locked: HashSet<String> = locked.into_iter().map(|(k,)| k).collect();
    let (mine, busy): (Vec<_>, Vec<_>) = governed.into_iter().partition(|(k, _)| locked.contains(k));
    let floors: Vec<i64> = mine.iter().map(|(_, b)| window_floor_us(b, now)).collect();
    let names: Vec<String> = mine.iter().map(|(k, _)| k.clone()).collect();
    let counts: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT k, (SELECT COUNT(*) FROM run_limits r WHERE r.key = k AND (r.ended_at IS NULL OR r.ended_at > $3)), \
         (SELECT COUNT(*) FROM limit_starts s WHERE s.key = k AND s.started_at > f) \
         FROM UNNEST($1::text[], $2::int8[]) AS u(k, f)",
    )
    .bind(&names)
    .bind(&floors)
    .bind(us(now))
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)?;
    st.counted_rows(mine, counts, busy.into_iter().map(|(k, _)| k).collect());
    Ok(())
}

/// Leases the runs the claim chose; records why held runs wait; logs and prunes rate starts.
async fn write_plan(tx: &mut Tx, st: &ClaimState, p: &ClaimParams) -> Result<Vec<RunRow>> {
    let plan = &st.plan;
    plan.count_held();
    let rows: Vec<RunRow> = if plan.claim.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(&format!(
            "UPDATE runs SET state = 'running', attempt = attempt + 1, worker_id = $1, lease_expires_at = $2, \
             started_at = $3, reason = note, worker_name = (SELECT name FROM workers WHERE id = $1) \
             WHERE id = ANY($4) RETURNING {RUN_COLUMNS}"
        ))
        .bind(&p.worker_id)
        .bind(us(p.now) + dur_us(p.lease))
        .bind(us(p.now))
        .bind(&plan.claim)
        .fetch_all(&mut **tx)
        .await
        .map_err(db_err)?
    };
    if !plan.held_reasons.is_empty() {
        let (ids, reasons): (Vec<String>, Vec<String>) = plan.held_reasons.iter().cloned().unzip();
        sqlx::query(
            "UPDATE runs SET reason = u.r FROM UNNEST($1::text[], $2::text[]) AS u(id, r) \
             WHERE runs.id = ANY($1) AND runs.id = u.id",
        )
        .bind(ids)
        .bind(reasons)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    }
    if !plan.starts.is_empty() {
        sqlx::query("INSERT INTO limit_starts (key, started_at) SELECT k, $2 FROM UNNEST($1::text[]) AS k")
            .bind(&plan.starts)
            .bind(us(p.now))
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
    }
    let locked = st.locked_keys();
    if !locked.is_empty() {
        sqlx::query("DELETE FROM run_limits WHERE key = ANY($1) AND ended_at <= $2")
            .bind(&locked)
            .bind(us(p.now) - ENDED_KEPT_US)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
    }
    let expired = st.expired_starts(p.now);
    if !expired.is_empty() {
        let (keys, floors): (Vec<String>, Vec<i64>) = expired.into_iter().unzip();
        sqlx::query(
            "DELETE FROM limit_starts s USING UNNEST($1::text[], $2::int8[]) AS w(k, f) \
             WHERE s.key = w.k AND s.started_at <= w.f",
        )
        .bind(keys)
        .bind(floors)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    }
    Ok(rows)
}

/// Each run's fair key and turn, for runs about to be inserted, in order (see
/// [`crate::flow::assign_turns`]): two index probes per distinct first key, whatever the backlog;
/// runs naming no key need only the floor. On a transaction's connection or, for a statement
/// that commits alone, any.
pub(super) async fn turns_for(
    conn: &mut sqlx::PgConnection,
    runs: &[&NewRun],
    from: Option<&ReadyKey>,
) -> Result<Vec<(String, i64)>> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    // The head from the lowest claim cursor: the entries before it are of runs claimed already
    // (or, when a write just moved the cursor back, of a few runs a later floor will see).
    let (after, key) = match from {
        Some(k) => ("AND (-priority, turn, scheduled_for, id) >= ($1, $2, $3, $4)", k.clone()),
        None => ("", ReadyKey { neg_priority: 0, turn: 0, scheduled_for: 0, id: String::new() }),
    };
    let sql = format!(
        "SELECT (SELECT turn FROM runs WHERE state = 'pending' AND NOT held AND NOT blocked {after} \
         ORDER BY -priority, turn, scheduled_for, id LIMIT 1)"
    );
    let mut q = sqlx::query_as::<_, (Option<i64>,)>(&sql);
    if from.is_some() {
        q = q.bind(key.neg_priority).bind(key.turn).bind(key.scheduled_for).bind(key.id);
    }
    let floor = q.fetch_one(&mut *conn).await.map_err(db_err)?;
    let fair: Vec<String> = runs.iter().map(|r| fair_key_of(&r.job.limits)).collect();
    // Runs naming no key take the floor: nothing to look up for them.
    let mut keys: Vec<String> = fair.iter().filter(|k| !k.is_empty()).cloned().collect();
    keys.sort_unstable();
    keys.dedup();
    let last: Vec<(String, Option<i64>)> = if keys.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
            "SELECT k, (SELECT turn FROM runs WHERE state = 'pending' AND fair_key = k ORDER BY turn DESC LIMIT 1) \
             FROM UNNEST($1::text[]) AS k",
        )
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?
    };
    let last = last.into_iter().filter_map(|(k, t)| t.map(|t| (k, t))).collect();
    let turns = turns(floor.0.unwrap_or(0), last, fair.iter().map(String::as_str));
    Ok(fair.into_iter().zip(turns).collect())
}
