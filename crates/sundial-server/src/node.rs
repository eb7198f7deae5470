//! One sundial node: opens the store, starts the scheduler, reaper, HTTP API and (optionally)
//! an in-process worker pool, and stops them all in order on shutdown. Nodes share nothing but
//! the database, so any number can run side by side with no leader.

use crate::local::LocalTransport;
use crate::{app, ApiConfig, AppState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use sundial_core::clock::{SharedClock, SystemClock};
use sundial_core::reaper::{Reaper, ReaperConfig};
use sundial_core::scheduler::{Scheduler, SchedulerConfig};
use sundial_core::signals::Signals;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Everything `sundial serve` is configured with.
#[derive(Clone)]
pub struct NodeConfig {
    /// `sqlite://…` or `postgres://…`.
    pub db: String,
    /// Address to listen on (`127.0.0.1:0` picks a port).
    pub listen: String,
    /// In-process worker slots (0 = none).
    pub workers: u32,
    /// Lease length; heartbeats every third of it.
    pub lease: Duration,
    /// Serve the `shell` handler in the in-process pool.
    pub enable_shell: bool,
    /// Bearer tokens, each an admin of every namespace (none and no tokens file = no auth).
    pub tokens: Vec<String>,
    /// `--tokens-file`: tokens with roles and namespaces, read at start and on SIGHUP.
    pub tokens_file: Option<std::path::PathBuf>,
    /// `--max-payload` and `--min-interval`.
    pub job_limits: crate::limits::JobLimits,
    /// `--rate-limit`: requests per second per token.
    pub rate_limit: Option<std::num::NonZeroU32>,
    /// `--shell-env` and `--shell-allow` for the in-process `shell` handler.
    pub shell: sundial_worker::builtin::ShellPolicy,
    /// Fire times later than this are misfires.
    pub misfire_threshold: Duration,
    /// Largest request body.
    pub max_body: usize,
    /// Finished runs older than this are pruned (`None` = keep).
    pub retention: Option<Duration>,
    /// Dead workers silent longer than this are forgotten.
    pub worker_retention: Duration,
    /// The clock (a manual one in tests).
    pub clock: SharedClock,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            db: "sqlite://sundial.db".into(),
            listen: "127.0.0.1:7070".into(),
            workers: 4,
            lease: Duration::from_secs(30),
            enable_shell: false,
            tokens: Vec::new(),
            tokens_file: None,
            job_limits: Default::default(),
            rate_limit: None,
            shell: Default::default(),
            misfire_threshold: Duration::from_secs(60),
            max_body: 10 * 1024 * 1024,
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            worker_retention: Duration::from_secs(3600),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Relays other nodes' "runs ready" notices (PostgreSQL LISTEN/NOTIFY) to this node's idle
/// claimers, reconnecting after errors. A no-op for single-node backends.
async fn relay_wakeups(store: sundial_core::store::SharedStore, signals: Arc<Signals>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let mut wakeups = match store.wakeups().await {
            Ok(Some(w)) => w,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "LISTEN failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = wakeups.recv() => match r {
                    Ok(()) => signals.runs_ready.notify_waiters(),
                    Err(_) => break,
                },
            }
        }
    }
}

/// A started node.
pub struct Node {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Shared state (tests reach the store and clock through it).
    pub state: AppState,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    pool: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Node {
    /// Opens the store, binds the listener and starts every loop.
    pub async fn start(config: NodeConfig) -> anyhow::Result<Node> {
        // A bad tokens file stops the node before it opens anything.
        let tokens = Arc::new(
            crate::auth::Tokens::load(config.tokens.clone(), config.tokens_file.clone()).map_err(anyhow::Error::msg)?,
        );
        let store = sundial_core::store::open(&config.db).await?;
        let clock = config.clock.clone();
        let signals = Arc::new(Signals::default());
        let state = AppState::new(
            store.clone(),
            clock.clone(),
            signals.clone(),
            ApiConfig {
                lease: config.lease,
                tokens: tokens.clone(),
                max_body: config.max_body,
                job_limits: config.job_limits,
                rate_limit: config.rate_limit,
                worker_retention: config.worker_retention,
            },
        );
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        if config.tokens_file.is_some() {
            let reloader = crate::auth::reload_on_sighup(tokens)?;
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                stop.cancelled().await;
                reloader.abort();
            }));
        }

        let scheduler = Scheduler::new(
            store.clone(),
            clock.clone(),
            signals.clone(),
            SchedulerConfig { misfire_threshold: config.misfire_threshold, ..Default::default() },
        );
        tasks.push(tokio::spawn(scheduler.run(shutdown.clone())));
        let reaper = Reaper::new(
            store.clone(),
            clock.clone(),
            signals.clone(),
            ReaperConfig {
                lease: config.lease,
                interval: (config.lease / 10).clamp(Duration::from_millis(100), Duration::from_secs(1)),
                retention: config.retention,
                worker_retention: Some(config.worker_retention),
                batch: 1000,
            },
        );
        tasks.push(tokio::spawn(reaper.run(shutdown.clone())));
        tasks.push(tokio::spawn(relay_wakeups(store.clone(), signals.clone(), shutdown.clone())));

        let listener = tokio::net::TcpListener::bind(&config.listen).await.map_err(|e| {
            let port = config.listen.rsplit(':').next().unwrap_or(&config.listen);
            if e.kind() == std::io::ErrorKind::AddrInUse {
                anyhow::anyhow!(
                    "port {port} is already in use (--listen {}); stop the other process or pick another port",
                    config.listen
                )
            } else {
                anyhow::anyhow!("cannot listen on {} (--listen): {e}", config.listen)
            }
        })?;
        let addr = listener.local_addr()?;
        let router = app(state.clone());
        let http_shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let serve =
                axum::serve(listener, router).with_graceful_shutdown(async move { http_shutdown.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }));

        let pool = if config.workers > 0 {
            let token = CancellationToken::new();
            let worker = sundial_worker::Worker::new(Arc::new(LocalTransport::new(state.clone())))
                .name("in-process")
                .capacity(config.workers)
                // One claim fills many slots, and the slots are not idle while it is on its way.
                .prefetch(config.workers.saturating_mul(4));
            let worker = sundial_worker::builtin::register_builtins_with(
                worker,
                config.enable_shell.then(|| config.shell.clone()),
            );
            let t = token.clone();
            let handle = tokio::spawn(async move {
                if let Err(e) = worker.run(t).await {
                    tracing::error!(error = %e, "in-process worker pool stopped");
                }
            });
            Some((token, handle))
        } else {
            None
        };
        Ok(Node { addr, state, shutdown, tasks, pool })
    }

    /// Drains the in-process workers, then stops the loops and the HTTP server, then the
    /// batchers (after the last request that could feed them has been answered).
    pub async fn stop(mut self) {
        if let Some((token, handle)) = self.pool.take() {
            token.cancel();
            let _ = handle.await;
        }
        self.shutdown.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.state.submissions.stop().await;
        self.state.completions.stop().await;
    }
}
