//! A job is what to run: a handler name, its payload and the policies around its runs.

use super::{duration, trigger::TriggerWire, FieldError, Trigger, TriggerSpec};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Default namespace when a submission names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// How often a failed run is retried and how far apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// A run is claimed at most this many times.
    #[serde(default = "RetryPolicy::default_max_attempts")]
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each attempt.
    #[serde(default = "RetryPolicy::default_initial_delay", with = "duration::required")]
    #[schema(value_type = String)]
    pub initial_delay: Duration,
    /// Backoff ceiling.
    #[serde(default = "RetryPolicy::default_max_delay", with = "duration::required")]
    #[schema(value_type = String)]
    pub max_delay: Duration,
}

impl RetryPolicy {
    fn default_max_attempts() -> u32 {
        5
    }
    fn default_initial_delay() -> Duration {
        Duration::from_secs(1)
    }
    fn default_max_delay() -> Duration {
        Duration::from_secs(600)
    }

    /// The backoff after attempt `attempt` (1-based) failed, before jitter:
    /// `initial_delay * 2^(attempt-1)`, capped at `max_delay`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        self.initial_delay.saturating_mul(1u32 << exp).min(self.max_delay)
    }

    /// [`backoff`](Self::backoff) with up to +10 % random jitter, so retries of many runs
    /// failing together do not arrive together.
    pub fn backoff_with_jitter(&self, attempt: u32) -> Duration {
        let base = self.backoff(attempt);
        let jitter = rand::random::<f64>() * 0.1;
        base + base.mul_f64(jitter)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: Self::default_max_attempts(),
            initial_delay: Self::default_initial_delay(),
            max_delay: Self::default_max_delay(),
        }
    }
}

/// What happens when a job fires while an earlier run of it is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Runs may overlap freely.
    #[default]
    Allow,
    /// A fire while a run is active records a `skipped` run.
    Skip,
    /// One run waits `pending` behind the running one; further fires are `skipped`.
    BufferOne,
    /// The running run is cancelled and the new one starts.
    CancelOther,
}

impl Overlap {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Skip => "skip",
            Overlap::BufferOne => "buffer_one",
            Overlap::CancelOther => "cancel_other",
        }
    }
    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Overlap::Allow),
            "skip" => Some(Overlap::Skip),
            "buffer_one" => Some(Overlap::BufferOne),
            "cancel_other" => Some(Overlap::CancelOther),
            _ => None,
        }
    }
}

/// `POST /v1/jobs` body, as parsed (types checked, values not yet validated).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Unique in its namespace; generated when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Default `default`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The handler a worker registered, or `echo`, `shell`, `http`.
    pub handler: String,
    /// Any JSON; default `{}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Option<serde_json::Value>,
    /// Higher runs first.
    #[serde(default)]
    pub priority: Option<i32>,
    /// Retry policy.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// A run that exceeds it is `timed_out`.
    #[serde(default, with = "duration::optional")]
    #[schema(value_type = Option<String>)]
    pub timeout: Option<Duration>,
    /// Overlap policy.
    #[serde(default)]
    pub overlap: Option<Overlap>,
    /// Created paused.
    #[serde(default)]
    pub paused: Option<bool>,
    /// A repeated submission with this key returns the first job.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// None = one run, due now.
    #[serde(default)]
    pub triggers: Option<Vec<TriggerWire>>,
    /// Flow-control keys (up to 8) its runs are limited and taken in turns by.
    #[serde(default)]
    pub limits: Option<Vec<String>>,
    /// Pause the job after this many runs in a row end `failed` or `timed_out` (at least 1;
    /// null = never).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub pause_after_failures: Option<i64>,
}

/// A validated job definition, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Given name, or `None` to generate one from the id.
    pub name: Option<String>,
    /// Namespace.
    pub namespace: String,
    /// Handler name.
    pub handler: String,
    /// Parameters for the handler.
    pub payload: serde_json::Value,
    /// Higher first.
    pub priority: i32,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// Overlap policy.
    pub overlap: Overlap,
    /// Created paused.
    pub paused: bool,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Triggers; empty = one run due now.
    pub triggers: Vec<TriggerSpec>,
    /// Flow-control keys; runs keep the ones their job had when they were created.
    pub limits: Vec<String>,
    /// Runs in a row that end `failed` or `timed_out` before the job is paused; `None` = never.
    pub pause_after_failures: Option<u32>,
}

const MAX_NAME_LEN: usize = 200;

/// Most triggers one job may have.
pub const MAX_TRIGGERS: usize = 100;

impl JobSpec {
    /// Validates a parsed request's shape; errors name the field by its full path. Entry points
    /// use `schedule::validate_job`, which also compiles each trigger's schedule.
    pub fn from_request(r: JobRequest) -> Result<Self, FieldError> {
        let handler = r.handler.trim().to_string();
        if handler.is_empty() {
            return Err(FieldError::new("handler", "must not be empty"));
        }
        if let Some(name) = &r.name {
            if name.trim().is_empty() {
                return Err(FieldError::new("name", "must not be empty"));
            }
            if name.len() > MAX_NAME_LEN {
                return Err(FieldError::new("name", format!("is longer than {MAX_NAME_LEN} bytes")));
            }
        }
        let namespace = r.namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        if namespace.trim().is_empty() {
            return Err(FieldError::new("namespace", "must not be empty"));
        }
        let retry = r.retry.unwrap_or_default();
        if retry.max_attempts == 0 {
            return Err(FieldError::new("retry.max_attempts", "must be at least 1"));
        }
        if retry.max_delay < retry.initial_delay {
            return Err(FieldError::new("retry.max_delay", "is shorter than retry.initial_delay"));
        }
        if r.timeout == Some(Duration::ZERO) {
            return Err(FieldError::new("timeout", "must be greater than zero"));
        }
        if let Some(k) = &r.idempotency_key {
            if k.is_empty() {
                return Err(FieldError::new("idempotency_key", "must not be empty"));
            }
        }
        let limits = r.limits.unwrap_or_default();
        super::limit::check_job_keys(&limits)?;
        let pause_after_failures = match r.pause_after_failures {
            None => None,
            Some(n) => Some(u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                FieldError::new("pause_after_failures", format!("must be an integer from 1 to {}, got {n}", u32::MAX))
            })?),
        };
        let wires = r.triggers.unwrap_or_default();
        if wires.len() > MAX_TRIGGERS {
            return Err(FieldError::new(
                "triggers",
                format!("at most {MAX_TRIGGERS} triggers per job, got {}", wires.len()),
            ));
        }
        let mut triggers = Vec::new();
        for (i, t) in wires.iter().enumerate() {
            triggers.push(TriggerSpec::from_wire(t).map_err(|e| e.within(&format!("triggers[{i}]")))?);
        }
        Ok(JobSpec {
            name: r.name,
            namespace,
            handler,
            payload: r.payload.unwrap_or_else(|| serde_json::json!({})),
            priority: r.priority.unwrap_or(0),
            retry,
            timeout: r.timeout,
            overlap: r.overlap.unwrap_or_default(),
            paused: r.paused.unwrap_or(false),
            idempotency_key: r.idempotency_key,
            triggers,
            limits,
            pause_after_failures,
        })
    }

    /// Checks the server's `--min-interval` on every interval trigger (`triggers[i].every`).
    pub fn check_min_interval(&self, min: Duration) -> Result<(), FieldError> {
        for (i, t) in self.triggers.iter().enumerate() {
            t.check_min_interval(min).map_err(|e| e.within(&format!("triggers[{i}]")))?;
        }
        Ok(())
    }

    /// A stable fingerprint of the definition, to tell "same submission again" (200) from
    /// "name or key taken by another definition" (409). `paused` and the key are state, not
    /// definition, and a generated name is not part of what the client said.
    pub fn fingerprint(&self) -> String {
        let triggers: Vec<_> = self
            .triggers
            .iter()
            .map(|t| {
                let mut w = serde_json::to_value(t.to_wire()).expect("trigger serializes");
                // Only when set, so jobs stored before calendars existed keep their fingerprint.
                if t.calendars.is_empty() {
                    if let Some(o) = w.as_object_mut() {
                        o.remove("calendars");
                    }
                }
                w
            })
            .collect();
        let mut canonical = serde_json::json!({
            "name": self.name,
            "namespace": self.namespace,
            "handler": self.handler,
            "payload": self.payload,
            "priority": self.priority,
            "retry": self.retry,
            "timeout": self.timeout.map(duration::format),
            "overlap": self.overlap,
            "triggers": triggers,
        });
        // Only when set, so jobs stored before limits existed keep their fingerprint.
        if !self.limits.is_empty() {
            canonical["limits"] = serde_json::json!(self.limits);
        }
        if let Some(n) = self.pause_after_failures {
            canonical["pause_after_failures"] = serde_json::json!(n);
        }
        // serde_json's Map is ordered by key, so this string is canonical.
        canonical.to_string()
    }
}

/// A job as stored and returned by the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Job {
    /// Opaque id.
    pub id: String,
    /// Unique in its namespace.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Handler name.
    pub handler: String,
    /// Parameters for the handler.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Higher first.
    pub priority: i32,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Per-attempt timeout.
    #[serde(with = "duration::optional")]
    #[schema(value_type = Option<String>)]
    pub timeout: Option<Duration>,
    /// Overlap policy.
    pub overlap: Overlap,
    /// Paused jobs do not fire and their pending runs are not claimed.
    pub paused: bool,
    /// Idempotency key, if one was given.
    pub idempotency_key: Option<String>,
    /// Triggers with their progress.
    #[schema(value_type = Vec<TriggerWire>)]
    pub triggers: Vec<Trigger>,
    /// Flow-control keys (`[]` when none).
    pub limits: Vec<String>,
    /// Runs in a row that end `failed` or `timed_out` before the server pauses the job; null =
    /// never.
    pub pause_after_failures: Option<u32>,
    /// Why the server paused the job (`"paused after 3 runs in a row failed"`); null unless the
    /// server paused it. Resume clears it.
    pub paused_reason: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last definition change.
    pub updated_at: DateTime<Utc>,
    /// Earliest next fire time of its triggers; null when none is left.
    pub next_fire_time: Option<DateTime<Utc>>,
    /// Whether a run of it is running now.
    pub running: bool,
    /// When its latest attempt started.
    pub last_start_time: Option<DateTime<Utc>>,
    /// When its latest finished run ended.
    pub last_end_time: Option<DateTime<Utc>>,
    /// Worker of its latest attempt.
    pub last_worker: Option<String>,
    /// Definition fingerprint (internal).
    #[serde(skip)]
    pub fingerprint: String,
}

impl Job {
    /// The definition part, as a request body, so PATCH can merge into it.
    pub fn to_request(&self) -> JobRequest {
        JobRequest {
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            handler: self.handler.clone(),
            payload: Some(self.payload.clone()),
            priority: Some(self.priority),
            retry: Some(self.retry),
            timeout: self.timeout,
            overlap: Some(self.overlap),
            paused: Some(self.paused),
            idempotency_key: self.idempotency_key.clone(),
            triggers: Some(self.triggers.iter().map(|t| t.spec.to_wire()).collect()),
            limits: Some(self.limits.clone()),
            pause_after_failures: self.pause_after_failures.map(i64::from),
        }
    }
}
