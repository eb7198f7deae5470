//! sundial-worker: the worker SDK.
//!
//! Implement [`Handler`] for a type, register it under a name on a [`Worker`], and start the
//! worker against a server. The worker claims runs of its handlers, heartbeats their leases,
//! stops a run when its timeout passes, when it is cancelled, or when the lease cannot be
//! renewed in time (self-fencing), and completes each run with its `(worker_id, attempt)`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use serde_json::{json, Value};
//! use sundial_worker::{handler_fn, register_builtins, Handler, HandlerError, HttpTransport, RunContext, Worker};
//! use tokio_util::sync::CancellationToken;
//!
//! struct SendEmail;
//!
//! #[async_trait::async_trait]
//! impl Handler for SendEmail {
//!     async fn call(&self, ctx: RunContext) -> Result<Value, HandlerError> {
//!         let to = ctx.payload["to"].as_str().ok_or("payload.to: missing")?;
//!         // Long work should watch `ctx.cancel` and stop when it fires.
//!         Ok(json!({"sent_to": to}))
//!     }
//! }
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = Arc::new(HttpTransport::new("http://127.0.0.1:7070", None));
//! let worker = Worker::new(transport)
//!     .name("mailer-1")
//!     .capacity(8)
//!     .handler("send-email", SendEmail)
//!     .handler("add", handler_fn(|ctx| async move {
//!         Ok(json!(ctx.payload["a"].as_i64().unwrap_or(0) + ctx.payload["b"].as_i64().unwrap_or(0)))
//!     }));
//! let worker = register_builtins(worker, false); // echo + http (shell only when enabled)
//!
//! let shutdown = CancellationToken::new();
//! let on_signal = shutdown.clone();
//! tokio::spawn(async move {
//!     tokio::signal::ctrl_c().await.ok();
//!     on_signal.cancel(); // stop claiming, drain, deregister
//! });
//! worker.run(shutdown).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Modules: [`handler`] (what a handler is), [`worker`] (the loop and its lease rules),
//! [`builtin`] (`echo`, `shell`, `http`), [`transport`] and [`http`] (how a worker reaches
//! the server), [`protocol`] (the wire types).

pub mod builtin;
pub mod handler;
pub mod http;
pub mod protocol;
pub mod transport;
pub mod worker;

#[cfg(test)]
mod test_support;

pub use builtin::{register_builtins, BUILTIN_HANDLERS};
pub use handler::{handler_fn, FnHandler, Handler, HandlerError, RunContext};
pub use http::HttpTransport;
pub use protocol::Outcome;
pub use transport::{Transport, TransportError};
pub use worker::{Worker, WorkerError};
