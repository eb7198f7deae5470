//! List queries (filters, keyset cursor, page split), written once for both backends:
//! `QueryBuilder` is generic over the database and both dialects accept this SQL.

use super::rows::{decode_cursor, encode_cursor, us, JOB_SELECT, RUN_COLUMNS};
use super::{JobFilter, Result, RunFilter};
use sqlx::{Database, Encode, QueryBuilder, Type};

/// `SELECT … FROM jobs` with the filter, newest first, one row more than the page.
pub(crate) fn job_query<'a, DB: Database>(f: &JobFilter) -> Result<QueryBuilder<'a, DB>>
where
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    bool: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::<DB>::new(JOB_SELECT);
    q.push(" WHERE 1 = 1");
    if let Some(ns) = &f.namespace {
        q.push(" AND j.namespace = ").push_bind(ns.clone());
    }
    in_namespaces(&mut q, "j.namespace", f.namespaces.as_deref());
    if let Some(n) = &f.name {
        q.push(" AND j.name = ").push_bind(n.clone());
    }
    if let Some(h) = &f.handler {
        q.push(" AND j.handler = ").push_bind(h.clone());
    }
    if let Some(p) = f.paused {
        q.push(" AND j.paused = ").push_bind(p);
    }
    if let Some(c) = &f.cursor {
        let (k, id) = decode_cursor(c)?;
        q.push(" AND (j.created_at, j.id) < (").push_bind(k).push(", ").push_bind(id).push(")");
    }
    q.push(" ORDER BY j.created_at DESC, j.id DESC LIMIT ").push_bind(f.limit as i64 + 1);
    Ok(q)
}

/// `SELECT … FROM runs` with the filter, newest `scheduled_for` first, one row more than the page.
pub(crate) fn run_query<'a, DB: Database>(f: &RunFilter) -> Result<QueryBuilder<'a, DB>>
where
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::<DB>::new(format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1"));
    if let Some(j) = &f.job_id {
        q.push(" AND job_id = ").push_bind(j.clone());
    }
    if let Some(s) = f.state {
        q.push(" AND state = ").push_bind(s.as_str().to_string());
    }
    if let Some(s) = f.since {
        q.push(" AND scheduled_for >= ").push_bind(us(s));
    }
    if let Some(u) = f.until {
        q.push(" AND scheduled_for < ").push_bind(us(u));
    }
    if let Some(ns) = &f.namespace {
        q.push(" AND namespace = ").push_bind(ns.clone());
    }
    in_namespaces(&mut q, "namespace", f.namespaces.as_deref());
    if let Some(h) = &f.handler {
        q.push(" AND handler = ").push_bind(h.clone());
    }
    if let Some(c) = &f.cursor {
        let (k, id) = decode_cursor(c)?;
        q.push(" AND (scheduled_for, id) < (").push_bind(k).push(", ").push_bind(id).push(")");
    }
    q.push(" ORDER BY scheduled_for DESC, id DESC LIMIT ").push_bind(f.limit as i64 + 1);
    Ok(q)
}

/// ` AND column IN (…)` for a set of namespaces (nothing matches an empty set), so a page of a
/// namespace-bound token's list is full and its cursor continues where it ends.
pub(crate) fn in_namespaces<'a, DB: Database>(q: &mut QueryBuilder<'a, DB>, column: &str, namespaces: Option<&[String]>)
where
    String: Encode<'a, DB> + Type<DB>,
{
    match namespaces {
        None => {}
        Some([]) => {
            q.push(" AND 1 = 0");
        }
        Some(set) => {
            q.push(format!(" AND {column} IN ("));
            let mut list = q.separated(", ");
            for ns in set {
                list.push_bind(ns.clone());
            }
            q.push(")");
        }
    }
}

/// Cuts the extra row off and returns the cursor of the page's last row, if there is more.
pub(crate) fn split_page<R>(rows: &mut Vec<R>, limit: u32, key: impl Fn(&R) -> (i64, &str)) -> Option<String> {
    if rows.len() <= limit as usize {
        return None;
    }
    rows.truncate(limit as usize);
    rows.last().map(|r| {
        let (k, id) = key(r);
        encode_cursor(k, id)
    })
}
