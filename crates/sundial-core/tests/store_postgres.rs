//! The `Store` conformance suite against PostgreSQL, plus PostgreSQL-only cases (races between
//! nodes on real row locks).
//!
//! Every test works in a fresh schema `t_<unix seconds>_<uuid>` of the database named by
//! `SUNDIAL_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/sundial_test`, created if
//! missing). Schemas are left behind for inspection and swept by the first test of a later run
//! once they are an hour old, so parallel test processes never drop each other's.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use sundial_core::domain::{job::JobRequest, trigger::TriggerWire, JobSpec, Lease, RunState};
use sundial_core::store::postgres::PostgresStore;
use sundial_core::store::{ClaimParams, Completion, JobCreate, SharedStore, Store, StoreError};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/sundial_test";

fn url() -> String {
    std::env::var("SUNDIAL_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// Creates the test database if missing (racing test processes may both try).
async fn ensure_database(url: &str) {
    let opts: PgConnectOptions = url.parse().expect("SUNDIAL_TEST_PG_URL");
    let db = opts.get_database().unwrap_or("sundial_test").to_string();
    let mut admin = opts.clone().database("postgres").connect().await.expect("connect to database postgres");
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&db)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    if !exists {
        if let Err(e) = sqlx::query(&format!("CREATE DATABASE \"{db}\"")).execute(&mut admin).await {
            let code = e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned());
            assert!(matches!(code.as_deref(), Some("42P04" | "23505")), "create database {db}: {e}");
        }
    }
    let _ = admin.close().await;
}

/// Drops test schemas older than an hour (left by earlier runs).
async fn sweep_old_schemas(url: &str) {
    static SWEPT: AtomicBool = AtomicBool::new(false);
    if SWEPT.swap(true, Ordering::SeqCst) {
        return;
    }
    let opts: PgConnectOptions = url.parse().unwrap();
    let mut conn = opts.connect().await.expect("connect to the test database");
    let names: Vec<String> = sqlx::query_scalar(r"SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\_%'")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let cutoff = chrono::Utc::now().timestamp() - 3600;
    for name in names {
        let born = name.split('_').nth(1).and_then(|s| s.parse::<i64>().ok());
        if born.is_some_and(|b| b < cutoff) {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE")).execute(&mut conn).await;
        }
    }
    let _ = conn.close().await;
}

async fn open_pg() -> (PostgresStore, PostgresStore) {
    let url = url();
    ensure_database(&url).await;
    sweep_old_schemas(&url).await;
    let schema = format!("t_{}_{}", chrono::Utc::now().timestamp(), uuid::Uuid::now_v7().simple());
    let a = PostgresStore::connect_with_schema(&url, &schema).await.expect("connect");
    let b = PostgresStore::connect(&format!("{url}?schema={schema}")).await.expect("connect again");
    (a, b)
}

/// A fresh, isolated database (schema), opened twice.
async fn open() -> (SharedStore, SharedStore) {
    let (a, b) = open_pg().await;
    (Arc::new(a), Arc::new(b))
}

sundial_core::store_conformance!(open);

// ---------------------------------------------------------------------------------------------
// PostgreSQL-only cases.

fn t0() -> chrono::DateTime<chrono::Utc> {
    "2026-11-24T08:00:00Z".parse().unwrap()
}

fn secs(s: i64) -> chrono::DateTime<chrono::Utc> {
    t0() + chrono::Duration::seconds(s)
}

fn spec(name: Option<&str>, triggers: Vec<TriggerWire>, payload: serde_json::Value) -> JobCreate {
    let spec = JobSpec::from_request(JobRequest {
        handler: "echo".into(),
        name: name.map(str::to_string),
        payload: Some(payload),
        triggers: if triggers.is_empty() { None } else { Some(triggers) },
        ..Default::default()
    })
    .unwrap();
    JobCreate { spec, derived_idempotency_key: None }
}

fn every(s: u64) -> TriggerWire {
    TriggerWire { kind: "interval".into(), every: Some(Duration::from_secs(s)), ..Default::default() }
}

#[tokio::test]
async fn schemas_isolate_stores_and_the_migration_table_lives_in_the_schema() {
    let (a, _) = open_pg().await;
    let (c, _) = open_pg().await;
    a.job_create_many(vec![spec(Some("x"), vec![], serde_json::json!({}))], t0()).await.unwrap();
    let f = sundial_core::store::JobFilter { limit: 10, ..Default::default() };
    assert_eq!(a.job_list(&f, t0()).await.unwrap().items.len(), 1);
    assert_eq!(c.job_list(&f, t0()).await.unwrap().items.len(), 0, "another schema sees nothing");
    let opts: PgConnectOptions = url().parse().unwrap();
    let mut conn = opts.connect().await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = '_sqlx_migrations'",
    )
    .bind(a.schema().unwrap())
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(n, 1);
    assert!(a.capabilities().multi_node);
    assert!(matches!(PostgresStore::connect_with_schema(&url(), "Bad Name").await, Err(StoreError::Invalid(_))));
}

#[tokio::test]
async fn unreachable_database_is_unavailable() {
    let r = PostgresStore::connect("postgres://postgres@127.0.0.1:1/sundial_test").await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
}

#[tokio::test]
async fn smoke_create_fire_claim_complete_and_stale_attempt_is_rejected() {
    let (a, b) = open_pg().await;
    let created =
        a.job_create_many(vec![spec(Some("tick"), vec![every(10)], serde_json::json!({"n": 1}))], t0()).await.unwrap();
    let job = created.into_iter().next().unwrap().unwrap();
    assert!(job.created);
    assert_eq!(job.job.next_fire_time, Some(secs(10)));
    // Due twice by t=25 but within the misfire threshold: both fire, once each, across nodes.
    let r1 = a.trigger_fire_due(secs(25), 100, Duration::from_secs(60)).await.unwrap();
    let r2 = b.trigger_fire_due(secs(25), 100, Duration::from_secs(60)).await.unwrap();
    assert_eq!(r1.triggers + r2.triggers, 1);
    let w = b.worker_register("w", &["echo".into()], 4, None, secs(25)).await.unwrap();
    let claim = |max| ClaimParams { worker_id: w.id.clone(), max, lease: Duration::from_secs(30), now: secs(26) };
    let got = a.run_claim(&claim(10)).await.unwrap();
    assert!(!got.is_empty());
    assert_eq!(got[0].attempt, 1);
    assert_eq!(got[0].payload, serde_json::json!({"n": 1}));
    let done = |attempt, state| Completion {
        lease: Lease { run_id: got[0].run_id.clone(), worker_id: w.id.clone(), attempt },
        state,
        output: Some(serde_json::json!({"ok": true})),
        error: None,
        no_retry: false,
    };
    let out = b
        .run_complete_many(
            vec![done(2, RunState::Succeeded), done(1, RunState::Succeeded), done(1, RunState::Failed)],
            secs(27),
        )
        .await
        .unwrap();
    assert!(matches!(out[0], Err(StoreError::StaleAttempt(_))), "{:?}", out[0]);
    let run = out[1].as_ref().unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.output, Some(serde_json::json!({"ok": true})));
    assert!(matches!(out[2], Err(StoreError::StaleAttempt(_))), "a repeat in one batch is stale");
    let j = a.job_get(&job.job.id, secs(27)).await.unwrap();
    assert_eq!(j.last_worker.as_deref(), Some(w.id.as_str()));
}

#[tokio::test]
async fn runs_ready_notices_reach_listeners_of_the_same_schema_only() {
    let (a, b) = open_pg().await;
    let (c, _) = open_pg().await;
    let (d, _) = open_pg().await;
    let mut on_a = a.listen_runs_ready().await.unwrap();
    let mut on_c = c.listen_runs_ready().await.unwrap();
    let (schema_a, schema_d) = (a.schema().unwrap().to_string(), d.schema().unwrap().to_string());
    let due_now = || vec![spec(None, vec![], serde_json::json!({}))];
    // A job without triggers is a run due now: its commit on node b wakes node a.
    b.job_create_many(due_now(), t0()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), on_a.recv()).await.expect("woken").unwrap();
    // A sentinel notice on c's schema, sent after a's: c's listener passes a's notice over and
    // wakes on its own (had it taken a's, it would have returned before seeing a's as skipped).
    c.job_create_many(due_now(), t0()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), on_c.recv()).await.expect("sentinel").unwrap();
    assert!(on_c.skipped_schemas().contains(&schema_a), "other schema: passed over, {:?}", on_c.skipped_schemas());
    // Neither a job whose first fire is ahead nor a fire with nothing due sends a notice: after
    // them a sentinel on a fourth schema, then a fire that creates a due run. The notice a's
    // listener wakes on must come after the sentinel.
    b.job_create_many(vec![spec(None, vec![every(10)], serde_json::json!({}))], t0()).await.unwrap();
    assert_eq!(b.trigger_fire_due(secs(5), 10, Duration::from_secs(60)).await.unwrap().triggers, 0);
    d.job_create_many(due_now(), t0()).await.unwrap();
    assert_eq!(b.trigger_fire_due(secs(10), 10, Duration::from_secs(60)).await.unwrap().runs_pending, 1);
    tokio::time::timeout(Duration::from_secs(5), on_a.recv()).await.expect("woken by the fire").unwrap();
    assert!(on_a.skipped_schemas().contains(&schema_d), "woken before the sentinel: a notice without a due run");
}

/// The `run_limits` trigger goes by the index even when the planner believes the table empty
/// (stats from a VACUUM ANALYZE taken before any run started, as after a fresh install with
/// autovacuum off): a sequential scan there is paid by every claim and completion of a
/// flow-controlled run, and grows with the table. Counted in this session's own table stats.
#[tokio::test]
async fn run_limits_trigger_never_scans_the_whole_table_even_with_empty_table_stats() {
    let (a, _) = open_pg().await;
    let schema = a.schema().unwrap().to_string();
    let keyed = |i: usize| {
        let mut s = spec(None, vec![], serde_json::json!({ "i": i }));
        s.spec.limits = vec![format!("k:{}", i % 3)];
        s
    };
    a.job_create_many((0..8).map(keyed).collect(), t0()).await.unwrap();
    let opts: PgConnectOptions = url().parse().unwrap();
    let mut conn = opts.connect().await.unwrap();
    sqlx::query(&format!("SET search_path TO {schema}")).execute(&mut conn).await.unwrap();
    sqlx::query("VACUUM ANALYZE run_limits").execute(&mut conn).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    // Each run starts and stops running one at a time, so the trigger runs its statements
    // often enough for PL/pgSQL to settle on a cached plan.
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM runs ORDER BY id").fetch_all(&mut *tx).await.unwrap();
    assert_eq!(ids.len(), 8);
    for id in &ids {
        for state in ["running", "succeeded"] {
            sqlx::query("UPDATE runs SET state = $1, ended_at = 1 WHERE id = $2")
                .bind(state)
                .bind(id)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
    }
    let scans: i64 = sqlx::query_scalar(
        "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE schemaname = $1 AND relname = 'run_limits'",
    )
    .bind(&schema)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let open: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM run_limits WHERE ended_at IS NULL").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(open, 0, "every run that stopped running stopped counting");
    assert_eq!(scans, 0, "the trigger scanned run_limits sequentially {scans} times");
    tx.rollback().await.unwrap();
}

/// With a snapshot pinned (an idle transaction that took a transaction id, so vacuum can reclaim
/// nothing newer), claims start at their cursor instead of walking the index entries of every
/// run claimed since: 3,000 runs claimed 10 at a time read a few entries of `runs_ready_order`
/// each, where claims from the head would read about 450,000 (1,500 dead entries a claim on
/// average). Counted in the index's statistics once the store's connections are closed (a
/// backend reports its counts when it exits); the pin keeps the dead entries from being skipped.
#[tokio::test]
async fn claims_under_a_pinned_snapshot_read_what_is_due_not_what_was_claimed() {
    let (a, b) = open_pg().await;
    drop(b);
    let schema = a.schema().unwrap().to_string();
    let opts: PgConnectOptions = url().parse().unwrap();
    let mut pin = opts.connect().await.unwrap();
    sqlx::query("BEGIN").execute(&mut pin).await.unwrap();
    sqlx::query("SELECT txid_current()").execute(&mut pin).await.unwrap();

    const RUNS: usize = 3000;
    for chunk in 0..RUNS / 500 {
        let jobs = (0..500).map(|i| spec(None, vec![], serde_json::json!({ "i": chunk * 500 + i }))).collect();
        for r in a.job_create_many(jobs, t0()).await.unwrap() {
            r.unwrap();
        }
    }
    let w = a.worker_register("w", &["echo".to_string()], 10, None, t0()).await.unwrap();
    let mut claimed = std::collections::HashSet::new();
    loop {
        let p = ClaimParams { worker_id: w.id.clone(), max: 10, lease: Duration::from_secs(60), now: secs(1) };
        let got = a.run_claim(&p).await.unwrap();
        if got.is_empty() {
            break;
        }
        for c in got {
            assert!(claimed.insert(c.run_id.clone()), "run {} claimed twice", c.run_id);
        }
    }
    assert_eq!(claimed.len(), RUNS, "every run claimed once");
    a.close().await;

    let read = sundial_core::testing::eventually("the closed connections' index counts", Duration::from_secs(30), || {
        let (opts, schema) = (opts.clone(), schema.clone());
        async move {
            let mut check = opts.connect().await.ok()?;
            let n: i64 = sqlx::query_scalar(
                "SELECT idx_tup_read FROM pg_stat_user_indexes WHERE schemaname = $1 AND indexrelname = 'runs_ready_order'",
            )
            .bind(schema)
            .fetch_one(&mut check)
            .await
            .ok()?;
            (n >= RUNS as i64).then_some(n)
        }
    })
    .await;
    assert!(read <= 20_000, "claims read {read} entries of the ready order for {RUNS} runs");
    sqlx::query("ROLLBACK").execute(&mut pin).await.unwrap();
}

/// Claims and completions go by their indexes however the tables looked when a connection first
/// ran them. A plan cached from the statistics of empty tables (a node started on a new
/// database) would read `runs`, `jobs` and `run_attempts` sequentially in every claim and
/// completion, a cost that grows with history, until the next ANALYZE (with autovacuum off,
/// never). Tuples read by sequential scans are counted in the tables' statistics once the
/// store's connections are closed. (`run_attempts`, keyed by run and attempt, is left out: while
/// it is small, a hash join over it is the planner's cheaper choice, whatever the cache.)
#[tokio::test]
async fn claims_and_completions_do_not_scan_history_even_when_first_run_on_empty_tables() {
    let (a, b) = open_pg().await;
    drop(b);
    let schema = a.schema().unwrap().to_string();
    let w = a.worker_register("w", &["echo".to_string()], 10, None, t0()).await.unwrap();
    let claim = |max| ClaimParams { worker_id: w.id.clone(), max, lease: Duration::from_secs(60), now: secs(1) };
    let done = |c: &sundial_core::store::ClaimedRun| Completion {
        lease: Lease { run_id: c.run_id.clone(), worker_id: w.id.clone(), attempt: c.attempt },
        state: RunState::Succeeded,
        output: None,
        error: None,
        no_retry: false,
    };
    // On empty tables, one run at a time: enough executions for cached plans to settle.
    for i in 0..20 {
        a.job_create_many(vec![spec(None, vec![], serde_json::json!({ "warm": i }))], t0()).await.unwrap();
        let got = a.run_claim(&claim(1)).await.unwrap();
        a.run_complete_many(got.iter().map(done).collect(), secs(1)).await.unwrap();
    }
    const RUNS: usize = 4000;
    for chunk in 0..RUNS / 500 {
        let jobs = (0..500).map(|i| spec(None, vec![], serde_json::json!({ "i": chunk * 500 + i }))).collect();
        a.job_create_many(jobs, t0()).await.unwrap();
    }
    let mut finished = 0;
    loop {
        // Ten at a time: an index is the cheaper way to ten rows of 4,000 by any estimate.
        let got = a.run_claim(&claim(10)).await.unwrap();
        if got.is_empty() {
            break;
        }
        for r in a.run_complete_many(got.iter().map(done).collect(), secs(1)).await.unwrap() {
            assert_eq!(r.unwrap().state, RunState::Succeeded);
            finished += 1;
        }
    }
    assert_eq!(finished, RUNS);
    a.close().await;

    let opts: PgConnectOptions = url().parse().unwrap();
    let seq_read =
        sundial_core::testing::eventually("the closed connections' table counts", Duration::from_secs(30), || {
            let (opts, schema) = (opts.clone(), schema.clone());
            async move {
                let mut check = opts.connect().await.ok()?;
                let (updated, seq_read): (i64, i64) = sqlx::query_as(
                    "SELECT COALESCE(SUM(n_tup_upd) FILTER (WHERE relname = 'runs'), 0)::int8, \
                 COALESCE(SUM(seq_tup_read), 0)::int8 FROM pg_stat_user_tables \
                 WHERE schemaname = $1 AND relname IN ('runs', 'jobs')",
                )
                .bind(schema)
                .fetch_one(&mut check)
                .await
                .ok()?;
                // Every claim and every completion updated its runs.
                (updated >= 2 * RUNS as i64).then_some(seq_read)
            }
        })
        .await;
    assert!(seq_read <= 20_000, "claims and completions read {seq_read} rows in sequential scans");
}
