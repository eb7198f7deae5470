//! The HTTP calls the benchmark makes, and its correctness checks on stored runs.

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// A run as the API lists it (the fields the benchmark reads).
#[derive(Debug, Clone, Deserialize)]
pub(super) struct RunRow {
    /// Its job.
    pub job_id: String,
    /// State.
    pub state: String,
    /// Claims so far.
    pub attempt: u32,
    /// When it was due.
    pub scheduled_for: DateTime<Utc>,
    /// Start of the latest attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct JobRef {
    id: String,
}

#[derive(Deserialize)]
struct BatchItem {
    status: u16,
    job: Option<JobRef>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct BatchResponse {
    items: Vec<BatchItem>,
}

/// A client of one server.
#[derive(Clone)]
pub(super) struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// A client of the server at `base`.
    pub(super) fn new(http: &reqwest::Client, base: &str) -> Self {
        Self { http: http.clone(), base: base.trim_end_matches('/').to_string() }
    }

    /// `POST /v1/jobs` with a prebuilt body; the new job's id (anything but 201 is an error).
    pub(super) async fn submit(&self, body: String) -> anyhow::Result<String> {
        let bytes = self.post_json("/v1/jobs", body, 201).await?;
        Ok(serde_json::from_slice::<JobRef>(&bytes).context("POST /v1/jobs response")?.id)
    }

    /// POSTs a prebuilt JSON body; the answer's bytes, or an error unless it is `expect`.
    async fn post_json(&self, path: &str, body: impl Into<reqwest::Body>, expect: u16) -> anyhow::Result<Vec<u8>> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.as_u16() != expect {
            bail!("POST {path} answered {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(bytes.to_vec())
    }

    /// `POST /v1/jobs/batch` with a prebuilt body; the new jobs' ids, in order (any item but
    /// 201 is an error).
    pub(super) async fn submit_batch(&self, body: Vec<u8>) -> anyhow::Result<Vec<String>> {
        let bytes = self.post_json("/v1/jobs/batch", body, 200).await?;
        let parsed: BatchResponse = serde_json::from_slice(&bytes).context("POST /v1/jobs/batch response")?;
        let mut ids = Vec::with_capacity(parsed.items.len());
        for (i, item) in parsed.items.into_iter().enumerate() {
            match (item.status, item.job) {
                (201, Some(job)) => ids.push(job.id),
                (s, _) => bail!("batch item {i} answered {s}: {}", item.error.unwrap_or_default()),
            }
        }
        Ok(ids)
    }

    /// Every run in `state` (all pages).
    pub(super) async fn runs(&self, state: &str) -> anyhow::Result<Vec<RunRow>> {
        self.list_runs(Some(state), None).await
    }

    /// Every run, whatever its state (all pages).
    pub(super) async fn all_runs(&self) -> anyhow::Result<Vec<RunRow>> {
        self.list_runs(None, None).await
    }

    /// Whether any run is in `state` (one row asked for).
    pub(super) async fn any_run(&self, state: &str) -> anyhow::Result<bool> {
        Ok(!self.list_runs(Some(state), Some(1)).await?.is_empty())
    }

    async fn list_runs(&self, state: Option<&str>, only: Option<u32>) -> anyhow::Result<Vec<RunRow>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        let limit = only.unwrap_or(1000).to_string();
        loop {
            let mut req = self.http.get(format!("{}/v1/runs", self.base)).query(&[("limit", limit.as_str())]);
            if let Some(state) = state {
                req = req.query(&[("state", state)]);
            }
            if let Some(c) = &cursor {
                req = req.query(&[("cursor", c.as_str())]);
            }
            let resp = req.send().await?;
            let status = resp.status();
            let bytes = resp.bytes().await?;
            if !status.is_success() {
                bail!("GET /v1/runs answered {status}: {}", String::from_utf8_lossy(&bytes));
            }
            let page: Page<RunRow> = serde_json::from_slice(&bytes).context("GET /v1/runs response")?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) if only.is_none() => cursor = Some(c),
                _ => return Ok(out),
            }
        }
    }

    /// `/metrics`, parsed into `name{labels}` → value (unlabelled: `name`).
    pub(super) async fn metrics(&self) -> anyhow::Result<HashMap<String, f64>> {
        let text = self.http.get(format!("{}/metrics", self.base)).send().await?.error_for_status()?.text().await?;
        Ok(parse_metrics(&text))
    }

    /// Runs per state, from `/metrics` (counted in the store at scrape time).
    pub(super) async fn run_counts(&self) -> anyhow::Result<RunCounts> {
        let m = self.metrics().await?;
        let mut by_state = HashMap::new();
        for (k, v) in &m {
            if let Some(state) = k.strip_prefix("sundial_runs{state=\"").and_then(|s| s.strip_suffix("\"}")) {
                by_state.insert(state.to_string(), *v as u64);
            }
        }
        Ok(RunCounts { by_state, metrics: m })
    }

    /// Polls until `target` runs have succeeded. Fails when a run fails, when more than
    /// `target` runs exist, or when nothing finishes for `stall`.
    pub(super) async fn wait_succeeded(
        &self,
        target: u64,
        poll: Duration,
        stall: Duration,
        pb: &indicatif::ProgressBar,
    ) -> anyhow::Result<RunCounts> {
        let mut last = 0;
        let mut last_change = Instant::now();
        loop {
            let counts = self.run_counts().await?;
            let done = counts.get("succeeded");
            pb.set_position(done);
            let bad: u64 = ["failed", "timed_out", "cancelled", "skipped"].iter().map(|s| counts.get(s)).sum();
            if bad > 0 {
                bail!("{bad} runs ended other than succeeded: {:?}", counts.by_state);
            }
            if done >= target {
                return Ok(counts);
            }
            if done != last {
                last = done;
                last_change = Instant::now();
            } else if last_change.elapsed() > stall {
                bail!("stalled: {done} of {target} runs succeeded, none more in {stall:?}: {:?}", counts.by_state);
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// Runs per state.
pub(super) struct RunCounts {
    by_state: HashMap<String, u64>,
    /// Every metric of the scrape.
    pub metrics: HashMap<String, f64>,
}

impl RunCounts {
    /// Counts of listed runs (when a `/metrics` scrape would cost the server too much).
    pub(super) fn from_runs(runs: &[RunRow]) -> Self {
        let mut by_state = HashMap::new();
        for r in runs {
            *by_state.entry(r.state.clone()).or_insert(0) += 1;
        }
        Self { by_state, metrics: HashMap::new() }
    }

    /// Runs in `state`.
    pub(super) fn get(&self, state: &str) -> u64 {
        self.by_state.get(state).copied().unwrap_or(0)
    }

    /// Runs in any state.
    pub(super) fn total(&self) -> u64 {
        self.by_state.values().sum()
    }

    /// Mean of a histogram/summary metric (`_sum` / `_count`).
    pub(super) fn mean(&self, name: &str) -> Option<f64> {
        let sum = self.metrics.get(&format!("{name}_sum"))?;
        let count = self.metrics.get(&format!("{name}_count"))?;
        (*count > 0.0).then(|| sum / count)
    }
}

fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some((name, value)) = line.rsplit_once(' ') {
            if let Ok(v) = value.trim().parse::<f64>() {
                out.insert(name.trim().to_string(), v);
            }
        }
    }
    out
}

/// What every listed run should look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// Stored, never claimed.
    Pending,
    /// Claimed once and succeeded.
    Succeeded,
}

/// Checks that `runs` (everything the server holds in the expected state, listed) are exactly
/// one run for each job in `expected`, all in the expected state (succeeded: claimed exactly
/// once), and that the server counts no other runs.
pub(super) fn check_runs(
    runs: &[RunRow],
    expected: &HashSet<String>,
    counts: &RunCounts,
    want: Expect,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut seen: HashSet<&str> = HashSet::with_capacity(runs.len());
    let (mut dup, mut unknown, mut bad_attempt, mut bad_state) = (0usize, 0usize, 0usize, 0usize);
    for r in runs {
        if !seen.insert(&r.job_id) {
            dup += 1;
        }
        if !expected.contains(&r.job_id) {
            unknown += 1;
        }
        let (state_ok, attempt_ok) = match want {
            Expect::Pending => (r.state == "pending" && r.started_at.is_none(), r.attempt == 0),
            Expect::Succeeded => {
                (r.state == "succeeded" && r.started_at.is_some() && r.finished_at.is_some(), r.attempt == 1)
            }
        };
        bad_state += usize::from(!state_ok);
        bad_attempt += usize::from(!attempt_ok);
    }
    let missing = expected.iter().filter(|j| !seen.contains(j.as_str())).count();
    let state = if want == Expect::Pending { "pending" } else { "succeeded" };
    if runs.len() != expected.len() {
        problems.push(format!("{} {state} runs listed for {} jobs", runs.len(), expected.len()));
    }
    if dup > 0 {
        problems.push(format!("{dup} jobs have more than one run"));
    }
    if missing > 0 {
        problems.push(format!("{missing} jobs have no {state} run"));
    }
    if unknown > 0 {
        problems.push(format!("{unknown} runs of jobs the benchmark did not submit"));
    }
    if bad_attempt > 0 {
        let want_attempt = if want == Expect::Pending { 0 } else { 1 };
        problems.push(format!("{bad_attempt} runs with attempt other than {want_attempt} (claimed more than once?)"));
    }
    if bad_state > 0 {
        problems.push(format!("{bad_state} runs not {state} (or missing start/finish times)"));
    }
    if counts.total() != expected.len() as u64 || counts.get(state) != expected.len() as u64 {
        problems.push(format!(
            "the server counts {} runs, {} {state}, for {} jobs",
            counts.total(),
            counts.get(state),
            expected.len()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join(", "))
    }
}

/// Milliseconds from `a` to `b`.
pub(super) fn ms_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_microseconds().map_or(f64::NAN, |us| us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(job: &str, attempt: u32) -> RunRow {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-24T00:00:00Z").unwrap().with_timezone(&Utc);
        RunRow {
            job_id: job.into(),
            state: "succeeded".into(),
            attempt,
            scheduled_for: t,
            started_at: Some(t),
            finished_at: Some(t),
        }
    }

    #[test]
    fn lost_and_duplicated_runs_fail_the_check() {
        let expected: HashSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let good = vec![run("a", 1), run("b", 1)];
        assert!(check_runs(&good, &expected, &RunCounts::from_runs(&good), Expect::Succeeded).is_ok());
        let dup = vec![run("a", 1), run("a", 1)];
        let e = check_runs(&dup, &expected, &RunCounts::from_runs(&dup), Expect::Succeeded).unwrap_err();
        assert!(e.contains("more than one run") && e.contains("1 jobs have no succeeded run"), "{e}");
        let retried = vec![run("a", 1), run("b", 2)];
        let e = check_runs(&retried, &expected, &RunCounts::from_runs(&retried), Expect::Succeeded).unwrap_err();
        assert!(e.contains("attempt other than 1"), "{e}");
        let lost = vec![run("a", 1)];
        assert!(check_runs(&lost, &expected, &RunCounts::from_runs(&lost), Expect::Succeeded).is_err());
    }

    #[test]
    fn metrics_text_is_parsed() {
        let m = parse_metrics(
            "# TYPE sundial_runs gauge\nsundial_runs{state=\"succeeded\"} 12\nsundial_jobs 3\n\
             sundial_group_commit_size_sum 40\nsundial_group_commit_size_count 4\n",
        );
        assert_eq!(m["sundial_runs{state=\"succeeded\"}"], 12.0);
        assert_eq!(m["sundial_jobs"], 3.0);
    }
}
