//! The reaper settles what nobody will report: runs whose lease expired (their worker died,
//! hung or was partitioned), runs that overran their timeout without a word, workers silent for
//! 2 × lease (marked `dead`), and, for retention, finished runs older than the configured age and
//! dead workers silent for longer than `--worker-retention` (forgotten).
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
    /// Dead workers silent for longer than this are forgotten (deleted); `None` keeps them.
    pub worker_retention: Option<Duration>,
    /// Batch size for each step.
    pub batch: u32,
}

/// Recovers expired leases and prunes old runs.
pub struct Reaper {
    store: SharedStore,
    clock: SharedClock,
    signals: Arc<Signals>,
    config: ReaperConfig,
    /// Workers whose death was logged already.
    dead_logged: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Reaper {
    /// A reaper over `store`.
    pub fn new(store: SharedStore, clock: SharedClock, signals: Arc<Signals>, config: ReaperConfig) -> Self {
        Self { store, clock, signals, config, dead_logged: Default::default() }
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
            .await
            .inspect_err(|_| crate::metrics::store_error())?;
        crate::metrics::reaped(&report);
        for (run_id, to) in &report.expired {
            tracing::warn!(run_id = %run_id, to = to.as_str(), "lease expired; run recovered");
        }
        for (run_id, to) in &report.timed_out {
            tracing::warn!(run_id = %run_id, to = to.as_str(), "run overran its timeout unreported; timed out by the server");
        }
        if report.workers_dead > 0 {
            self.log_dead_workers().await;
        }
        // Runs the reaper finished (retries exhausted) are counted with their handler and times.
        for (run_id, _) in report.expired.iter().chain(&report.timed_out).filter(|(_, s)| s.is_finished()) {
            if let Ok(run) = self.store.run_get(run_id).await {
                crate::metrics::finished(&run);
            }
        }
        if report.expired.iter().chain(&report.timed_out).any(|(_, s)| *s == RunState::Pending) {
            self.signals.runs_ready.notify_waiters();
        }
        Ok(report)
    }

    /// Logs the workers this pass declared dead, one line each. The reap report counts them
    /// without ids, so they are read back: dead, and silent since about `2 × lease` ago (a
    /// store that reported their ids would make this exact).
    async fn log_dead_workers(&self) {
        let now = self.clock.now();
        let recent = chrono::Duration::from_std(self.config.lease * 3 + self.config.interval * 2).unwrap_or_default();
        let Ok(workers) = self.store.worker_list().await else { return };
        let mut logged = self.dead_logged.lock().unwrap_or_else(|e| e.into_inner());
        for w in workers.iter().filter(|w| w.state == crate::domain::WorkerState::Dead) {
            if now.signed_duration_since(w.last_heartbeat) <= recent && logged.insert(w.id.clone()) {
                tracing::warn!(worker_id = %w.id, worker_name = %w.name, last_heartbeat = %w.last_heartbeat.to_rfc3339(),
                    "worker missed heartbeats for 2 × lease; declared dead");
            }
        }
        // Bounded: an id seen long ago will not be declared dead again.
        if logged.len() > 10_000 {
            logged.clear();
        }
    }

    /// Deletes finished runs past retention, one batch.
    pub async fn prune(&self) -> Result<u64> {
        let Some(keep) = self.config.retention else { return Ok(0) };
        let before = self.clock.now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        self.store.run_prune(before, self.config.batch).await
    }

    /// Forgets dead workers past `worker_retention`, one batch.
    pub async fn forget_dead_workers(&self) -> Result<u64> {
        let Some(keep) = self.config.worker_retention else { return Ok(0) };
        let before = self.clock.now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        self.store.worker_forget_dead(before, self.config.batch).await
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut passes: u64 = 0;
        let mut outage = crate::metrics::Outage::default();
        while !shutdown.is_cancelled() {
            outage.observe("reaper", self.tick().await.as_ref().map(|_| ()));
            // Retention is not urgent: about once a minute at the default interval.
            if passes.is_multiple_of(60) {
                match self.prune().await {
                    Ok(n) if n > 0 => tracing::info!(pruned = n, "pruned finished runs past retention"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention prune failed"),
                }
                match self.forget_dead_workers().await {
                    Ok(n) if n > 0 => tracing::info!(forgotten = n, "forgot dead workers past --worker-retention"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "forgetting dead workers failed"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn config(worker_retention: Option<Duration>) -> ReaperConfig {
        ReaperConfig {
            lease: Duration::from_secs(30),
            interval: Duration::from_secs(1),
            retention: None,
            worker_retention,
            batch: 100,
        }
    }

    #[tokio::test]
    async fn dead_workers_are_forgotten_after_worker_retention_and_kept_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(&format!("sqlite://{}/r.db", dir.path().display())).await.unwrap();
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-24T08:00:00Z").unwrap().with_timezone(&chrono::Utc);
        let clock = Arc::new(ManualClock::new(start));
        let w = store.worker_register("w", &["echo".to_string()], 1, None, start).await.unwrap();
        let hour = Duration::from_secs(3600);
        let reaper = Reaper::new(store.clone(), clock.clone(), Arc::new(Signals::default()), config(Some(hour)));
        let keeper = Reaper::new(store.clone(), clock.clone(), Arc::new(Signals::default()), config(None));

        clock.advance(Duration::from_secs(61));
        assert_eq!(reaper.tick().await.unwrap().workers_dead, 1);
        assert_eq!(reaper.forget_dead_workers().await.unwrap(), 0, "dead, but not for an hour");
        clock.advance(hour);
        assert_eq!(keeper.forget_dead_workers().await.unwrap(), 0, "no retention: kept");
        assert_eq!(reaper.forget_dead_workers().await.unwrap(), 1);
        assert!(matches!(store.worker_get(&w.id).await, Err(crate::store::StoreError::NotFound(_))));
    }
}
