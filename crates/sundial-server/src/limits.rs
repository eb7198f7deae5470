//! Limits on input, each a `serve` flag with a safe default: job payload size, the minimum
//! interval period, and the per-token request rate. (The body size is axum's limit, mapped to
//! our 413 in [`crate::body`]; triggers per job and `catch_up_limit` are domain rules.)

use crate::error::ApiError;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;
use std::time::Duration;
use sundial_core::domain::job::JobRequest;
use sundial_core::domain::{JobSpec, Timestamp};

/// Default `--max-payload`: 1 MiB of payload JSON per job.
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;
/// Default `--min-interval`.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The job-shape limits the API enforces on top of the domain's validation.
#[derive(Debug, Clone, Copy)]
pub struct JobLimits {
    /// Largest payload, measured as its JSON text.
    pub max_payload: usize,
    /// Shortest interval period.
    pub min_interval: Duration,
}

impl Default for JobLimits {
    fn default() -> Self {
        Self { max_payload: DEFAULT_MAX_PAYLOAD, min_interval: DEFAULT_MIN_INTERVAL }
    }
}

impl JobLimits {
    /// Validates a submission: payload size (413 `payload_too_large`), the domain's rules and
    /// the minimum interval (422, with the field's path).
    pub fn validate(&self, req: JobRequest, now: Timestamp) -> Result<JobSpec, ApiError> {
        if let Some(payload) = &req.payload {
            let size = serde_json::to_string(payload).map_or(0, |s| s.len());
            if size > self.max_payload {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("payload: {size} bytes of JSON is over the server's --max-payload of {}", self.max_payload),
                ));
            }
        }
        let spec = sundial_core::schedule::validate_job(req, now)?;
        spec.check_min_interval(self.min_interval)?;
        Ok(spec)
    }
}

/// `--rate-limit N/s`: a token bucket of `N` per second with a burst of `N`, per token.
pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimiter")
    }
}

impl RateLimiter {
    /// `per_second` requests per second per token.
    pub fn new(per_second: NonZeroU32) -> Self {
        Self { limiter: governor::RateLimiter::keyed(Quota::per_second(per_second)), clock: DefaultClock::default() }
    }

    /// Takes one request from `key`'s bucket, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.limiter.check_key(&key.to_string()).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// Parses `N/s` (or a bare `N`) for `--rate-limit`.
pub fn parse_rate(s: &str) -> Result<NonZeroU32, String> {
    let n = s.trim().strip_suffix("/s").unwrap_or(s.trim());
    n.trim().parse::<NonZeroU32>().map_err(|_| format!("expected a rate like 100/s, got {s:?}"))
}

/// 429 `rate_limited` with `Retry-After` in whole seconds (at least 1).
pub fn rate_limited(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("this token is over the server's --rate-limit; retry in {secs}s"),
    )
    .into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_or_without_the_unit() {
        assert_eq!(parse_rate("100/s").unwrap().get(), 100);
        assert_eq!(parse_rate("5").unwrap().get(), 5);
        assert!(parse_rate("0/s").is_err() && parse_rate("fast").is_err());
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_per_key() {
        let l = RateLimiter::new(NonZeroU32::new(3).unwrap());
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        let wait = l.check("a").expect_err("over the burst");
        assert!(wait <= Duration::from_secs(1));
        assert!(l.check("b").is_ok(), "another token has its own bucket");
    }

    #[test]
    fn payload_over_the_limit_is_413_and_short_intervals_are_422() {
        let limits = JobLimits { max_payload: 10, min_interval: Duration::from_secs(1) };
        let big = JobRequest {
            handler: "echo".into(),
            payload: Some(serde_json::json!({"x": "0123456789"})),
            ..Default::default()
        };
        let e = limits.validate(big, chrono::Utc::now()).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (413, "payload_too_large"));
        let fast: JobRequest = serde_json::from_value(serde_json::json!({
            "handler": "echo", "triggers": [{"kind": "cron", "expr": "* * * * *"}, {"kind": "interval", "every": "999ms"}]
        }))
        .unwrap();
        let e = limits.validate(fast, chrono::Utc::now()).unwrap_err();
        assert_eq!(e.status.as_u16(), 422);
        assert!(e.message.starts_with("triggers[1].every: must be at least 1s"), "{}", e.message);
    }
}
