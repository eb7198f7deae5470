//! `sundial job|run|workers`: thin clients of the HTTP API. Human tables by default,
//! `--output json` prints the API's JSON as is, for scripts.

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use serde_json::{json, Value};

/// Output format.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// The API's JSON.
    Json,
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
    },
    /// Show one job.
    Get {
        /// Job id.
        id: String,
    },
    /// Pause a job.
    Pause {
        /// Job id.
        id: String,
    },
    /// Resume a job.
    Resume {
        /// Job id.
        id: String,
    },
    /// Run a job now.
    Run {
        /// Job id.
        id: String,
    },
    /// Delete a job (its runs stay queryable).
    Delete {
        /// Job id.
        id: String,
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
    /// Once trigger at this RFC 3339 time.
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
        /// Only this job's runs.
        #[arg(long)]
        job_id: Option<String>,
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
    },
    /// Show one run with its output.
    Get {
        /// Run id.
        id: String,
    },
    /// Cancel a run.
    Cancel {
        /// Run id.
        id: String,
    },
}

/// An API client.
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    output: Output,
}

impl Client {
    /// A client of `server`.
    pub fn new(server: &str, token: Option<String>, output: Output) -> Self {
        Self { base: server.trim_end_matches('/').to_string(), http: reqwest::Client::new(), token, output }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await?;
        let value: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if !status.is_success() {
            let msg = value.pointer("/error/message").and_then(Value::as_str).unwrap_or("request failed");
            let code = value.pointer("/error/code").and_then(Value::as_str).unwrap_or("");
            bail!("{status} {code}: {msg}");
        }
        Ok(value)
    }

    fn print(&self, v: &Value, columns: &[&str]) {
        if self.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            return;
        }
        let rows: Vec<&Value> = match v.get("items").and_then(Value::as_array) {
            Some(items) => items.iter().collect(),
            None => vec![v],
        };
        print_table(&rows, columns);
    }

    /// `sundial job …`
    pub async fn job(&self, cmd: JobCmd) -> anyhow::Result<()> {
        const COLS: &[&str] = &["id", "name", "handler", "triggers", "next_fire_time", "paused", "running"];
        use reqwest::Method;
        match cmd {
            JobCmd::Add(a) => {
                let v = self.call(Method::POST, "/v1/jobs", Some(add_body(*a)?)).await?;
                self.print(&v, COLS);
            }
            JobCmd::List { namespace, handler, limit } => {
                let mut q = format!("/v1/jobs?limit={limit}");
                if let Some(n) = namespace {
                    q += &format!("&namespace={}", urlencode(&n));
                }
                if let Some(h) = handler {
                    q += &format!("&handler={}", urlencode(&h));
                }
                let v = self.call(Method::GET, &q, None).await?;
                self.print(&v, COLS);
            }
            JobCmd::Get { id } => {
                let v = self.call(Method::GET, &format!("/v1/jobs/{id}"), None).await?;
                self.print(&v, COLS);
            }
            JobCmd::Pause { id } => {
                self.print(&self.call(Method::POST, &format!("/v1/jobs/{id}/pause"), None).await?, COLS)
            }
            JobCmd::Resume { id } => {
                self.print(&self.call(Method::POST, &format!("/v1/jobs/{id}/resume"), None).await?, COLS)
            }
            JobCmd::Run { id } => self.print(
                &self.call(Method::POST, &format!("/v1/jobs/{id}/run"), None).await?,
                &["id", "job_id", "scheduled_for", "state"],
            ),
            JobCmd::Delete { id } => {
                self.call(Method::DELETE, &format!("/v1/jobs/{id}"), None).await?;
                if self.output == Output::Table {
                    println!("deleted {id}");
                }
            }
        }
        Ok(())
    }

    /// `sundial run …`
    pub async fn run(&self, cmd: RunCmd) -> anyhow::Result<()> {
        const COLS: &[&str] = &["id", "job_id", "scheduled_for", "state", "attempt", "worker_id", "output", "reason"];
        use reqwest::Method;
        match cmd {
            RunCmd::List { job_id, state, since, until, limit } => {
                let mut q = format!("/v1/runs?limit={limit}");
                for (k, v) in [("job_id", job_id), ("state", state), ("since", since), ("until", until)] {
                    if let Some(v) = v {
                        q += &format!("&{k}={}", urlencode(&v));
                    }
                }
                self.print(&self.call(Method::GET, &q, None).await?, COLS);
            }
            RunCmd::Get { id } => self.print(&self.call(Method::GET, &format!("/v1/runs/{id}"), None).await?, COLS),
            RunCmd::Cancel { id } => {
                self.print(&self.call(Method::POST, &format!("/v1/runs/{id}/cancel"), None).await?, COLS)
            }
        }
        Ok(())
    }

    /// `sundial workers`
    pub async fn workers(&self) -> anyhow::Result<()> {
        let v = self.call(reqwest::Method::GET, "/v1/workers", None).await?;
        self.print(&v, &["id", "name", "state", "handlers", "capacity", "running", "last_heartbeat"]);
        Ok(())
    }
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
        triggers.push(json!({"kind": "once", "at": at}));
    }
    if !triggers.is_empty() {
        put("triggers", Some(Value::Array(triggers)));
    }
    Ok(body)
}

fn urlencode(s: &str) -> String {
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
