//! What a handler is: the [`Handler`] trait a worker calls for each run, the [`RunContext`] it
//! gets, the [`HandlerError`] it returns, and [`handler_fn`] to make one from a closure.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Everything a handler knows about the run it executes.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The run.
    pub run_id: String,
    /// The run's job.
    pub job_id: String,
    /// This attempt (1 for the first claim).
    pub attempt: u32,
    /// The job's payload.
    pub payload: Value,
    /// When the run was due.
    pub scheduled_for: DateTime<Utc>,
    /// Fires when the handler must stop: timeout, cancel, lost or unrenewable lease, or
    /// shutdown. A handler that ignores it is aborted shortly after (at its next `.await`).
    pub cancel: CancellationToken,
}

/// A failed run: the message becomes the run's `error`, the optional output its `output`
/// (e.g. a shell command's non-zero exit still reports its stdout and stderr).
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerError {
    /// Human-readable reason.
    pub message: String,
    /// Output to record despite the failure.
    pub output: Option<Value>,
    /// False when another attempt cannot help (e.g. a command the worker refuses): the run
    /// fails at once, whatever attempts its job has left.
    pub retry: bool,
}

impl HandlerError {
    /// An error with a message and no output.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), output: None, retry: true }
    }

    /// The run is not to be retried: another attempt cannot help.
    pub fn no_retry(mut self) -> Self {
        self.retry = false;
        self
    }

    /// Attach output to record with the failure.
    pub fn with_output(mut self, output: Value) -> Self {
        self.output = Some(output);
        self
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

impl From<serde_json::Error> for HandlerError {
    fn from(e: serde_json::Error) -> Self {
        Self::new(e.to_string())
    }
}

impl From<std::io::Error> for HandlerError {
    fn from(e: std::io::Error) -> Self {
        Self::new(e.to_string())
    }
}

/// Code a worker runs for the runs of one handler name.
///
/// Return `Ok(output)` for success, `Err` for failure. Watch `ctx.cancel` in long work: it
/// fires when the run must stop, and what the handler returns then is reported with the
/// stop's state (`timed_out`, `cancelled`) or dropped (lost lease).
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Execute one attempt of a run.
    async fn call(&self, ctx: RunContext) -> Result<Value, HandlerError>;
}

#[async_trait::async_trait]
impl<H: Handler + ?Sized> Handler for Arc<H> {
    async fn call(&self, ctx: RunContext) -> Result<Value, HandlerError> {
        (**self).call(ctx).await
    }
}

#[async_trait::async_trait]
impl<H: Handler + ?Sized> Handler for Box<H> {
    async fn call(&self, ctx: RunContext) -> Result<Value, HandlerError> {
        (**self).call(ctx).await
    }
}

/// A [`Handler`] made from a closure; see [`handler_fn`].
#[derive(Clone)]
pub struct FnHandler<F>(F);

impl<F> fmt::Debug for FnHandler<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnHandler")
    }
}

/// Make a handler from an async closure:
/// `handler_fn(|ctx| async move { Ok(ctx.payload) })`.
pub fn handler_fn<F, Fut>(f: F) -> FnHandler<F>
where
    F: Fn(RunContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    FnHandler(f)
}

#[async_trait::async_trait]
impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(RunContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    async fn call(&self, ctx: RunContext) -> Result<Value, HandlerError> {
        (self.0)(ctx).await
    }
}

/// A context for unit tests of handlers.
#[cfg(test)]
pub(crate) fn test_ctx(payload: Value) -> RunContext {
    RunContext {
        run_id: "r1".into(),
        job_id: "j1".into(),
        attempt: 1,
        payload,
        scheduled_for: Utc::now(),
        cancel: CancellationToken::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(payload: Value) -> RunContext {
        test_ctx(payload)
    }

    #[tokio::test]
    async fn handler_fn_calls_the_closure() {
        let h = handler_fn(|ctx| async move { Ok(serde_json::json!({"got": ctx.payload})) });
        let out = h.call(ctx(serde_json::json!(1))).await.unwrap();
        assert_eq!(out, serde_json::json!({"got": 1}));
        // Usable as a shared trait object too.
        let shared: Arc<dyn Handler> = Arc::new(h);
        assert!(shared.call(ctx(Value::Null)).await.is_ok());
    }

    #[test]
    fn handler_error_keeps_message_and_output() {
        let e = HandlerError::new("boom").with_output(serde_json::json!({"x": 1}));
        assert_eq!(e.to_string(), "boom");
        assert_eq!(e.output, Some(serde_json::json!({"x": 1})));
        assert_eq!(HandlerError::from("a"), HandlerError::new("a"));
    }
}
