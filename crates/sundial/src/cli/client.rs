//! `sundial job|run|workers|apply`: thin clients of the HTTP API, in the manner of kubectl and
//! gh. Jobs are named by id, `namespace/name`, or a bare name in `default`; `get` shows a detailed
//! view; lists say when they were cut; `--output table|json|yaml` (json and yaml print the API's
//! objects as they are, for scripts).

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::time::Duration;

/// Output format.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns (lists) or `field: value` lines (one object).
    Table,
    /// The API's JSON.
    Json,
    /// The API's objects as YAML.
    Yaml,
}

/// `sundial job …`
#[derive(Subcommand)]
pub enum JobCmd {
    /// Submit a job (flags, or a full JSON body with --json).
    Add(Box<AddArgs>),
    /// List jobs, newest first.
    List {
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Only this handler.
        #[arg(long)]
        handler: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Continue a cut list (the cursor a previous page printed).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one job in detail: definition, triggers, recent runs.
    Get {
        /// Job id, `namespace/name`, or a name in `default`.
        job: String,
    },
    /// Pause a job.
    Pause {
        /// Job id, `namespace/name`, or a name in `default`.
        job: String,
    },
    /// Resume a job.
    Resume {
        /// Job id, `namespace/name`, or a name in `default`.
        job: String,
    },
    /// Run a job now.
    Run {
        /// Job id, `namespace/name`, or a name in `default`.
        job: String,
    },
    /// Delete a job (its runs stay queryable).
    Delete {
        /// Job id, `namespace/name`, or a name in `default`.
        job: String,
    },
    /// Make runs for the past due times in [FROM, UNTIL) that have none (each once).
    Backfill {
        /// Job id, `namespace/name`, or a name in `default`.
        job: String,
        /// First instant of the range (RFC 3339).
        #[arg(long)]
        from: String,
        /// End of the range, exclusive (RFC 3339; not in the future).
        #[arg(long)]
        until: String,
        /// Only this trigger's due times.
        #[arg(long)]
        trigger: Option<String>,
        /// Overlap policy of the backfill runs (allow, skip, buffer_one, cancel_other; default allow).
        #[arg(long)]
        overlap: Option<String>,
    },
}

/// `sundial job add` flags.
#[derive(clap::Args)]
pub struct AddArgs {
    /// The whole `POST /v1/jobs` body as JSON (other flags then ignored).
    #[arg(long)]
    pub json: Option<String>,
    /// Handler name (echo, shell, http, or one your workers register).
    #[arg(long)]
    pub handler: Option<String>,
    /// Unique name in the namespace.
    #[arg(long)]
    pub name: Option<String>,
    /// Namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Payload JSON.
    #[arg(long)]
    pub payload: Option<String>,
    /// Cron trigger expression.
    #[arg(long)]
    pub cron: Option<String>,
    /// Time zone of --cron.
    #[arg(long)]
    pub timezone: Option<String>,
    /// Interval trigger (e.g. 15s).
    #[arg(long)]
    pub every: Option<String>,
    /// Once trigger at this RFC 3339 time (e.g. 2026-11-24T08:00:00Z).
    #[arg(long)]
    pub at: Option<String>,
    /// Priority (higher first).
    #[arg(long)]
    pub priority: Option<i32>,
    /// Per-attempt timeout (e.g. 30s).
    #[arg(long)]
    pub timeout: Option<String>,
    /// Claims allowed in all.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// allow | skip | buffer_one | cancel_other.
    #[arg(long)]
    pub overlap: Option<String>,
    /// Idempotency key.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `sundial run …`
#[derive(Subcommand)]
pub enum RunCmd {
    /// List runs, newest first.
    List {
        /// Only this job's runs (id, `namespace/name`, or a name in `default`).
        #[arg(long, alias = "job-id")]
        job: Option<String>,
        /// Only this state.
        #[arg(long)]
        state: Option<String>,
        /// scheduled_for >= since (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// scheduled_for < until (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Continue a cut list (the cursor a previous page printed).
        #[arg(long)]
        cursor: Option<String>,
        /// Keep printing runs as they appear or change (every 2 s) until interrupted.
        #[arg(long, short = 'w')]
        watch: bool,
    },
    /// Show one run in detail: payload, output, error, every attempt.
    Get {
        /// Run id.
        id: String,
    },
    /// Cancel a run.
    Cancel {
        /// Run id.
        id: String,
    },
    /// Retry a failed, timed-out or cancelled run (due now, with its job's attempts again).
    Retry {
        /// Run id.
        id: String,
    },
    /// Follow one run until it finishes; exits 0 only if it succeeded.
    Watch {
        /// Run id.
        id: String,
    },
}

/// `sundial apply` flags.
#[derive(clap::Args)]
pub struct ApplyArgs {
    /// A YAML (or JSON) file of jobs: a list of `POST /v1/jobs` bodies, `{jobs: [...]}`, or one
    /// job. Each needs a `name`; `namespace` defaults to `default`.
    #[arg(short = 'f', long = "filename")]
    pub file: std::path::PathBuf,
}

/// An API client.
pub(crate) struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    output: Output,
}

/// An API answer that was not 2xx.
#[derive(Debug)]
pub(crate) struct ApiFailure {
    /// HTTP status.
    pub status: u16,
    /// `error.code`.
    pub code: String,
    /// `error.message`.
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiFailure {}

const JOB_COLS: &[&str] = &["id", "namespace", "name", "handler", "triggers", "next_fire_time", "paused", "running"];
const RUN_COLS: &[&str] = &["id", "job_id", "handler", "scheduled_for", "state", "attempt", "worker_name", "reason"];

impl Client {
    /// A client of `server`; a URL that is not `http(s)://host[:port]` is refused here, with
    /// the flag named, rather than as a connection error later.
    pub(crate) fn new(server: &str, token: Option<String>, output: Output) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(server).map_err(|e| {
            anyhow::anyhow!("--server: {server:?} is not a URL ({e}); expected e.g. http://127.0.0.1:7070")
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            bail!("--server: {server:?} is not an http(s) URL; expected e.g. http://127.0.0.1:7070");
        }
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?;
        Ok(Self { base: server.trim_end_matches('/').to_string(), http, token, output })
    }

    /// One API call; a non-2xx answer is an [`ApiFailure`].
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        self.send(method, path, body).await.map(|(_, v)| v)
    }

    /// One API call with the 2xx status it answered.
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            let why = if e.is_connect() { "connection refused or host unknown" } else { "request failed" };
            anyhow::anyhow!(
                "cannot reach the server at {} ({why}; is `sundial serve` running? set --server)",
                self.base
            )
        })?;
        let status = resp.status();
        let text = resp.text().await?;
        let value: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if !status.is_success() {
            let field = |p: &str| value.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
            let message = Some(field("/error/message")).filter(|m| !m.is_empty()).unwrap_or("request failed".into());
            return Err(ApiFailure { status: status.as_u16(), code: field("/error/code"), message }.into());
        }
        Ok((status.as_u16(), value))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, body).await
    }

    /// Prints an API answer: a list as a table (with a hint when it was cut), one object as
    /// `field: value` lines; json/yaml print it as it came.
    pub(crate) fn print(&self, v: &Value, columns: &[&str]) -> anyhow::Result<()> {
        match self.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(v)?),
            Output::Yaml => print!("{}", serde_yaml_ng::to_string(v)?),
            Output::Table => match v.get("items").and_then(Value::as_array) {
                Some(items) => {
                    print_table(&items.iter().collect::<Vec<_>>(), columns);
                    if let Some(c) = v.get("next_cursor").and_then(Value::as_str) {
                        eprintln!("(list cut at {} items; the next page: add --cursor {c})", items.len());
                    }
                }
                None => print_table(&[v], columns),
            },
        }
        Ok(())
    }

    /// The `/v1/jobs/{…}` path segment of a job given by id, `namespace/name` or a bare name.
    ///
    /// A name is sent as `namespace%2Fname` (API.md round 2); a server that does not take names
    /// yet answers 404, and the name is then looked up in the namespace's job list.
    pub(crate) async fn job_ref(&self, job: &str) -> anyhow::Result<String> {
        if uuid_like(job) {
            return Ok(job.to_string());
        }
        let (ns, name) = job.split_once('/').unwrap_or(("default", job));
        let by_name = urlencode(&format!("{ns}/{name}"));
        match self.get(&format!("/v1/jobs/{by_name}")).await {
            Ok(j) => return Ok(j["id"].as_str().map(str::to_string).unwrap_or(by_name)),
            Err(e) if e.downcast_ref::<ApiFailure>().is_some_and(|f| f.status == 404) => {}
            Err(e) => return Err(e),
        }
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("/v1/jobs?limit=1000&namespace={}", urlencode(ns));
            if let Some(c) = &cursor {
                q += &format!("&cursor={}", urlencode(c));
            }
            let page = self.get(&q).await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if let Some(j) = items.iter().find(|j| j["name"] == name) {
                return Ok(j["id"].as_str().unwrap_or_default().to_string());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => bail!("no job named {name:?} in namespace {ns:?}"),
            }
        }
    }

    /// `sundial job …`
    pub(crate) async fn job(&self, cmd: JobCmd) -> anyhow::Result<()> {
        match cmd {
            JobCmd::Add(a) => {
                let body = add_body(*a)?;
                let v = self.post("/v1/jobs", Some(&body)).await?;
                self.print(&v, JOB_COLS)?;
                if let Some(h) = v["handler"].as_str() {
                    self.warn_if_unserved(h).await;
                }
            }
            JobCmd::List { namespace, handler, limit, cursor } => {
                let mut q = format!("/v1/jobs?limit={limit}");
                for (k, v) in [("namespace", namespace), ("handler", handler), ("cursor", cursor)] {
                    if let Some(v) = v {
                        q += &format!("&{k}={}", urlencode(&v));
                    }
                }
                self.print(&self.get(&q).await?, JOB_COLS)?;
            }
            JobCmd::Get { job } => {
                let id = self.job_ref(&job).await?;
                let j = self.get(&format!("/v1/jobs/{id}")).await?;
                if self.output != Output::Table {
                    return self.print(&j, JOB_COLS);
                }
                print_fields(
                    &j,
                    &[
                        "id",
                        "namespace",
                        "name",
                        "handler",
                        "paused",
                        "paused_reason",
                        "priority",
                        "timeout",
                        "overlap",
                        "retry",
                        "limits",
                        "next_fire_time",
                        "running",
                        "last_start_time",
                        "last_end_time",
                        "last_worker",
                        "created_at",
                        "updated_at",
                        "payload",
                    ],
                );
                println!("\nTRIGGERS");
                let triggers: Vec<&Value> = j["triggers"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
                print_table(
                    &triggers,
                    &["id", "kind", "expr", "every", "at", "timezone", "misfire", "next_fire_at", "fires"],
                );
                let runs = self.get(&format!("/v1/runs?job_id={}&limit=5", urlencode(&id))).await?;
                println!("\nRECENT RUNS");
                let recent: Vec<&Value> = runs["items"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
                print_table(&recent, RUN_COLS);
            }
            JobCmd::Pause { job } => {
                let id = self.job_ref(&job).await?;
                self.print(&self.post(&format!("/v1/jobs/{id}/pause"), None).await?, JOB_COLS)?;
            }
            JobCmd::Resume { job } => {
                let id = self.job_ref(&job).await?;
                self.print(&self.post(&format!("/v1/jobs/{id}/resume"), None).await?, JOB_COLS)?;
            }
            JobCmd::Run { job } => {
                let id = self.job_ref(&job).await?;
                self.print(&self.post(&format!("/v1/jobs/{id}/run"), None).await?, RUN_COLS)?;
            }
            JobCmd::Backfill { job, from, until, trigger, overlap } => {
                let id = self.job_ref(&job).await?;
                let body = serde_json::json!({"from": from, "until": until, "trigger_id": trigger, "overlap": overlap});
                self.print(
                    &self.post(&format!("/v1/jobs/{id}/backfill"), Some(&body)).await?,
                    &["created", "existing"],
                )?;
            }
            JobCmd::Delete { job } => {
                let id = self.job_ref(&job).await?;
                self.call(reqwest::Method::DELETE, &format!("/v1/jobs/{id}"), None).await?;
                if self.output == Output::Table {
                    println!("deleted {job}");
                }
            }
        }
        Ok(())
    }

    /// Warns on stderr when no live worker serves `handler` (the job's runs would wait).
    async fn warn_if_unserved(&self, handler: &str) {
        let Ok(workers) = self.get("/v1/workers").await else { return };
        let served = workers["items"].as_array().into_iter().flatten().any(|w| {
            w["state"] == "active" && w["handlers"].as_array().is_some_and(|hs| hs.iter().any(|h| h == handler))
        });
        if !served {
            eprintln!(
                "warning: no live worker serves handler {handler:?}; its runs wait until one registers \
                 (`sundial workers` lists them)"
            );
        }
    }

    /// `sundial run …`
    pub(crate) async fn run(&self, cmd: RunCmd) -> anyhow::Result<()> {
        match cmd {
            RunCmd::List { job, state, since, until, limit, cursor, watch } => {
                let job_id = match job {
                    Some(j) => Some(self.job_ref(&j).await?),
                    None => None,
                };
                let mut q = format!("/v1/runs?limit={limit}");
                for (k, v) in
                    [("job_id", job_id), ("state", state), ("since", since), ("until", until), ("cursor", cursor)]
                {
                    if let Some(v) = v {
                        q += &format!("&{k}={}", urlencode(&v));
                    }
                }
                let page = self.get(&q).await?;
                self.print(&page, RUN_COLS)?;
                if watch {
                    self.watch_list(&q, page).await?;
                }
            }
            RunCmd::Get { id } => {
                let r = self.get(&format!("/v1/runs/{id}")).await?;
                let attempts = match self.get(&format!("/v1/runs/{id}/attempts")).await {
                    Ok(a) => Some(a),
                    // A server without the attempts route still shows the run.
                    Err(e) if e.downcast_ref::<ApiFailure>().is_some_and(|f| matches!(f.status, 404 | 405)) => None,
                    Err(e) => return Err(e),
                };
                if self.output != Output::Table {
                    let mut r = r;
                    if let Some(a) = attempts {
                        r["attempts"] = a["items"].clone();
                    }
                    return self.print(&r, RUN_COLS);
                }
                print_fields(
                    &r,
                    &[
                        "id",
                        "job_id",
                        "handler",
                        "namespace",
                        "state",
                        "reason",
                        "attempt",
                        "max_attempts",
                        "fire_time",
                        "scheduled_for",
                        "started_at",
                        "finished_at",
                        "worker_name",
                        "worker_id",
                        "error",
                        "payload",
                        "output",
                    ],
                );
                if let Some(a) = attempts {
                    println!("\nATTEMPTS");
                    let items: Vec<&Value> = a["items"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
                    print_table(&items, &["attempt", "state", "worker_name", "started_at", "finished_at", "error"]);
                }
            }
            RunCmd::Cancel { id } => self.print(&self.post(&format!("/v1/runs/{id}/cancel"), None).await?, RUN_COLS)?,
            RunCmd::Retry { id } => self.print(&self.post(&format!("/v1/runs/{id}/retry"), None).await?, RUN_COLS)?,
            RunCmd::Watch { id } => return self.watch_run(&id).await,
        }
        Ok(())
    }

    /// Prints each change of one run's state until it is final; fails unless it succeeded.
    async fn watch_run(&self, id: &str) -> anyhow::Result<()> {
        let mut last = String::new();
        loop {
            let r = self.get(&format!("/v1/runs/{id}")).await?;
            let line = format!(
                "{}  attempt {}  {}",
                show(r.get("state"), ""),
                show(r.get("attempt"), ""),
                show(r.get("reason").filter(|v| !v.is_null()).or(r.get("error")), "")
            );
            if line != last {
                if self.output == Output::Table {
                    println!("{}  {line}", chrono::Utc::now().format("%H:%M:%S"));
                } else {
                    self.print(&r, RUN_COLS)?;
                }
                last = line;
            }
            match r["state"].as_str() {
                Some("succeeded") => return Ok(()),
                Some("failed" | "timed_out" | "cancelled" | "skipped") => {
                    bail!("run {id} ended {}: {}", r["state"].as_str().unwrap_or("?"), show(r.get("error"), ""))
                }
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    /// After the first page: every 2 s, prints the runs that are new or changed state.
    async fn watch_list(&self, query: &str, first: Value) -> anyhow::Result<()> {
        let key = |r: &Value| {
            format!("{}:{}:{}", show(r.get("state"), ""), show(r.get("attempt"), ""), show(r.get("id"), ""))
        };
        let mut seen: std::collections::HashSet<String> =
            first["items"].as_array().into_iter().flatten().map(key).collect();
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let page = self.get(query).await?;
            let fresh: Vec<Value> =
                page["items"].as_array().into_iter().flatten().filter(|r| seen.insert(key(r))).rev().cloned().collect();
            for r in fresh {
                match self.output {
                    Output::Table => println!("{}", row(&r, RUN_COLS)),
                    Output::Json => println!("{}", serde_json::to_string(&r)?),
                    Output::Yaml => print!("---\n{}", serde_yaml_ng::to_string(&r)?),
                }
            }
        }
    }

    /// `sundial workers`
    pub(crate) async fn workers(&self) -> anyhow::Result<()> {
        let v = self.get("/v1/workers").await?;
        self.print(&v, &["id", "name", "state", "handlers", "capacity", "running", "last_heartbeat"])
    }

    /// `sundial apply -f FILE`: creates each job, or updates it by `namespace/name`; prints
    /// `created`, `updated` or `unchanged` per job.
    pub(crate) async fn apply(&self, args: ApplyArgs) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(&args.file).with_context(|| format!("-f {}", args.file.display()))?;
        let jobs = super::apply::parse(&text).with_context(|| format!("-f {}", args.file.display()))?;
        let mut failed = 0;
        for (i, job) in jobs.into_iter().enumerate() {
            let label = super::apply::label(&job);
            match self.apply_one(&job).await {
                Ok(outcome) => println!("job {label} {outcome}"),
                Err(e) => {
                    failed += 1;
                    eprintln!("job {label} (item {i}) failed: {e:#}");
                }
            }
        }
        if failed > 0 {
            bail!("{failed} job(s) could not be applied");
        }
        Ok(())
    }

    async fn apply_one(&self, job: &Value) -> anyhow::Result<&'static str> {
        match self.send(reqwest::Method::POST, "/v1/jobs", Some(job)).await {
            Ok((201, _)) => Ok("created"),
            // The same namespace/name with an identical definition.
            Ok(_) => Ok("unchanged"),
            // The name is taken with another definition: change it in place.
            Err(e) if e.downcast_ref::<ApiFailure>().is_some_and(|f| f.status == 409) => {
                let id = self.job_ref(&super::apply::label(job)).await?;
                self.call(reqwest::Method::PATCH, &format!("/v1/jobs/{id}"), Some(&super::apply::patch_body(job)))
                    .await?;
                Ok("updated")
            }
            Err(e) => Err(e),
        }
    }
}

/// Ids are UUIDs; anything else names a job.
fn uuid_like(s: &str) -> bool {
    s.len() == 36
        && s.chars()
            .enumerate()
            .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

fn add_body(a: AddArgs) -> anyhow::Result<Value> {
    if let Some(j) = a.json {
        return serde_json::from_str(&j).context("--json is not valid JSON");
    }
    let Some(handler) = a.handler else { bail!("--handler is required (or give the whole body with --json)") };
    let mut body = json!({ "handler": handler });
    let o = body.as_object_mut().expect("object");
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            o.insert(k.into(), v);
        }
    };
    put("name", a.name.map(Value::from));
    put("namespace", a.namespace.map(Value::from));
    put("priority", a.priority.map(Value::from));
    put("timeout", a.timeout.map(Value::from));
    put("overlap", a.overlap.map(Value::from));
    put("idempotency_key", a.idempotency_key.map(Value::from));
    put("retry", a.max_attempts.map(|m| json!({ "max_attempts": m })));
    if let Some(p) = a.payload {
        put("payload", Some(serde_json::from_str(&p).context("--payload is not valid JSON")?));
    }
    let mut triggers = Vec::new();
    if let Some(expr) = a.cron {
        let mut t = json!({"kind": "cron", "expr": expr});
        if let Some(tz) = a.timezone {
            t["timezone"] = tz.into();
        }
        triggers.push(t);
    }
    if let Some(every) = a.every {
        triggers.push(json!({"kind": "interval", "every": every}));
    }
    if let Some(at) = a.at {
        let t = chrono::DateTime::parse_from_rfc3339(&at).map_err(|e| {
            anyhow::anyhow!("--at: {at:?} is not an RFC 3339 time ({e}); expected e.g. 2026-11-24T08:00:00Z")
        })?;
        triggers.push(json!({"kind": "once", "at": t.with_timezone(&chrono::Utc).to_rfc3339()}));
    }
    if !triggers.is_empty() {
        put("triggers", Some(Value::Array(triggers)));
    }
    Ok(body)
}

pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn show(v: Option<&Value>, column: &str) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if column == "triggers" => a
            .iter()
            .map(|t| match t["kind"].as_str() {
                Some("cron") => {
                    format!("cron {} {}", t["expr"].as_str().unwrap_or(""), t["timezone"].as_str().unwrap_or(""))
                }
                Some("interval") => format!("every {}", t["every"].as_str().unwrap_or("")),
                Some("once") => format!("once {}", t["at"].as_str().unwrap_or("")),
                _ => "?".into(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        Some(Value::Array(a)) => a.iter().map(|x| show(Some(x), "")).collect::<Vec<_>>().join(","),
        Some(other) => other.to_string(),
    }
}

/// `field: value` lines; JSON values (payload, output) pretty-printed under their field.
fn print_fields(v: &Value, fields: &[&str]) {
    let width = fields.iter().map(|f| f.len()).max().unwrap_or(0) + 1;
    for f in fields {
        let Some(x) = v.get(*f) else { continue };
        match x {
            Value::Object(_) | Value::Array(_) if !x.as_object().is_some_and(|o| o.is_empty()) => {
                let pretty = serde_json::to_string_pretty(x).unwrap_or_default();
                println!("{:<width$} {}", format!("{f}:"), pretty.replace('\n', &format!("\n{:width$} ", "")));
            }
            _ => println!("{:<width$} {}", format!("{f}:"), show(Some(x), f)),
        }
    }
}

fn row(r: &Value, columns: &[&str]) -> String {
    columns.iter().map(|c| show(r.get(*c), c)).collect::<Vec<_>>().join("  ")
}

fn print_table(rows: &[&Value], columns: &[&str]) {
    let cells: Vec<Vec<String>> = rows.iter().map(|r| columns.iter().map(|c| show(r.get(*c), c)).collect()).collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r[i].chars().count().min(60)).max().unwrap_or(0).max(c.len()))
        .collect();
    let line = |vals: Vec<String>| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| {
                let v: String = v.chars().take(60).collect();
                format!("{v:<w$}")
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(columns.iter().map(|c| c.to_uppercase()).collect()));
    for r in cells {
        println!("{}", line(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_told_from_names() {
        assert!(uuid_like("0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b"));
        assert!(!uuid_like("nightly-report"));
        assert!(!uuid_like("billing/0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b"));
    }

    #[test]
    fn a_bad_server_url_names_the_flag() {
        for bad in ["localhost:7070", "127.0.0.1", "ftp://x", "http//x"] {
            let e = Client::new(bad, None, Output::Table).err().expect(bad).to_string();
            assert!(e.starts_with("--server: "), "{bad}: {e}");
        }
        assert!(Client::new("http://127.0.0.1:7070/", None, Output::Table).is_ok());
    }

    #[test]
    fn a_bad_at_time_names_the_flag() {
        let args = AddArgs {
            json: None,
            handler: Some("echo".into()),
            name: None,
            namespace: None,
            payload: None,
            cron: None,
            timezone: None,
            every: None,
            at: Some("tomorrow 8am".into()),
            priority: None,
            timeout: None,
            max_attempts: None,
            overlap: None,
            idempotency_key: None,
        };
        let e = add_body(args).unwrap_err().to_string();
        assert!(e.starts_with("--at: \"tomorrow 8am\" is not an RFC 3339 time"), "{e}");
    }
}
