//! The Rust side of the worker conformance suite (sdks/conformance/): a remote worker built on
//! the Rust worker SDK that serves the suite's test handlers (`conf-echo`, `conf-sleep`,
//! `conf-marker`; their contract is in sdks/conformance/README.md).
//!
//! `cargo run -p sundial --example conformance_worker -- --server URL [--name N] [--capacity N] [--drain-timeout SECS]`

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::{json, Value};
use sundial_worker::{handler_fn, HandlerError, HttpTransport, RunContext, Worker};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
struct Args {
    /// Server base URL.
    #[arg(long)]
    server: String,
    /// Worker name.
    #[arg(long, default_value = "conf-rust")]
    name: String,
    /// Runs at once.
    #[arg(long, default_value_t = 4)]
    capacity: u32,
    /// Seconds running handlers get to finish on SIGTERM.
    #[arg(long, default_value_t = 30.0)]
    drain_timeout: f64,
    /// Bearer token.
    #[arg(long)]
    token: Option<String>,
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default()
}

fn path_of(payload: &Value, key: &str) -> Option<String> {
    payload.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Sleeps `payload.ms`, writing the time to `payload.beat` every 50 ms; when told to stop,
/// writes the time to `payload.stopped` and returns at once.
async fn conf_sleep(ctx: RunContext) -> Result<Value, HandlerError> {
    let ms = ctx.payload.get("ms").and_then(Value::as_u64).ok_or("payload.ms: expected a number")?;
    let beat = path_of(&ctx.payload, "beat");
    let stopped = path_of(&ctx.payload, "stopped");
    let start = Instant::now();
    let end = start + Duration::from_millis(ms);
    while Instant::now() < end {
        if let Some(beat) = &beat {
            std::fs::write(beat, now_ns().to_string())?;
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => {
                if let Some(stopped) = &stopped {
                    std::fs::write(stopped, format!("{} stop", now_ns()))?;
                }
                return Ok(json!({"slept_ms": start.elapsed().as_millis() as u64, "stopped": true}));
            }
            _ = tokio::time::sleep(Duration::from_millis(50).min(end.saturating_duration_since(Instant::now()))) => {}
        }
    }
    Ok(json!({"slept_ms": ms, "stopped": false}))
}

/// Appends `"{run_id} {attempt}\n"` to `payload.path`.
async fn conf_marker(ctx: RunContext) -> Result<Value, HandlerError> {
    let path = path_of(&ctx.payload, "path").ok_or("payload.path: expected a string")?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(format!("{} {}\n", ctx.run_id, ctx.attempt).as_bytes())?;
    Ok(json!({"run_id": ctx.run_id}))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt().with_writer(std::io::stderr).try_init().ok();
    let transport = Arc::new(HttpTransport::new(&args.server, args.token));
    let worker = Worker::new(transport)
        .name(args.name)
        .capacity(args.capacity)
        .drain_timeout(Duration::from_secs_f64(args.drain_timeout))
        .handler("conf-echo", handler_fn(|ctx| async move { Ok(ctx.payload) }))
        .handler("conf-sleep", handler_fn(conf_sleep))
        .handler("conf-marker", handler_fn(conf_marker));
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        on_signal.cancel();
    });
    worker.run(shutdown).await?;
    Ok(())
}
