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

pub use sundial_core::input::{JobLimits, DEFAULT_MAX_PAYLOAD, DEFAULT_MIN_INTERVAL};

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
}
