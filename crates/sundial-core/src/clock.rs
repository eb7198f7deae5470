//! Time is injected: every loop and every store call takes `now` from a [`Clock`].
//!
//! Production uses [`SystemClock`]. Tests use [`ManualClock`], whose `advance` wakes anything
//! sleeping on it, so cron, misfire, lease and backoff behaviour is tested without wall-clock
//! sleeps. The application's clock (not the database's `now()`) is the one that counts: nodes
//! are expected to run NTP-synchronised clocks; fencing never depends on clocks agreeing.

use crate::domain::Timestamp;
use chrono::Utc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A source of "now" that loops can also sleep on.
#[async_trait::async_trait]
pub trait Clock: Send + Sync + 'static {
    /// The current instant, truncated to microseconds (the store's precision).
    fn now(&self) -> Timestamp;
    /// Sleeps until `deadline` by this clock's reckoning.
    async fn sleep_until(&self, deadline: Timestamp);
    /// Sleeps for `d` by this clock's reckoning.
    async fn sleep(&self, d: Duration) {
        let deadline = self.now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        self.sleep_until(deadline).await
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// Truncates to microseconds, the precision both stores keep.
pub fn truncate_micros(t: Timestamp) -> Timestamp {
    chrono::DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        truncate_micros(Utc::now())
    }
    async fn sleep_until(&self, deadline: Timestamp) {
        let left = (deadline - self.now()).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(left).await
    }
}

/// A clock that moves only when told to. Sleepers wake when `set`/`advance` passes their
/// deadline.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Timestamp>>,
    tick: watch::Sender<Timestamp>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        let start = truncate_micros(start);
        let (tick, _) = watch::channel(start);
        Self { now: Arc::new(Mutex::new(start)), tick }
    }
    /// Moves the clock to `t` (never backwards).
    pub fn set(&self, t: Timestamp) {
        let mut now = self.now.lock().expect("clock lock");
        if t > *now {
            *now = truncate_micros(t);
        }
        let _ = self.tick.send(*now);
    }
    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let t = self.now() + chrono::Duration::from_std(d).expect("duration fits");
        self.set(t);
    }
}

#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().expect("clock lock")
    }
    async fn sleep_until(&self, deadline: Timestamp) {
        let mut rx = self.tick.subscribe();
        while self.now() < deadline {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_advanced_past_their_deadline() {
        let start = Utc::now();
        let clock = ManualClock::new(start);
        let c2 = clock.clone();
        let sleeper = tokio::spawn(async move { c2.sleep(Duration::from_secs(60)).await });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(30));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke before its deadline");
        clock.advance(Duration::from_secs(31));
        tokio::time::timeout(Duration::from_secs(5), sleeper).await.unwrap().unwrap();
    }
}
