//! The reaper settles what nobody will report: runs whose lease expired (their worker died,
//! hung or was partitioned), runs that overran their timeout without a word, workers silent for
//! 2 × lease (marked `dead`), and, for retention, finished runs older than the configured age.
//! Every outcome is a recorded run state with a reason (guarantee 4).

use crate::clock::SharedClock;
use crate::domain::RunState;
use crate::signals::Signals;
use crate::store::{ReapParams, ReapReport, Result, SharedStore};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Reaper settings.
#[derive(Debug, Clone, Copy)]
pub struct ReaperConfig {
    /// The lease length workers get; silent for twice this means dead.
    pub lease: Duration,
    /// How often to look.
    pub interval: Duration,
    /// Finished runs older than this are pruned; `None` keeps them forever.
    pub retention: Option<Duration>,
    /// Batch size for each step.
    pub batch: u32,
}

/// Recovers expired leases and prunes old runs.
pub struct Reaper {
    store: SharedStore,
    clock: SharedClock,
    signals: Arc<Signals>,
    config: ReaperConfig,
}

impl Reaper {
    /// A reaper over `store`.
    pub fn new(store: SharedStore, clock: SharedClock, signals: Arc<Signals>, config: ReaperConfig) -> Self {
        Self { store, clock, signals, config }
    }

    /// One pass at the clock's `now`.
    pub async fn tick(&self) -> Result<ReapReport> {
        let report = self
            .store
            .run_reap(&ReapParams {
                now: self.clock.now(),
                // The worker reports its own timeout; give it one heartbeat period to do so.
                timeout_grace: self.config.lease / 3,
                dead_after: self.config.lease * 2,
                limit: self.config.batch,
            })
            .await?;
        crate::metrics::reaped(&report);
        if report.expired.iter().chain(&report.timed_out).any(|(_, s)| *s == RunState::Pending) {
            self.signals.runs_ready.notify_waiters();
        }
        Ok(report)
    }

    /// Deletes finished runs past retention, one batch.
    pub async fn prune(&self) -> Result<u64> {
        let Some(keep) = self.config.retention else { return Ok(0) };
        let before = self.clock.now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        self.store.run_prune(before, self.config.batch).await
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut passes: u64 = 0;
        while !shutdown.is_cancelled() {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "reaper pass failed");
            }
            // Retention is not urgent: about once a minute at the default interval.
            if passes.is_multiple_of(60) {
                match self.prune().await {
                    Ok(n) if n > 0 => tracing::info!(pruned = n, "pruned finished runs past retention"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention prune failed"),
                }
            }
            passes += 1;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.clock.sleep(self.config.interval) => {}
            }
        }
    }
}
