//! SQLite: limits: the claim under flow control, and the fair turns of new runs (storing limits
//! is shared, in `store::writes`). The rules are in [`crate::store::limits`]. SQLite has one
//! writer (`BEGIN IMMEDIATE`), so the claim's counts cannot change under it: no per-key lock is
//! needed.

use super::*;
use crate::store::limits::{
    defs_of, fair_key_of, next_page_size, scan_budget, turns, window_floor_us, Candidate, ClaimState, LimitRow,
    CANDIDATE_COLUMNS, ENDED_KEPT_US, LIMIT_COLUMNS,
};

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("serializes")
}

/// Claims up to `p.max` due pending runs of `handlers` under flow control, in fair order, and
/// leases them; only runs of `scope`'s namespaces when it names some.
pub(super) async fn claim_rows(tx: &mut Tx, p: &ClaimParams, scope: &WorkerScope) -> Result<Vec<RunRow>> {
    let mut st = ClaimState::default();
    let budget = scan_budget(p.max);
    let handlers = json(&scope.handlers);
    let namespaces = scope.namespaces.as_ref().map(json);
    let mut size = p.max as usize;
    loop {
        // `+handler`: walk runs_ready in claim order and filter, rather than use another index.
        let page: Vec<Candidate> = sqlx::query_as(&format!(
            "SELECT {CANDIDATE_COLUMNS} FROM runs INDEXED BY runs_ready WHERE state = 'pending' AND held = 0 \
             AND blocked = 0 AND scheduled_for <= ?1 AND +handler IN (SELECT value FROM json_each(?2)) \
             AND id NOT IN (SELECT value FROM json_each(?3)) \
             AND (?5 IS NULL OR +namespace IN (SELECT value FROM json_each(?5))) \
             ORDER BY priority DESC, turn, scheduled_for, id LIMIT ?4"
        ))
        .bind(us(p.now))
        .bind(&handlers)
        .bind(json(&st.seen))
        .bind(size as i64)
        .bind(&namespaces)
        .fetch_all(&mut **tx)
        .await
        .map_err(db_err)?;
        let exhausted = page.len() < size;
        let unknown = st.unknown_keys(&page);
        if !unknown.is_empty() {
            let rows: Vec<LimitRow> = sqlx::query_as(&format!(
                "SELECT {LIMIT_COLUMNS} FROM limits WHERE key IN (SELECT value FROM json_each(?)) OR pattern = 1"
            ))
            .bind(json(&unknown))
            .fetch_all(&mut **tx)
            .await
            .map_err(db_err)?;
            let governed = st.resolve(unknown, &defs_of(rows)?);
            // One statement for all the page's governed keys (`floors[i]` is key i's window).
            let keys: Vec<&str> = governed.iter().map(|(k, _)| k.as_str()).collect();
            let floors: Vec<i64> = governed.iter().map(|(_, b)| window_floor_us(b, p.now)).collect();
            let counts: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT k.value, \
                 (SELECT COUNT(*) FROM run_limits WHERE key = k.value AND (ended_at IS NULL OR ended_at > ?3)), \
                 (SELECT COUNT(*) FROM limit_starts WHERE key = k.value \
                  AND started_at > json_extract(?2, '$[' || k.key || ']')) \
                 FROM json_each(?1) AS k",
            )
            .bind(json(&keys))
            .bind(json(&floors))
            .bind(us(p.now))
            .fetch_all(&mut **tx)
            .await
            .map_err(db_err)?;
            st.counted_rows(governed, counts, Vec::new());
        }
        let claimed = st.admit_page(&page, p.max) as usize;
        if claimed >= p.max as usize || exhausted || st.seen.len() >= budget {
            break;
        }
        size = next_page_size(p.max, claimed, st.seen.len());
    }
    write_plan(tx, &st, p).await
}

/// Leases the runs the claim chose; records why held runs wait; logs and prunes rate starts.
async fn write_plan(tx: &mut Tx, st: &ClaimState, p: &ClaimParams) -> Result<Vec<RunRow>> {
    let plan = &st.plan;
    plan.count_held();
    let rows: Vec<RunRow> = if plan.claim.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(&format!(
            "UPDATE runs SET state = 'running', attempt = attempt + 1, worker_id = ?1, lease_expires_at = ?2, \
             started_at = ?3, reason = note, worker_name = (SELECT name FROM workers WHERE id = ?1) \
             WHERE id IN (SELECT value FROM json_each(?4)) RETURNING {RUN_COLUMNS}"
        ))
        .bind(&p.worker_id)
        .bind(us(p.now) + dur_us(p.lease))
        .bind(us(p.now))
        .bind(json(&plan.claim))
        .fetch_all(&mut **tx)
        .await
        .map_err(db_err)?
    };
    for (id, reason) in &plan.held_reasons {
        sqlx::query("UPDATE runs SET reason = ? WHERE id = ?")
            .bind(reason)
            .bind(id)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
    }
    if !plan.starts.is_empty() {
        sqlx::query("INSERT INTO limit_starts (key, started_at) SELECT value, ?2 FROM json_each(?1)")
            .bind(json(&plan.starts))
            .bind(us(p.now))
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
    }
    let locked = st.locked_keys();
    if !locked.is_empty() {
        sqlx::query("DELETE FROM run_limits WHERE key IN (SELECT value FROM json_each(?1)) AND ended_at <= ?2")
            .bind(json(&locked))
            .bind(us(p.now) - ENDED_KEPT_US)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
    }
    for (key, floor) in st.expired_starts(p.now) {
        sqlx::query("DELETE FROM limit_starts WHERE key = ? AND started_at <= ?")
            .bind(key)
            .bind(floor)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
    }
    Ok(rows)
}

/// Each run's fair key and turn, for runs about to be inserted, in order (see
/// [`crate::flow::assign_turns`]): two index probes per distinct first key, whatever the backlog.
pub(super) async fn turns_for(tx: &mut Tx, runs: &[&NewRun]) -> Result<Vec<(String, i64)>> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let floor: (Option<i64>,) = sqlx::query_as(
        "SELECT (SELECT turn FROM runs INDEXED BY runs_ready WHERE state = 'pending' AND held = 0 AND blocked = 0 \
         ORDER BY priority DESC, turn LIMIT 1)",
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(db_err)?;
    let fair: Vec<String> = runs.iter().map(|r| fair_key_of(&r.job.limits)).collect();
    let mut last = HashMap::new();
    // Runs naming no key take the floor: nothing to look up for them.
    for k in fair.iter().filter(|k| !k.is_empty()) {
        if last.contains_key(k) {
            continue;
        }
        let t: (Option<i64>,) = sqlx::query_as(
            "SELECT (SELECT turn FROM runs WHERE state = 'pending' AND fair_key = ? ORDER BY turn DESC LIMIT 1)",
        )
        .bind(k)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_err)?;
        last.insert(k.clone(), t.0);
    }
    let last = last.into_iter().filter_map(|(k, t)| t.map(|t| (k, t))).collect();
    let turns = turns(floor.0.unwrap_or(0), last, fair.iter().map(String::as_str));
    Ok(fair.into_iter().zip(turns).collect())
}
