//! The worker loop against a scripted in-memory server double, on tokio's paused clock.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use sundial_worker::protocol::*;
use sundial_worker::{handler_fn, HandlerError, RunContext, Transport, TransportError, Worker};
use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

const LEASE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Register,
    Claim { max: u32 },
    Heartbeat(Vec<HeldRun>),
    Complete { run_id: String, req: CompleteSummary },
    Deregister,
}

#[derive(Debug, Clone, PartialEq)]
struct CompleteSummary {
    worker_id: String,
    attempt: u32,
    state: Outcome,
    output: Option<Value>,
    error: Option<String>,
    retry: Option<bool>,
    /// The request as sent on the wire.
    wire: Value,
}

#[derive(Default)]
struct Script {
    pending: VecDeque<ClaimedRun>,
    /// Hand out every pending run whatever `max` says (a misbehaving server).
    ignore_max: bool,
    register_unavailable: u32,
    claim_not_found: u32,
    heartbeat_unavailable: bool,
    complete_unavailable: u32,
    complete_stale: bool,
    cancel: HashSet<String>,
    lost: HashSet<String>,
    registrations: u32,
}

/// A scripted server: answers from `script`, records every call with its (paused) time.
#[derive(Default)]
struct Fake {
    script: Mutex<Script>,
    events: Mutex<Vec<(Instant, Event)>>,
    wake: Notify,
}

impl Fake {
    fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    fn log(&self, e: Event) {
        self.events.lock().unwrap().push((Instant::now(), e));
    }
    fn events(&self) -> Vec<(Instant, Event)> {
        self.events.lock().unwrap().clone()
    }
    fn push(&self, run: ClaimedRun) {
        self.script.lock().unwrap().pending.push_back(run);
        self.wake.notify_one();
    }
    fn with<R>(&self, f: impl FnOnce(&mut Script) -> R) -> R {
        f(&mut self.script.lock().unwrap())
    }
    fn completes(&self) -> Vec<(String, CompleteSummary)> {
        self.events()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::Complete { run_id, req } => Some((run_id, req)),
                _ => None,
            })
            .collect()
    }
    fn heartbeats(&self) -> Vec<(Instant, Vec<HeldRun>)> {
        self.events()
            .into_iter()
            .filter_map(|(t, e)| match e {
                Event::Heartbeat(runs) => Some((t, runs)),
                _ => None,
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Transport for Fake {
    async fn register(&self, _req: &RegisterRequest) -> Result<Registered, TransportError> {
        self.log(Event::Register);
        let n = self.with(|s| {
            if s.register_unavailable > 0 {
                s.register_unavailable -= 1;
                return None;
            }
            s.registrations += 1;
            Some(s.registrations)
        });
        match n {
            None => Err(TransportError::Unavailable("starting".into())),
            Some(n) => Ok(Registered { id: format!("w{n}"), lease: "30s".into(), heartbeat_interval: "10s".into() }),
        }
    }

    async fn claim(&self, _worker_id: &str, req: &ClaimRequest) -> Result<ClaimResponse, TransportError> {
        self.log(Event::Claim { max: req.max });
        let not_found = self.with(|s| {
            let nf = s.claim_not_found > 0;
            s.claim_not_found = s.claim_not_found.saturating_sub(1);
            nf
        });
        if not_found {
            return Err(TransportError::NotFound("worker w1".into()));
        }
        let wait = req.wait.as_deref().map(|w| humantime::parse_duration(w).unwrap()).unwrap_or_default();
        let until = Instant::now() + wait;
        loop {
            let runs: Vec<ClaimedRun> = self.with(|s| {
                let n = if s.ignore_max { s.pending.len() } else { (req.max as usize).min(s.pending.len()) };
                s.pending.drain(..n).collect()
            });
            if !runs.is_empty() || Instant::now() >= until {
                return Ok(ClaimResponse { runs, waited_ms: 0 });
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn heartbeat(&self, _worker_id: &str, req: &HeartbeatRequest) -> Result<HeartbeatResponse, TransportError> {
        self.log(Event::Heartbeat(req.runs.clone()));
        self.with(|s| {
            if s.heartbeat_unavailable {
                return Err(TransportError::Unavailable("partition".into()));
            }
            let listed = |set: &HashSet<String>| {
                req.runs.iter().filter(|r| set.contains(&r.run_id)).map(|r| r.run_id.clone()).collect()
            };
            Ok(HeartbeatResponse { lease_expires_at: None, cancel: listed(&s.cancel), lost: listed(&s.lost) })
        })
    }

    async fn complete(&self, run_id: &str, req: &CompleteRequest) -> Result<(), TransportError> {
        self.log(Event::Complete {
            run_id: run_id.to_string(),
            req: CompleteSummary {
                worker_id: req.worker_id.clone(),
                attempt: req.attempt,
                state: req.state,
                output: req.output.clone(),
                error: req.error.clone(),
                retry: req.retry,
                wire: serde_json::to_value(req).expect("request serializes"),
            },
        });
        self.with(|s| {
            if s.complete_unavailable > 0 {
                s.complete_unavailable -= 1;
                Err(TransportError::Unavailable("store down".into()))
            } else if s.complete_stale {
                Err(TransportError::StaleAttempt("stale_attempt".into()))
            } else {
                Ok(())
            }
        })
    }

    async fn deregister(&self, _worker_id: &str) -> Result<(), TransportError> {
        self.log(Event::Deregister);
        Ok(())
    }
}

fn run(id: &str, handler: &str, timeout: Option<&str>) -> ClaimedRun {
    ClaimedRun {
        run_id: id.into(),
        attempt: 1,
        job_id: "job-1".into(),
        handler: handler.into(),
        payload: json!({"n": 1}),
        timeout: timeout.map(Into::into),
        scheduled_for: Utc::now(),
        lease_expires_at: Utc::now() + chrono::Duration::seconds(30),
    }
}

/// A handler that reports its start, then waits for its cancel token (or `work`, if given)
/// and reports when the token fired.
struct Probe {
    started: mpsc::UnboundedReceiver<String>,
    cancelled: mpsc::UnboundedReceiver<(String, Instant)>,
}

fn probe(work: Option<Duration>) -> (impl sundial_worker::Handler, Probe) {
    let (started_tx, started) = mpsc::unbounded_channel();
    let (cancelled_tx, cancelled) = mpsc::unbounded_channel();
    let handler = handler_fn(move |ctx: RunContext| {
        let started_tx = started_tx.clone();
        let cancelled_tx = cancelled_tx.clone();
        async move {
            started_tx.send(ctx.run_id.clone()).ok();
            let work = async {
                match work {
                    Some(d) => sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = work => Ok(json!({"done": ctx.run_id})),
                _ = ctx.cancel.cancelled() => {
                    cancelled_tx.send((ctx.run_id.clone(), Instant::now())).ok();
                    Err(HandlerError::new("stopped").with_output(json!({"partial": true})))
                }
            }
        }
    });
    (handler, Probe { started, cancelled })
}

fn start(worker: Worker) -> (CancellationToken, tokio::task::JoinHandle<Result<(), sundial_worker::WorkerError>>) {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone()));
    (shutdown, task)
}

async fn stop(shutdown: CancellationToken, task: tokio::task::JoinHandle<Result<(), sundial_worker::WorkerError>>) {
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// Wait (on the paused clock) until `f` holds.
async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if f() {
            return;
        }
        sleep(Duration::from_millis(50)).await;
    }
    panic!("condition never held");
}

#[tokio::test(start_paused = true)]
async fn worker_stops_run_when_lease_cannot_be_renewed() {
    let fake = Fake::new();
    let (handler, mut probe) = probe(None);
    fake.push(run("r1", "h", None));
    let t0 = Instant::now(); // the claim is sent at once, so the server's lease ends at t0 + 30s
    let (shutdown, task) = start(Worker::new(fake.clone()).handler("h", handler));
    probe.started.recv().await.unwrap();
    fake.with(|s| s.heartbeat_unavailable = true);

    let (id, at) = probe.cancelled.recv().await.unwrap();
    assert_eq!(id, "r1");
    let after = at - t0;
    assert!(after < LEASE, "handler stopped at {after:?}, after the lease ended");
    assert!(after >= LEASE / 2, "stopped too early: {after:?}");
    assert!(fake.heartbeats().len() >= 2, "heartbeats were tried");

    sleep(LEASE * 2).await;
    stop(shutdown, task).await;
    assert_eq!(fake.completes(), vec![], "a run whose lease could not be renewed must not be completed");
    assert_eq!(fake.events().last().unwrap().1, Event::Deregister);
}

#[tokio::test(start_paused = true)]
async fn lease_renewal_keeps_a_long_run_alive() {
    let fake = Fake::new();
    let (handler, mut probe) = probe(Some(LEASE * 4));
    fake.push(run("r1", "h", None));
    let (shutdown, task) = start(Worker::new(fake.clone()).handler("h", handler));
    until(|| !fake.completes().is_empty()).await;
    assert!(probe.cancelled.try_recv().is_err(), "a renewed run must not be stopped");
    let (run_id, c) = &fake.completes()[0];
    assert_eq!((run_id.as_str(), c.state, c.attempt, c.worker_id.as_str()), ("r1", Outcome::Succeeded, 1, "w1"));
    assert_eq!(c.output, Some(json!({"done": "r1"})));
    assert!(fake.heartbeats().iter().any(|(_, runs)| runs == &[HeldRun { run_id: "r1".into(), attempt: 1 }]));
    stop(shutdown, task).await;
}

#[tokio::test(start_paused = true)]
async fn run_claimed_late_in_a_long_poll_is_renewed_at_once() {
    let fake = Fake::new();
    let (handler, mut probe) = probe(Some(LEASE * 2));
    let (shutdown, task) = start(Worker::new(fake.clone()).handler("h", handler));
    // The claim was sent at t0; the run shows up 19 s into its long poll, so the claim's
    // local deadline (t0 + 24 s) is near: the worker must renew now, not at its next tick.
    sleep(Duration::from_secs(19)).await;
    let claimed_at = Instant::now();
    fake.push(run("r1", "h", None));
    probe.started.recv().await.unwrap();
    until(|| !fake.completes().is_empty()).await;
    assert!(probe.cancelled.try_recv().is_err(), "stopped by a deadline the worker failed to renew");
    assert_eq!(fake.completes()[0].1.state, Outcome::Succeeded);
    let first_renewal = fake.heartbeats().into_iter().find(|(_, runs)| !runs.is_empty()).unwrap().0;
    assert!(first_renewal - claimed_at < Duration::from_secs(1));
    stop(shutdown, task).await;
}

#[tokio::test(start_paused = true)]
async fn timeout_stops_handler_and_reports_timed_out() {
    let fake = Fake::new();
    let (handler, mut probe) = probe(None);
    fake.push(run("r1", "h", Some("5s")));
    let (shutdown, task) = start(Worker::new(fake.clone()).handler("h", handler));
    probe.started.recv().await.unwrap();
    let started = Instant::now();
    let (_, at) = probe.cancelled.recv().await.unwrap();
    assert_eq!(at - started, Duration::from_secs(5));
    until(|| !fake.completes().is_empty()).await;
    let (_, c) = &fake.completes()[0];
    assert_eq!(c.state, Outcome::TimedOut);
    assert_eq!(c.output, Some(json!({"partial": true})), "output returned on the way out is kept");
    assert!(c.error.as_deref().unwrap().contains("timed out after 5s"), "{:?}", c.error);
    stop(shutdown, task).await;
}

#[tokio::test(start_paused = true)]
async fn cancel_from_heartbeat_stops_handler_and_reports_cancelled() {
    let fake = Fake::new();
    let (handler, mut probe) = probe(None);
    fake.push(run("r1", "h", None));
    let (shutdown, task) = start(Worker::new(fake.clone()).handler("h", handler));
    probe.started.recv().await.unwrap();
    fake.with(|s| s.cancel.insert("r1".into()));
    let (_, at) = probe.cancelled.recv().await.unwrap();
    let heartbeat_at = fake.heartbeats().last().unwrap().0;
    assert_eq!(at, heartbeat_at, "stopped at the heartbeat that said cancel");
    until(|| !fake.completes().is_empty()).await;
    let (run_id, c) = &fake.completes()[0];
    assert_eq!((run_id.as_str(), c.state), ("r1", Outcome::Cancelled));
    assert_eq!(c.output, Some(json!({"partial": true})));
    stop(shutdown, task).await;
    assert_eq!(fake.completes().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn lost_run_is_stopped_and_not_completed() {
    let fake = Fake::new();
    let (handler, mut probe) = probe(None);
    fake.push(run("r1", "h", None));
    let (shutdown, task) = start(Worker::new(fake.clone()).handler("h", handler));
    probe.started.recv().await.unwrap();
    fake.with(|s| s.lost.insert("r1".into()));
    let (id, _) = probe.cancelled.recv().await.unwrap();
    assert_eq!(id, "r1");
    sleep(LEASE).await;
    // Released: no longer listed in heartbeats.
    assert_eq!(fake.heartbeats().last().unwrap().1, vec![]);
    stop(shutdown, task).await;
    assert_eq!(fake.completes(), vec![]);
}

#[tokio::test(start_paused = true)]
async fn handler_ignoring_its_cancel_token_is_aborted() {
    let fake = Fake::new();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let stubborn = handler_fn(move |_ctx: RunContext| {
        let started_tx = started_tx.clone();
        async move {
            started_tx.send(()).ok();
            sleep(Duration::from_secs(3600)).await;
            Ok(Value::Null)
        }
    });
    fake.push(run("r1", "h", Some("2s")));
    let (shutdown, task) = start(Worker::new(fake.clone()).handler("h", stubborn));
    started.recv().await.unwrap();
    let t = Instant::now();
    until(|| !fake.completes().is_empty()).await;
    assert!(t.elapsed() < Duration::from_secs(10), "aborted after a short grace");
    assert_eq!(fake.completes()[0].1.state, Outcome::TimedOut);
    assert_eq!(fake.completes()[0].1.output, None);
    stop(shutdown, task).await;
}

#[tokio::test(start_paused = true)]
async fn stale_complete_is_dropped_without_retry() {
    let fake = Fake::new();
    fake.with(|s| s.complete_stale = true);
    fake.push(run("r1", "echo", None));
    let worker = Worker::new(fake.clone()).handler("echo", sundial_worker::builtin::Echo);
    let (shutdown, task) = start(worker);
    until(|| !fake.completes().is_empty()).await;
    sleep(LEASE * 2).await;
    assert_eq!(fake.completes().len(), 1, "a stale complete is not retried");
    // The worker goes on serving.
    fake.with(|s| s.complete_stale = false);
    fake.push(run("r2", "echo", None));
    until(|| fake.completes().len() == 2).await;
    assert_eq!(fake.completes()[1].1.state, Outcome::Succeeded);
    stop(shutdown, task).await;
}

#[tokio::test(start_paused = true)]
async fn complete_is_retried_while_server_unavailable() {
    let fake = Fake::new();
    fake.with(|s| s.complete_unavailable = 3);
    fake.push(run("r1", "echo", None));
    let (shutdown, task) = start(Worker::new(fake.clone()).handler("echo", sundial_worker::builtin::Echo));
    until(|| fake.completes().len() == 4).await;
    sleep(LEASE).await;
    let completes = fake.completes();
    assert_eq!(completes.len(), 4, "retried until accepted, then no more");
    assert_eq!(completes[3].1.state, Outcome::Succeeded);
    assert_eq!(completes[3].1.output, Some(json!({"n": 1})));
    stop(shutdown, task).await;
}

#[tokio::test(start_paused = true)]
async fn complete_is_abandoned_when_the_lease_runs_out() {
    let fake = Fake::new();
    fake.with(|s| {
        s.complete_unavailable = u32::MAX;
        s.heartbeat_unavailable = true;
    });
    fake.push(run("r1", "echo", None));
    let t0 = Instant::now();
    let (shutdown, task) = start(Worker::new(fake.clone()).handler("echo", sundial_worker::builtin::Echo));
    sleep(LEASE * 2).await;
    let completes = fake.events().into_iter().filter(|(_, e)| matches!(e, Event::Complete { .. })).collect::<Vec<_>>();
    assert!(completes.len() > 1);
    assert!(completes.iter().all(|(t, _)| *t - t0 < LEASE), "no complete after the local deadline");
    stop(shutdown, task).await;
}

#[tokio::test(start_paused = true)]
async fn unknown_handler_is_completed_failed() {
    let fake = Fake::new();
    fake.push(run("r1", "nope", None));
    let (shutdown, task) = start(Worker::new(fake.clone()).handler("echo", sundial_worker::builtin::Echo));
    until(|| !fake.completes().is_empty()).await;
    let (_, c) = &fake.completes()[0];
    assert_eq!(c.state, Outcome::Failed);
    assert!(c.error.as_deref().unwrap().contains("no handler"), "{:?}", c.error);
    stop(shutdown, task).await;
}

#[tokio::test(start_paused = true)]
async fn handler_error_and_panic_are_reported_failed() {
    let fake = Fake::new();
    fake.push(run("r1", "fail", None));
    fake.push(run("r2", "panic", None));
    let worker = Worker::new(fake.clone())
        .handler("fail", handler_fn(|_| async { Err(HandlerError::new("bad input").with_output(json!(7))) }))
        .handler("panic", handler_fn(|_| async { panic!("handler bug") }));
    let (shutdown, task) = start(worker);
    until(|| fake.completes().len() == 2).await;
    let mut completes = fake.completes();
    completes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!((completes[0].1.state, completes[0].1.error.as_deref()), (Outcome::Failed, Some("bad input")));
    assert_eq!(completes[0].1.output, Some(json!(7)));
    assert_eq!(completes[1].1.state, Outcome::Failed);
    assert!(completes[1].1.error.as_deref().unwrap().contains("panic"));
    stop(shutdown, task).await;
}

/// A handler error marked `no_retry` (the shell's refused command) is sent as `"retry": false`;
/// other failures leave the field out.
#[tokio::test(start_paused = true)]
async fn a_no_retry_handler_error_is_completed_with_retry_false() {
    let fake = Fake::new();
    fake.push(run("r1", "refuse", None));
    fake.push(run("r2", "fail", None));
    let worker = Worker::new(fake.clone())
        .handler("refuse", handler_fn(|_| async { Err(HandlerError::new("command not allowed").no_retry()) }))
        .handler("fail", handler_fn(|_| async { Err(HandlerError::new("bad input")) }));
    let (shutdown, task) = start(worker);
    until(|| fake.completes().len() == 2).await;
    let mut completes = fake.completes();
    completes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!((completes[0].1.state, completes[0].1.retry), (Outcome::Failed, Some(false)));
    assert_eq!(completes[1].1.retry, None);
    assert_eq!(completes[0].1.wire["retry"], json!(false));
    assert!(completes[1].1.wire.get("retry").is_none(), "{}", completes[1].1.wire);
    stop(shutdown, task).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_then_deregisters() {
    let fake = Fake::new();
    let (handler, mut probe) = probe(Some(Duration::from_secs(3)));
    fake.push(run("r1", "h", None));
    let (shutdown, task) = start(Worker::new(fake.clone()).handler("h", handler));
    probe.started.recv().await.unwrap();
    let claims = |events: &[(Instant, Event)]| events.iter().filter(|(_, e)| matches!(e, Event::Claim { .. })).count();
    let claims_before = claims(&fake.events());
    stop(shutdown, task).await;
    assert!(probe.cancelled.try_recv().is_err(), "a run finishing within the drain timeout is not stopped");

    let events = fake.events();
    let completes = fake.completes();
    assert_eq!(completes.len(), 1);
    assert_eq!(completes[0].1.state, Outcome::Succeeded);
    let complete_at = events.iter().position(|(_, e)| matches!(e, Event::Complete { .. })).unwrap();
    assert_eq!(events.last().unwrap().1, Event::Deregister);
    assert!(complete_at < events.len() - 1, "deregistered after the run completed");
    assert_eq!(claims(&events), claims_before, "no claims after shutdown");
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_runs_after_the_drain_timeout() {
    let fake = Fake::new();
    let (handler, mut probe) = probe(None);
    fake.push(run("r1", "h", None));
    let worker = Worker::new(fake.clone()).handler("h", handler).drain_timeout(Duration::from_secs(2));
    let (shutdown, task) = start(worker);
    probe.started.recv().await.unwrap();
    let shutdown_at = Instant::now();
    stop(shutdown, task).await;
    let (_, at) = probe.cancelled.recv().await.unwrap();
    assert_eq!(at - shutdown_at, Duration::from_secs(2));
    let completes = fake.completes();
    assert_eq!(completes.len(), 1);
    assert_eq!(completes[0].1.state, Outcome::Failed, "failed, so the server retries it");
    assert!(completes[0].1.error.as_deref().unwrap().contains("shut down"));
    assert_eq!(fake.events().last().unwrap().1, Event::Deregister);
}

#[tokio::test(start_paused = true)]
async fn register_is_retried_while_unavailable() {
    let fake = Fake::new();
    fake.with(|s| s.register_unavailable = 3);
    fake.push(run("r1", "echo", None));
    let (shutdown, task) = start(Worker::new(fake.clone()).handler("echo", sundial_worker::builtin::Echo));
    until(|| !fake.completes().is_empty()).await;
    let registers = fake.events().iter().filter(|(_, e)| *e == Event::Register).count();
    assert_eq!(registers, 4);
    stop(shutdown, task).await;
}

#[tokio::test(start_paused = true)]
async fn idle_worker_heartbeats_with_an_empty_list() {
    let fake = Fake::new();
    let (shutdown, task) = start(Worker::new(fake.clone()).handler("echo", sundial_worker::builtin::Echo));
    sleep(Duration::from_secs(35)).await;
    let beats = fake.heartbeats();
    assert_eq!(beats.len(), 3, "every heartbeat_interval");
    assert!(beats.iter().all(|(_, runs)| runs.is_empty()));
    stop(shutdown, task).await;
}

#[tokio::test(start_paused = true)]
async fn capacity_bounds_claims_and_concurrent_runs() {
    let fake = Fake::new();
    let running = Arc::new(Mutex::new((0u32, 0u32))); // (now, max)
    let r = running.clone();
    let handler = handler_fn(move |_ctx: RunContext| {
        let r = r.clone();
        async move {
            {
                let mut g = r.lock().unwrap();
                g.0 += 1;
                g.1 = g.1.max(g.0);
            }
            sleep(Duration::from_secs(5)).await;
            r.lock().unwrap().0 -= 1;
            Ok(Value::Null)
        }
    });
    for i in 0..5 {
        fake.push(run(&format!("r{i}"), "h", None));
    }
    let (shutdown, task) = start(Worker::new(fake.clone()).capacity(2).handler("h", handler));
    until(|| fake.completes().len() == 5).await;
    assert_eq!(running.lock().unwrap().1, 2);
    assert!(fake.events().iter().all(|(_, e)| !matches!(e, Event::Claim { max } if *max > 2)));
    stop(shutdown, task).await;
}

#[tokio::test(start_paused = true)]
async fn extra_claimed_runs_wait_for_a_free_slot() {
    let fake = Fake::new();
    fake.with(|s| s.ignore_max = true);
    let running = Arc::new(Mutex::new((0u32, 0u32)));
    let r = running.clone();
    let handler = handler_fn(move |_ctx: RunContext| {
        let r = r.clone();
        async move {
            {
                let mut g = r.lock().unwrap();
                g.0 += 1;
                g.1 = g.1.max(g.0);
            }
            sleep(Duration::from_secs(5)).await;
            r.lock().unwrap().0 -= 1;
            Ok(Value::Null)
        }
    });
    for i in 0..4 {
        fake.push(run(&format!("r{i}"), "h", None));
    }
    let (shutdown, task) = start(Worker::new(fake.clone()).capacity(1).handler("h", handler));
    until(|| fake.completes().len() == 4).await;
    assert_eq!(running.lock().unwrap().1, 1, "never more than capacity at once");
    assert!(fake.completes().iter().all(|(_, c)| c.state == Outcome::Succeeded));
    stop(shutdown, task).await;
}

/// A handler counting how many of its calls run at once: (now, most).
fn counting(work: Duration) -> (impl sundial_worker::Handler, Arc<Mutex<(u32, u32)>>) {
    let running = Arc::new(Mutex::new((0u32, 0u32)));
    let r = running.clone();
    let handler = handler_fn(move |_ctx: RunContext| {
        let r = r.clone();
        async move {
            {
                let mut g = r.lock().unwrap();
                g.0 += 1;
                g.1 = g.1.max(g.0);
            }
            sleep(work).await;
            r.lock().unwrap().0 -= 1;
            Ok(Value::Null)
        }
    });
    (handler, running)
}

fn claim_sizes(fake: &Fake) -> Vec<u32> {
    fake.events()
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Claim { max } => Some(max),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn prefetch_claims_ahead_for_quick_runs_and_slots_still_bound_them() {
    let fake = Fake::new();
    let (handler, running) = counting(Duration::from_millis(1));
    for i in 0..60 {
        fake.push(run(&format!("r{i}"), "h", None));
    }
    let (shutdown, task) = start(Worker::new(fake.clone()).capacity(2).prefetch(4).handler("h", handler));
    until(|| fake.completes().len() == 60).await;
    assert_eq!(running.lock().unwrap().1, 2, "never more than capacity at once");
    let sizes = claim_sizes(&fake);
    assert!(sizes.iter().all(|&m| m <= 6), "never more than capacity + prefetch held: {sizes:?}");
    assert!(sizes.iter().any(|&m| m > 2), "quick runs are claimed ahead: {sizes:?}");
    assert!(fake.completes().iter().all(|(_, c)| c.state == Outcome::Succeeded));
    stop(shutdown, task).await;
}

#[tokio::test(start_paused = true)]
async fn prefetch_queues_nothing_for_slow_runs() {
    let fake = Fake::new();
    let (handler, running) = counting(Duration::from_secs(5));
    for i in 0..6 {
        fake.push(run(&format!("r{i}"), "h", None));
    }
    let (shutdown, task) = start(Worker::new(fake.clone()).capacity(2).prefetch(4).handler("h", handler));
    until(|| fake.completes().len() == 6).await;
    assert_eq!(running.lock().unwrap().1, 2);
    let sizes = claim_sizes(&fake);
    // A run that would wait seconds for a slot stays on the server, free for other workers.
    assert!(sizes.iter().all(|&m| m <= 2), "slow runs are not claimed ahead: {sizes:?}");
    stop(shutdown, task).await;
}

#[tokio::test(start_paused = true)]
async fn forgotten_worker_registers_again() {
    let fake = Fake::new();
    fake.with(|s| s.claim_not_found = 1);
    fake.push(run("r1", "echo", None));
    let (shutdown, task) = start(Worker::new(fake.clone()).handler("echo", sundial_worker::builtin::Echo));
    until(|| !fake.completes().is_empty()).await;
    assert_eq!(fake.completes()[0].1.worker_id, "w2", "completed under the new registration");
    stop(shutdown, task).await;
}

/// Real processes, so real time (a few hundred ms).
#[tokio::test]
async fn shell_timeout_kills_the_process_group() {
    let fake = Fake::new();
    let mut shell_run = run("r1", "shell", Some("300ms"));
    // The background child prints its pid, then both it and the foreground sleep outlive
    // the timeout unless the whole group is killed.
    shell_run.payload = json!({"command": "sleep 30 & echo $!; sleep 30"});
    fake.push(shell_run);
    let worker = sundial_worker::register_builtins(Worker::new(fake.clone()), true);
    let (shutdown, task) = start(worker);
    until_real(|| !fake.completes().is_empty()).await;
    let (_, c) = &fake.completes()[0];
    assert_eq!(c.state, Outcome::TimedOut);
    let output = c.output.clone().expect("a timed-out shell run keeps its output");
    let pid: u32 = output["stdout"].as_str().unwrap().trim().parse().unwrap();
    until_real(|| !alive(pid)).await;
    stop(shutdown, task).await;
}

/// Wait (on the real clock, up to 5 s) until `f` holds.
async fn until_real(mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(std::time::Instant::now() < end, "condition never held");
        sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `pid` is a live process (zombies count as gone: nothing runs any more).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next());
            !matches!(state, Some("Z" | "X"))
        }
        Err(_) => false,
    }
}
