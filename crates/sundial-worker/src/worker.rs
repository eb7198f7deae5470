//! The worker loop: register, claim runs into free slots, run each under its timeout,
//! heartbeat the held runs, self-fence runs whose lease cannot be renewed, complete with the
//! fencing token `(worker_id, attempt)`, and drain on shutdown.
//!
//! Everything goes through a [`Transport`], so the same code runs in the server process
//! (`serve --workers N`) and in remote workers over HTTP.
//!
//! ## Leases and self-fencing
//! Each held run has a local *deadline*: the local instant at which the claim or heartbeat that
//! last renewed it was **sent** (for a long-poll claim: sent plus the `waited_ms` the server
//! reports having held it), plus the lease, minus a safety margin (lease / 5). The server
//! started the lease no earlier than that, so the deadline always falls before the server's
//! lease end, whatever the wall clocks say. When the deadline passes without a successful
//! renewal (partition, server down), the worker stops the handler itself and does not complete
//! the run: by then another worker may legitimately hold it (DESIGN.md guarantee 3).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::handler::{Handler, HandlerError, RunContext};
use crate::protocol::*;
use crate::transport::{Transport, TransportError};

/// How long a stopped handler (timeout, cancel, drain) gets to return after its token fires
/// before its task is aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Retry backoff for an unavailable server.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Extra local time allowed for a long-poll claim beyond its `wait`.
const CLAIM_SLACK: Duration = Duration::from_secs(30);
/// How long deregistering is retried while the server is unavailable.
const DEREGISTER_BUDGET: Duration = Duration::from_secs(10);
/// The local queue ([`Worker::prefetch`]) holds at most what the slots finished in the last
/// window this long.
pub const PREFETCH_HORIZON: Duration = Duration::from_millis(100);

/// Why [`Worker::run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The server refused the registration (not just unavailable: that is retried).
    #[error("registration failed: {0}")]
    Register(#[source] TransportError),
    /// The server answered something this worker cannot use (e.g. an unparsable lease).
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// A worker: handlers by name plus the loop that feeds them runs. Build with
/// [`Worker::new`] and the builder methods, then [`Worker::run`] it.
pub struct Worker {
    transport: Arc<dyn Transport>,
    name: String,
    capacity: u32,
    prefetch: u32,
    handlers: HashMap<String, Arc<dyn Handler>>,
    claim_wait: Duration,
    drain_timeout: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("capacity", &self.capacity)
            .field("prefetch", &self.prefetch)
            .field("handlers", &self.handler_names())
            .field("claim_wait", &self.claim_wait)
            .field("drain_timeout", &self.drain_timeout)
            .finish()
    }
}

impl Worker {
    /// A worker talking to the server through `transport`; name defaults to the host name
    /// (or `worker`), capacity to 4, claim wait to 20 s, drain timeout to 30 s.
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        let name = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "worker".to_string());
        Self {
            transport,
            name,
            capacity: 4,
            prefetch: 0,
            handlers: HashMap::new(),
            claim_wait: Duration::from_secs(20),
            drain_timeout: Duration::from_secs(30),
        }
    }

    /// Worker name shown in the API (for humans; not an identity).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Runs executed at once (at least 1).
    pub fn capacity(mut self, capacity: u32) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Runs claimed ahead of free slots into a local queue, at most `prefetch` (default 0).
    /// The queue is kept to what the slots finish in about [`PREFETCH_HORIZON`], so a queued
    /// run waits no longer than that for a slot; it lets one claim fill many slots and keeps
    /// the slots busy while the next claim is on its way. Queued runs are held (leased,
    /// heartbeated) like running ones.
    pub fn prefetch(mut self, prefetch: u32) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Serve `name` with `handler` (replaces an earlier handler of that name).
    pub fn handler(self, name: impl Into<String>, handler: impl Handler) -> Self {
        self.handler_arc(name, Arc::new(handler))
    }

    /// Like [`Worker::handler`], for an already shared handler.
    pub fn handler_arc(mut self, name: impl Into<String>, handler: Arc<dyn Handler>) -> Self {
        self.handlers.insert(name.into(), handler);
        self
    }

    /// How long one claim long-polls when nothing is due (default 20 s).
    pub fn claim_wait(mut self, wait: Duration) -> Self {
        self.claim_wait = wait;
        self
    }

    /// On shutdown, how long running handlers may take to finish before they are stopped
    /// (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Names of the handlers registered so far, sorted.
    pub fn handler_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.handlers.keys().cloned().collect();
        names.sort();
        names
    }

    /// Register, then claim and execute runs until `shutdown` fires; then stop claiming,
    /// let running handlers finish (up to the drain timeout, then stop them), deregister and
    /// return. Errors only when the server refuses the registration or answers nonsense.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let span = info_span!("worker", name = %self.name, worker_id = tracing::field::Empty);
        self.run_inner(shutdown).instrument(span).await
    }

    async fn run_inner(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let register =
            RegisterRequest { name: self.name.clone(), handlers: self.handler_names(), capacity: self.capacity };
        let Some(registered) = register_with_retry(&*self.transport, &register, &shutdown).await? else {
            return Ok(()); // shut down before the server ever answered
        };
        let lease = parse_duration("lease", &registered.lease)?;
        let mut heartbeat_every = parse_duration("heartbeat_interval", &registered.heartbeat_interval)?;
        if lease.is_zero() {
            return Err(WorkerError::Protocol("lease: must be positive".into()));
        }
        let margin = lease / 5;
        // A heartbeat must be able to fail once and still renew before the deadline.
        let max_heartbeat = (lease - margin) / 2;
        if heartbeat_every.is_zero() || heartbeat_every > max_heartbeat {
            warn!(?heartbeat_every, ?lease, "heartbeat interval too long for the lease; using {:?}", max_heartbeat);
            heartbeat_every = max_heartbeat;
        }
        tracing::Span::current().record("worker_id", registered.id.as_str());
        info!(worker_id = %registered.id, ?lease, ?heartbeat_every, handlers = ?register.handlers, "registered");

        let shared = Arc::new(Shared {
            transport: self.transport.clone(),
            handlers: self.handlers,
            worker_id: Mutex::new(registered.id),
            held: Mutex::new(HashMap::new()),
            lease,
            margin,
            heartbeat_every,
            heartbeat_now: Notify::new(),
            in_hand: Default::default(),
            done: Default::default(),
            queued: Default::default(),
            room: Notify::new(),
        });

        let stop_heartbeats = CancellationToken::new();
        let heartbeats =
            tokio::spawn(heartbeat_loop(shared.clone(), stop_heartbeats.clone()).instrument(tracing::Span::current()));

        let mut runs = JoinSet::new();
        let pool = Pool { capacity: self.capacity, prefetch: self.prefetch, claim_wait: self.claim_wait };
        claim_loop(&shared, &register, &pool, &shutdown, &mut runs).await;

        // Drain: nothing new is claimed; running handlers get `drain_timeout` to finish.
        info!(running = runs.len(), "shutting down: draining");
        let drained = timeout(self.drain_timeout, async { while runs.join_next().await.is_some() {} }).await.is_ok();
        if !drained {
            warn!(running = runs.len(), "drain timeout passed: stopping the remaining runs");
            shared.stop_all(Stop::Shutdown);
            // Stopped handlers get STOP_GRACE, then their completes a few seconds more.
            let stopped = timeout(STOP_GRACE * 3, async { while runs.join_next().await.is_some() {} }).await;
            if stopped.is_err() {
                runs.abort_all();
                while runs.join_next().await.is_some() {}
            }
        }
        stop_heartbeats.cancel();
        let _ = heartbeats.await;

        let worker_id = shared.worker_id();
        let started = Instant::now();
        let mut backoff = Backoff::new();
        loop {
            let result = timeout(DEREGISTER_BUDGET, self.transport.deregister(&worker_id))
                .await
                .unwrap_or_else(|_| Err(TransportError::Unavailable("deregister timed out".into())));
            match result {
                Ok(()) => {
                    info!("deregistered");
                    break;
                }
                Err(TransportError::Unavailable(e)) if started.elapsed() < DEREGISTER_BUDGET => {
                    debug!(error = %e, "deregister: server unavailable, retrying");
                    sleep(backoff.next()).await;
                }
                Err(e) => {
                    // The server marks silent workers dead on its own; nothing is lost.
                    warn!(error = %e, "deregister failed");
                    break;
                }
            }
        }
        Ok(())
    }
}

fn parse_duration(field: &str, s: &str) -> Result<Duration, WorkerError> {
    humantime::parse_duration(s).map_err(|e| WorkerError::Protocol(format!("{field}: {e}: {s:?}")))
}

/// Register, retrying while the server is unavailable; `None` when shut down meanwhile.
async fn register_with_retry(
    transport: &dyn Transport,
    req: &RegisterRequest,
    shutdown: &CancellationToken,
) -> Result<Option<Registered>, WorkerError> {
    let mut backoff = Backoff::new();
    loop {
        let attempt = tokio::select! {
            r = transport.register(req) => r,
            _ = shutdown.cancelled() => return Ok(None),
        };
        match attempt {
            Ok(r) => return Ok(Some(r)),
            Err(TransportError::Unavailable(e)) => {
                warn!(error = %e, "register: server unavailable, retrying");
                tokio::select! {
                    _ = sleep(backoff.next()) => {}
                    _ = shutdown.cancelled() => return Ok(None),
                }
            }
            Err(e) => return Err(WorkerError::Register(e)),
        }
    }
}

/// Exponential backoff, 100 ms doubling to 2 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(BACKOFF_MIN)
    }
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        d
    }
    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// Why a run is being stopped before its handler returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The server listed it in a heartbeat's `cancel`: report `cancelled`.
    Cancel,
    /// The server listed it in `lost` (or forgot this worker): stop, do not complete.
    Lost,
    /// The local deadline passed without renewal: stop, do not complete.
    Fenced,
    /// The worker is shutting down and the drain timeout passed: report `failed`.
    Shutdown,
}

/// A held run's control state, written by the heartbeat loop and the drain, read by the run.
#[derive(Debug, Clone, Copy)]
struct Control {
    deadline: Instant,
    stop: Option<Stop>,
}

struct HeldEntry {
    attempt: u32,
    control: watch::Sender<Control>,
}

/// State shared by the claim loop, the heartbeat loop and the run tasks.
struct Shared {
    transport: Arc<dyn Transport>,
    handlers: HashMap<String, Arc<dyn Handler>>,
    /// Current registration (changes only when the server forgot us and we re-registered).
    worker_id: Mutex<String>,
    /// Runs the server considers ours, by run id: from claim until complete (or drop).
    held: Mutex<HashMap<String, HeldEntry>>,
    lease: Duration,
    margin: Duration,
    heartbeat_every: Duration,
    /// Ask the heartbeat loop to renew now (a run arrived with little lease left).
    heartbeat_now: Notify,
    /// Runs accepted from claims and not yet done (running or queued for a slot).
    in_hand: std::sync::atomic::AtomicUsize,
    /// Runs done since the start.
    done: std::sync::atomic::AtomicU64,
    /// Runs held and waiting for a slot (the local queue).
    queued: std::sync::atomic::AtomicUsize,
    /// Pulsed when a run is done (room for the claim loop).
    room: Notify,
}

impl Shared {
    fn worker_id(&self) -> String {
        self.worker_id.lock().unwrap().clone()
    }

    /// The local deadline for a renewal whose request was sent at `sent`.
    fn deadline_from(&self, sent: Instant) -> Instant {
        sent + self.lease - self.margin
    }

    fn stop_all(&self, stop: Stop) {
        for entry in self.held.lock().unwrap().values() {
            set_stop(&entry.control, stop);
        }
    }
}

/// Record a stop unless a stronger one is already there (`Lost` and `Fenced` beat the rest:
/// a run that is no longer ours must not be completed whatever else was asked).
fn set_stop(control: &watch::Sender<Control>, stop: Stop) {
    control.send_if_modified(|c| {
        let replace = match c.stop {
            None => true,
            Some(Stop::Lost | Stop::Fenced) => false,
            Some(_) => matches!(stop, Stop::Lost | Stop::Fenced),
        };
        if replace {
            c.stop = Some(stop);
        }
        replace
    });
}

/// The claim loop's settings.
struct Pool {
    capacity: u32,
    prefetch: u32,
    claim_wait: Duration,
}

/// The local queue's size now: at most `prefetch`, and at most the runs done in the last
/// [`PREFETCH_HORIZON`] window (the current one, if it already saw more).
struct Pace {
    window_start: Instant,
    done_at_start: u64,
    last_window: u64,
}

impl Pace {
    fn new() -> Self {
        Self { window_start: Instant::now(), done_at_start: 0, last_window: 0 }
    }

    fn queue(&mut self, done: u64, prefetch: u32) -> usize {
        if prefetch == 0 {
            return 0;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= PREFETCH_HORIZON {
            // A window that ran long (idle) counts as its share of the horizon.
            let per_horizon =
                (done - self.done_at_start) as f64 * PREFETCH_HORIZON.as_secs_f64() / elapsed.as_secs_f64();
            self.last_window = per_horizon as u64;
            self.window_start = now;
            self.done_at_start = done;
        }
        self.last_window.max(done - self.done_at_start).min(u64::from(prefetch)) as usize
    }
}

/// Counts a run as queued for a slot until dropped.
struct Queued(Arc<Shared>);

impl Queued {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.queued.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(shared.clone())
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Counts a run as done when dropped (however its task ends), waking the claim loop.
struct InHand(Arc<Shared>);

impl Drop for InHand {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::*;
        self.0.in_hand.fetch_sub(1, AcqRel);
        self.0.done.fetch_add(1, AcqRel);
        self.0.room.notify_one();
    }
}

async fn claim_loop(
    shared: &Arc<Shared>,
    register: &RegisterRequest,
    pool: &Pool,
    shutdown: &CancellationToken,
    runs: &mut JoinSet<()>,
) {
    use std::sync::atomic::Ordering::Acquire;
    let claim_wait = pool.claim_wait;
    let capacity = pool.capacity as usize;
    let slots = Arc::new(Semaphore::new(capacity));
    let wait = humantime::format_duration(claim_wait).to_string();
    let mut backoff = Backoff::new();
    // Grows while the server answers empty claims without long-polling, so such a server is
    // not hammered; reset by any run or any real long-poll.
    let mut idle = Backoff::new();
    let mut pace = Pace::new();
    loop {
        while runs.try_join_next().is_some() {}
        // Register interest before looking, so a run done between the look and the wait counts.
        let room_signal = shared.room.notified();
        tokio::pin!(room_signal);
        room_signal.as_mut().enable();
        let queue = pace.queue(shared.done.load(Acquire), pool.prefetch);
        let in_hand = shared.in_hand.load(Acquire);
        let room = (capacity + queue).saturating_sub(in_hand);
        // With runs still queued locally, wait until half the queue is free, so claims come in
        // batches; with none queued, a single free slot is worth a claim. The slots never
        // starve meanwhile: runs are queued.
        let want = if shared.queued.load(Acquire) > 0 { (queue / 2).max(1) } else { 1 };
        if room < want {
            tokio::select! {
                _ = &mut room_signal => continue,
                _ = shutdown.cancelled() => return,
            }
        }
        let max = room as u32;
        let worker_id = shared.worker_id();
        let sent = Instant::now();
        let req = ClaimRequest { max, wait: Some(wait.clone()) };
        // A claim in flight at shutdown is dropped: runs it might have claimed are recovered
        // by the server when their lease expires, like any lost attempt.
        let result = tokio::select! {
            r = timeout(claim_wait + CLAIM_SLACK, shared.transport.claim(&worker_id, &req)) => {
                r.unwrap_or_else(|_| Err(TransportError::Unavailable("claim timed out".into())))
            }
            _ = shutdown.cancelled() => return,
        };
        let delay = match result {
            Ok(resp) => {
                backoff.reset();
                if resp.runs.is_empty() {
                    if sent.elapsed() < claim_wait / 2 {
                        Some(idle.next())
                    } else {
                        idle.reset();
                        None
                    }
                } else {
                    idle.reset();
                    // The server claimed no earlier than `sent` plus the time it held the long poll.
                    let claimed_at = sent + Duration::from_millis(resp.waited_ms);
                    accept_runs(shared, &worker_id, resp.runs, claimed_at, &slots, runs);
                    None
                }
            }
            Err(TransportError::NotFound(e)) => {
                // The server forgot this worker (deleted, or its store was reset): whatever we
                // hold is not ours any more; register again and carry on.
                warn!(error = %e, "claim: worker unknown to the server; re-registering");
                shared.stop_all(Stop::Lost);
                match register_with_retry(&*shared.transport, register, shutdown).await {
                    Ok(Some(r)) => {
                        info!(worker_id = %r.id, "re-registered");
                        *shared.worker_id.lock().unwrap() = r.id;
                        None
                    }
                    Ok(None) => return,
                    Err(e) => {
                        error!(error = %e, "re-register failed");
                        Some(BACKOFF_MAX)
                    }
                }
            }
            Err(TransportError::Unavailable(e)) => {
                debug!(error = %e, "claim: server unavailable");
                Some(backoff.next())
            }
            Err(e) => {
                error!(error = %e, "claim refused");
                Some(backoff.next())
            }
        };
        if let Some(d) = delay {
            tokio::select! {
                _ = sleep(d) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// Hold and start the runs of one claim answer. Each takes a free slot, or waits for one in
/// the local queue (see [`Worker::prefetch`]; also used when the server hands out more than
/// asked).
fn accept_runs(
    shared: &Arc<Shared>,
    worker_id: &str,
    claimed: Vec<ClaimedRun>,
    sent: Instant,
    slots: &Arc<Semaphore>,
    runs: &mut JoinSet<()>,
) {
    let deadline = shared.deadline_from(sent);
    for run in claimed {
        shared.in_hand.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let in_hand = InHand(shared.clone());
        let (tx, rx) = watch::channel(Control { deadline, stop: None });
        let previous =
            shared.held.lock().unwrap().insert(run.run_id.clone(), HeldEntry { attempt: run.attempt, control: tx });
        if let Some(previous) = previous {
            // Claimed again at a newer attempt: the old attempt is not ours any more.
            set_stop(&previous.control, Stop::Lost);
        }
        let permit = slots.clone().try_acquire_owned().ok();
        let queued = permit.is_none().then(|| Queued::new(shared));
        let span = info_span!("run", run_id = %run.run_id, attempt = run.attempt, job_id = %run.job_id, handler = %run.handler);
        let run = execute(shared.clone(), worker_id.to_string(), run, rx, permit, queued, slots.clone());
        runs.spawn(
            async move {
                run.await;
                drop(in_hand);
            }
            .instrument(span),
        );
    }
    // A long long-poll leaves the fresh runs little local lease: renew them now rather than
    // at the next tick, which could come after their deadline.
    if deadline.saturating_duration_since(Instant::now()) < shared.heartbeat_every * 2 {
        shared.heartbeat_now.notify_one();
    }
}

/// Resolves when the run must stop: a stop was recorded, or its local deadline passed.
async fn next_stop(control: &mut watch::Receiver<Control>) -> Stop {
    loop {
        let Control { deadline, stop } = *control.borrow_and_update();
        if let Some(stop) = stop {
            return stop;
        }
        if Instant::now() >= deadline {
            return Stop::Fenced;
        }
        tokio::select! {
            changed = control.changed() => {
                if changed.is_err() {
                    return Stop::Lost; // entry removed: not held any more
                }
            }
            _ = sleep_until(deadline) => {}
        }
    }
}

/// What a finished attempt reports.
struct Report {
    state: Outcome,
    output: Option<Value>,
    error: Option<String>,
    /// False when the handler said another attempt cannot help (sent as `"retry": false`).
    retry: bool,
}

/// One run, from its slot to its complete.
async fn execute(
    shared: Arc<Shared>,
    // The registration that claimed the run: half of its fencing token.
    worker_id: String,
    run: ClaimedRun,
    mut control: watch::Receiver<Control>,
    permit: Option<OwnedSemaphorePermit>,
    queued: Option<Queued>,
    slots: Arc<Semaphore>,
) {
    let permit = match permit {
        Some(p) => p,
        None => {
            let _queued = queued;
            debug!("queued locally: waiting for a free slot");
            tokio::select! {
                p = slots.acquire_owned() => p.expect("semaphore never closed"),
                stop = next_stop(&mut control) => {
                    let report = match stop {
                        Stop::Cancel => Ok(Report { state: Outcome::Cancelled, output: None, error: Some("cancelled".into()), retry: true }),
                        Stop::Shutdown => Ok(Report { state: Outcome::Failed, output: None, error: Some("worker shut down before the run started".into()), retry: true }),
                        other => Err(other),
                    };
                    finish(&shared, &run, &worker_id, &mut control, report).await;
                    return;
                }
            }
        }
    };
    let report = drive(&shared, &run, &mut control).await;
    // The slot bounds handlers running at once; the run stays held (and counted against the
    // claim loop's room) until its complete is answered, while a queued run takes the slot.
    drop(permit);
    finish(&shared, &run, &worker_id, &mut control, report).await;
}

/// Run the handler until it returns or must stop. `Err(stop)` means: do not complete.
async fn drive(shared: &Shared, run: &ClaimedRun, control: &mut watch::Receiver<Control>) -> Result<Report, Stop> {
    let Some(handler) = shared.handlers.get(&run.handler).cloned() else {
        warn!("no handler registered under this name");
        return Ok(Report {
            state: Outcome::Failed,
            output: None,
            error: Some(format!("no handler `{}` on this worker", run.handler)),
            retry: true,
        });
    };
    let run_timeout = match run.timeout.as_deref().map(humantime::parse_duration).transpose() {
        Ok(t) => t,
        Err(e) => {
            return Ok(Report {
                state: Outcome::Failed,
                output: None,
                error: Some(format!("timeout: {e}: {:?}", run.timeout.as_deref().unwrap_or_default())),
                retry: true,
            })
        }
    };
    let token = CancellationToken::new();
    let ctx = RunContext {
        run_id: run.run_id.clone(),
        job_id: run.job_id.clone(),
        attempt: run.attempt,
        payload: run.payload.clone(),
        scheduled_for: run.scheduled_for,
        cancel: token.clone(),
    };
    info!("started");
    let started = Instant::now();
    // A task of its own: a panic is a failed run, and a handler ignoring its token can be
    // aborted.
    let mut task =
        AbortOnDrop(tokio::spawn(async move { handler.call(ctx).await }.instrument(tracing::Span::current())));
    let timed_out_at = run_timeout.map(|t| started + t);

    let stop = tokio::select! {
        joined = &mut task.0 => {
            let report = match joined {
                Ok(Ok(output)) => Report { state: Outcome::Succeeded, output: Some(output), error: None, retry: true },
                Ok(Err(HandlerError { message, output, retry })) => Report { state: Outcome::Failed, output, error: Some(message), retry },
                Err(e) => Report { state: Outcome::Failed, output: None, error: Some(format!("handler panicked: {e}")), retry: true },
            };
            info!(state = ?report.state, elapsed = ?started.elapsed(), "handler returned");
            return Ok(report);
        }
        _ = sleep_until(timed_out_at.unwrap_or(started)), if timed_out_at.is_some() => None,
        stop = next_stop(control) => Some(stop),
    };
    token.cancel();
    // Runs that are not ours any more must stop well before the server's lease end (the
    // deadline left `margin` of it); the others may wind down a little longer.
    let grace = match stop {
        Some(Stop::Lost | Stop::Fenced) => shared.margin / 2,
        _ => STOP_GRACE,
    };
    let output = match timeout(grace, &mut task.0).await {
        Ok(Ok(Ok(v))) => Some(v),
        Ok(Ok(Err(e))) => e.output,
        Ok(Err(_)) => None,
        Err(_) => {
            warn!(?grace, "handler ignored its cancel token; aborting it");
            task.0.abort();
            None
        }
    };
    match stop {
        None => {
            let t = run_timeout.unwrap_or_default();
            warn!(timeout = ?t, "timed out");
            Ok(Report {
                state: Outcome::TimedOut,
                output,
                error: Some(format!("timed out after {}", humantime::format_duration(t))),
                retry: true,
            })
        }
        Some(Stop::Cancel) => {
            info!("cancelled");
            Ok(Report { state: Outcome::Cancelled, output, error: Some("cancelled".into()), retry: true })
        }
        Some(Stop::Shutdown) => Ok(Report {
            state: Outcome::Failed,
            output,
            error: Some("worker shut down before the run finished".into()),
            retry: true,
        }),
        Some(stop) => Err(stop),
    }
}

/// Aborts the handler task when the run task goes away (e.g. aborted at the end of a drain),
/// so no handler outlives its run.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Complete the run (or drop it) and release it.
async fn finish(
    shared: &Shared,
    run: &ClaimedRun,
    worker_id: &str,
    control: &mut watch::Receiver<Control>,
    report: Result<Report, Stop>,
) {
    match report {
        Ok(report) => complete_with_retry(shared, run, worker_id, control, report).await,
        Err(Stop::Fenced) => warn!("lease could not be renewed in time: stopped the run without completing it"),
        Err(stop) => warn!(?stop, "run no longer held by this worker: stopped without completing it"),
    }
    let mut held = shared.held.lock().unwrap();
    if held.get(&run.run_id).is_some_and(|e| e.attempt == run.attempt) {
        held.remove(&run.run_id);
    }
}

/// Send the complete; retry while the server is unavailable, as long as the run is still
/// ours by the local deadline (heartbeats keep renewing it meanwhile).
async fn complete_with_retry(
    shared: &Shared,
    run: &ClaimedRun,
    worker_id: &str,
    control: &mut watch::Receiver<Control>,
    report: Report,
) {
    let req = CompleteRequest {
        worker_id: worker_id.to_string(),
        attempt: run.attempt,
        state: report.state,
        output: report.output,
        error: report.error,
        retry: (!report.retry).then_some(false),
    };
    let mut backoff = Backoff::new();
    loop {
        let Control { deadline, stop } = *control.borrow_and_update();
        if matches!(stop, Some(Stop::Lost)) {
            warn!("run lost before its complete was accepted; dropping the result");
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            warn!("lease ran out before the complete was accepted; dropping the result");
            return;
        }
        match timeout(left, shared.transport.complete(&run.run_id, &req)).await {
            Ok(Ok(())) => {
                info!(state = ?req.state, "completed");
                return;
            }
            Ok(Err(TransportError::StaleAttempt(e))) => {
                warn!(error = %e, "complete rejected as stale: the run is no longer this attempt's");
                return;
            }
            Ok(Err(TransportError::Unavailable(e))) => {
                debug!(error = %e, "complete: server unavailable, retrying");
                sleep(backoff.next().min(left)).await;
            }
            Ok(Err(e)) => {
                error!(error = %e, "complete refused");
                return;
            }
            Err(_) => {
                warn!("lease ran out while completing; dropping the result");
                return;
            }
        }
    }
}

/// Every `heartbeat_every` (and on request): list the held runs, renew their deadlines on
/// success, apply `cancel` and `lost`. Failed heartbeats are retried sooner, with backoff.
async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut backoff = Backoff::new();
    let mut delay = shared.heartbeat_every;
    loop {
        tokio::select! {
            _ = sleep(delay) => {}
            _ = shared.heartbeat_now.notified() => {}
            _ = stop.cancelled() => return,
        }
        let listed: Vec<HeldRun> = shared
            .held
            .lock()
            .unwrap()
            .iter()
            .map(|(id, e)| HeldRun { run_id: id.clone(), attempt: e.attempt })
            .collect();
        let worker_id = shared.worker_id();
        let sent = Instant::now();
        let req = HeartbeatRequest { runs: listed.clone() };
        let result = timeout(shared.heartbeat_every, shared.transport.heartbeat(&worker_id, &req))
            .await
            .unwrap_or_else(|_| Err(TransportError::Unavailable("heartbeat timed out".into())));
        match result {
            Ok(resp) => {
                backoff.reset();
                delay = shared.heartbeat_every;
                let deadline = shared.deadline_from(sent);
                let held = shared.held.lock().unwrap();
                // Apply only to the attempt that was listed: a run re-claimed meanwhile at a
                // newer attempt is not covered by this answer.
                let entry = |run_id: &str| {
                    let attempt = listed.iter().find(|h| h.run_id == run_id)?.attempt;
                    held.get(run_id).filter(|e| e.attempt == attempt)
                };
                for id in &resp.lost {
                    if let Some(e) = entry(id) {
                        warn!(run_id = %id, "server says the run is lost");
                        set_stop(&e.control, Stop::Lost);
                    }
                }
                for id in &resp.cancel {
                    if let Some(e) = entry(id) {
                        info!(run_id = %id, "server asks to cancel the run");
                        set_stop(&e.control, Stop::Cancel);
                    }
                }
                for h in &listed {
                    if resp.lost.contains(&h.run_id) {
                        continue;
                    }
                    if let Some(e) = entry(&h.run_id) {
                        e.control.send_if_modified(|c| {
                            let later = deadline > c.deadline;
                            if later {
                                c.deadline = deadline;
                            }
                            later
                        });
                    }
                }
            }
            Err(TransportError::NotFound(e)) => {
                // Unknown worker: the server recovered our runs; stop them, complete none.
                warn!(error = %e, "heartbeat: worker unknown to the server; dropping held runs");
                let held = shared.held.lock().unwrap();
                for h in &listed {
                    if let Some(e) = held.get(&h.run_id).filter(|e| e.attempt == h.attempt) {
                        set_stop(&e.control, Stop::Lost);
                    }
                }
                delay = shared.heartbeat_every;
            }
            Err(e) => {
                warn!(error = %e, runs = listed.len(), "heartbeat failed");
                delay = backoff.next().min(shared.heartbeat_every);
            }
        }
    }
}
