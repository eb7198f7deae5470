//! The benchmark's database: a fresh one for every measured phase, the durability settings in
//! force, and fast direct inserts through the store (for jobs that must be stored before the
//! server under test starts).

use super::report::Report;
use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::path::PathBuf;
use std::str::FromStr;
use sundial_core::domain::job::JobRequest;
use sundial_core::schedule::validate_job;
use sundial_core::store::JobCreate;

/// Jobs per `job_create_many` call when inserting directly.
const INSERT_CHUNK: u64 = 1000;

enum Kind {
    Sqlite {
        path: PathBuf,
        _tmp: Option<tempfile::TempDir>,
    },
    Postgres {
        /// As given (the server connects with it).
        url: String,
        /// The database that is dropped and created for every phase.
        name: String,
        /// Same server, database `postgres`.
        admin: Box<PgConnectOptions>,
        /// The bench database.
        opts: Box<PgConnectOptions>,
    },
}

/// The database under test.
pub(super) struct BenchDb {
    kind: Kind,
    durability: Vec<(String, Value)>,
    /// The private cluster of `--db private`, stopped when the benchmark ends.
    _cluster: Option<super::cluster::Cluster>,
}

impl BenchDb {
    /// Parses `--db` (default: a SQLite file in a new temporary directory; `private`: a
    /// PostgreSQL cluster of the benchmark's own, see [`super::cluster`]) and reads the
    /// durability settings.
    pub(super) async fn new(url: Option<&str>) -> anyhow::Result<Self> {
        let url = url.map(str::trim).filter(|u| !u.is_empty());
        if url == Some("private") {
            let cluster = tokio::task::spawn_blocking(super::cluster::Cluster::create)
                .await?
                .context("--db private: starting a private PostgreSQL cluster")?;
            let mut db = Box::pin(Self::new(Some(&cluster.url("sundial_bench")))).await?;
            db.durability.push(("private_cluster".into(), Value::Bool(true)));
            db._cluster = Some(cluster);
            return Ok(db);
        }
        match url {
            None => {
                let tmp = tempfile::Builder::new().prefix("sundial-bench-").tempdir()?;
                let path = tmp.path().join("bench.db");
                Ok(Self::sqlite(path, Some(tmp)))
            }
            Some(u) if u.starts_with("sqlite:") => {
                let rest = u.trim_start_matches("sqlite:").trim_start_matches("//");
                let rest = rest.split('?').next().unwrap_or_default();
                if rest.is_empty() || rest == ":memory:" {
                    bail!("--db {u}: the benchmark needs a file (sqlite:///abs/path.db)");
                }
                let path = std::path::absolute(rest)?;
                if path.exists() {
                    bail!(
                        "--db {u}: {} already exists; the benchmark deletes and recreates its database for \
                         every phase, so give it a path that does not exist yet",
                        path.display()
                    );
                }
                Ok(Self::sqlite(path, None))
            }
            Some(u) if u.starts_with("postgres:") || u.starts_with("postgresql:") => {
                let opts = PgConnectOptions::from_str(&strip_schema(u)).with_context(|| format!("--db {u}"))?;
                let name = opts.get_database().unwrap_or_default().to_string();
                if name.is_empty()
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    || ["postgres", "template0", "template1"].contains(&name.as_str())
                {
                    bail!(
                        "--db {u}: name a database the benchmark may drop and recreate, e.g. \
                         postgres://postgres@127.0.0.1:5432/sundial_bench (got {name:?})"
                    );
                }
                let admin = opts.clone().database("postgres");
                let mut conn = admin.connect().await.with_context(|| format!("connecting to {}", mask(u)))?;
                let mut durability = Vec::new();
                for setting in ["synchronous_commit", "fsync", "server_version", "autovacuum", "shared_buffers"] {
                    let v: String = sqlx::query_scalar(&format!("SHOW {setting}")).fetch_one(&mut conn).await?;
                    durability.push((setting.to_string(), Value::String(v)));
                }
                let _ = conn.close().await;
                Ok(Self {
                    kind: Kind::Postgres { url: u.to_string(), name, admin: Box::new(admin), opts: Box::new(opts) },
                    durability,
                    _cluster: None,
                })
            }
            Some(u) => bail!("--db {u}: use sqlite:///path.db or postgres://…/NAME"),
        }
    }

    fn sqlite(path: PathBuf, tmp: Option<tempfile::TempDir>) -> Self {
        // The store opens every connection with `synchronous = FULL` (a per-connection setting
        // another process cannot read back), WAL journal (persistent; read from the file).
        let durability =
            vec![("synchronous".to_string(), Value::String("FULL".into())), ("journal_mode".to_string(), Value::Null)];
        Self { kind: Kind::Sqlite { path, _tmp: tmp }, durability, _cluster: None }
    }

    /// `sqlite` or `postgres`.
    pub(super) fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Sqlite { .. } => "sqlite",
            Kind::Postgres { .. } => "postgres",
        }
    }

    /// The URL the server is started with.
    pub(super) fn url(&self) -> String {
        match &self.kind {
            Kind::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            Kind::Postgres { url, .. } => url.clone(),
        }
    }

    /// The URL without a password.
    pub(super) fn display(&self) -> String {
        mask(&self.url())
    }

    /// Durability settings in force.
    pub(super) fn durability(&self) -> &[(String, Value)] {
        &self.durability
    }

    /// A new, empty database for the next phase.
    pub(super) async fn fresh(&self) -> anyhow::Result<()> {
        match &self.kind {
            Kind::Sqlite { path, .. } => {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e).with_context(|| format!("removing {}", p.to_string_lossy())),
                    }
                }
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Ok(())
            }
            Kind::Postgres { name, admin, .. } => {
                let mut conn = admin.connect().await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .with_context(|| format!("dropping database {name}"))?;
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .await
                    .with_context(|| format!("creating database {name}"))?;
                let _ = conn.close().await;
                Ok(())
            }
        }
    }

    /// After bulk inserts, before a timed phase: fresh planner statistics and a checkpoint
    /// (PostgreSQL; as the peer benchmarks do), or a WAL checkpoint (SQLite).
    pub(super) async fn settle(&self) {
        match &self.kind {
            Kind::Sqlite { path, .. } => {
                let opts = SqliteConnectOptions::new().filename(path);
                if let Ok(mut c) = opts.connect().await {
                    let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut c).await;
                    let _ = c.close().await;
                }
            }
            Kind::Postgres { opts, .. } => {
                if let Ok(mut c) = opts.connect().await {
                    let _ = sqlx::query("VACUUM ANALYZE").execute(&mut c).await;
                    let _ = sqlx::query("CHECKPOINT").execute(&mut c).await;
                    let _ = c.close().await;
                }
            }
        }
    }

    /// Fills in what can only be read once a phase has run (SQLite's journal mode).
    pub(super) async fn annotate(&self, report: &mut Report) {
        if let Kind::Sqlite { path, .. } = &self.kind {
            if !path.exists() {
                return;
            }
            let opts = SqliteConnectOptions::new().filename(path).read_only(true);
            if let Ok(mut c) = opts.connect().await {
                if let Ok(mode) = sqlx::query_scalar::<_, String>("PRAGMA journal_mode").fetch_one(&mut c).await {
                    report.set("journal_mode", mode);
                }
                let _ = c.close().await;
            }
        }
    }

    /// Stores `count` jobs directly through the store (chunks of 1,000, one transaction each;
    /// several in flight on PostgreSQL), job `i` built by `make(i)` as `POST /v1/jobs` JSON.
    /// Returns the job ids in order when `keep_ids`.
    pub(super) async fn insert<F>(
        &self,
        count: u64,
        keep_ids: bool,
        pb: &indicatif::ProgressBar,
        make: F,
    ) -> anyhow::Result<Vec<String>>
    where
        F: Fn(u64) -> Value + Sync,
    {
        let store = sundial_core::store::open(&self.url()).await.context("opening the store")?;
        let in_flight = if store.capabilities().multi_node { 4 } else { 1 };
        let make = &make;
        let store = &store;
        let mut chunks = futures::stream::iter((0..count).step_by(INSERT_CHUNK as usize))
            .map(|start| async move {
                let end = (start + INSERT_CHUNK).min(count);
                let mut items = Vec::with_capacity((end - start) as usize);
                for i in start..end {
                    let req: JobRequest = serde_json::from_value(make(i)).context("bench job JSON")?;
                    let spec = validate_job(req, chrono::Utc::now()).map_err(|e| anyhow::anyhow!("bench job: {e}"))?;
                    items.push(JobCreate { spec, derived_idempotency_key: None });
                }
                let results = store.job_create_many(items, chrono::Utc::now()).await?;
                let mut ids = Vec::with_capacity(results.len());
                for r in results {
                    let created = r?;
                    anyhow::ensure!(created.created, "job {} was not newly created", created.job.id);
                    if keep_ids {
                        ids.push(created.job.id);
                    }
                }
                anyhow::Ok((start, ids))
            })
            .buffer_unordered(in_flight);
        let mut parts = Vec::new();
        while let Some(part) = chunks.next().await {
            let (start, ids) = part?;
            pb.inc((INSERT_CHUNK).min(count - start));
            parts.push((start, ids));
        }
        parts.sort_by_key(|(s, _)| *s);
        Ok(parts.into_iter().flat_map(|(_, ids)| ids).collect())
    }
}

/// What the store recorded of one run, for the scenarios that read their results from the
/// database itself (`steady`, `pinned`: a million runs are too many to page through the API).
#[derive(sqlx::FromRow)]
pub(super) struct RunTimes {
    pub job_id: String,
    pub state: String,
    pub attempt: i64,
    /// Microseconds since the epoch, as stored.
    pub created_at: i64,
    pub scheduled_for: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

const RUN_TIMES: &str = "SELECT job_id, state, attempt, created_at, scheduled_for, started_at, finished_at FROM runs";
const ATTEMPTS: &str = "SELECT count(*) FROM run_attempts";

/// An open transaction that took a transaction id and idles, so that vacuum can reclaim nothing
/// newer than it (PostgreSQL's "pinned snapshot"); [`PinnedSnapshot::release`] ends it.
pub(super) struct PinnedSnapshot(sqlx::PgConnection);

impl PinnedSnapshot {
    /// Rolls the idle transaction back.
    pub(super) async fn release(mut self) -> anyhow::Result<()> {
        sqlx::query("ROLLBACK").execute(&mut self.0).await?;
        let _ = self.0.close().await;
        Ok(())
    }
}

impl BenchDb {
    /// Every run's times (see [`RunTimes`]) and how many attempts were recorded.
    pub(super) async fn run_times(&self) -> anyhow::Result<(Vec<RunTimes>, i64)> {
        match &self.kind {
            Kind::Sqlite { path, .. } => {
                let mut c = SqliteConnectOptions::new().filename(path).read_only(true).connect().await?;
                let rows = sqlx::query_as(RUN_TIMES).fetch_all(&mut c).await?;
                let attempts = sqlx::query_scalar(ATTEMPTS).fetch_one(&mut c).await?;
                Ok((rows, attempts))
            }
            Kind::Postgres { opts, .. } => {
                let mut c = opts.connect().await?;
                let rows = sqlx::query_as(RUN_TIMES).fetch_all(&mut c).await?;
                let attempts = sqlx::query_scalar(ATTEMPTS).fetch_one(&mut c).await?;
                Ok((rows, attempts))
            }
        }
    }

    /// `BEGIN; SELECT txid_current();` on a connection of its own (PostgreSQL only).
    pub(super) async fn pin_snapshot(&self) -> anyhow::Result<PinnedSnapshot> {
        let Kind::Postgres { opts, .. } = &self.kind else {
            bail!("a pinned snapshot needs PostgreSQL (--db private or --db postgres://…)")
        };
        let mut c = opts.connect().await?;
        sqlx::query("BEGIN").execute(&mut c).await?;
        sqlx::query("SELECT txid_current()").execute(&mut c).await?;
        Ok(PinnedSnapshot(c))
    }

    /// PostgreSQL: `runs`' dead tuples and size with its indexes (MB), from the statistics
    /// collector; `None` on SQLite, which has no dead tuples.
    pub(super) async fn runs_table_health(&self) -> Option<(i64, f64)> {
        let Kind::Postgres { opts, .. } = &self.kind else { return None };
        let mut c = opts.connect().await.ok()?;
        let row: (i64, i64) = sqlx::query_as(
            "SELECT n_dead_tup, pg_total_relation_size(relid) FROM pg_stat_user_tables WHERE relname = 'runs'",
        )
        .fetch_optional(&mut c)
        .await
        .ok()??;
        let _ = c.close().await;
        Some((row.0, row.1 as f64 / 1_048_576.0))
    }
}

/// Drops a `schema=` query parameter (the store's, unknown to the driver).
fn strip_schema(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_string() };
    let rest: Vec<&str> = query.split('&').filter(|kv| !kv.starts_with("schema=") && !kv.is_empty()).collect();
    if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn mask(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let auth_start = scheme_end + 3;
    let auth_end = url[auth_start..].find(['/', '?']).map_or(url.len(), |i| auth_start + i);
    let authority = &url[auth_start..auth_end];
    let Some(at) = authority.rfind('@') else { return url.to_string() };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else { return url.to_string() };
    format!("{}{}:***{}", &url[..auth_start], &userinfo[..colon], &url[auth_start + at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(mask("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(mask("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(mask("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }

    #[test]
    fn schema_parameter_is_dropped() {
        assert_eq!(strip_schema("postgres://h/db?schema=s&sslmode=disable"), "postgres://h/db?sslmode=disable");
        assert_eq!(strip_schema("postgres://h/db?schema=s"), "postgres://h/db");
    }
}
