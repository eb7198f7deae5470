//! [`HttpTransport`]: the worker protocol of API.md over HTTP/JSON, for remote workers.
//!
//! Status codes map onto [`TransportError`]: 409 → `StaleAttempt`, 404 → `NotFound`,
//! 5xx / 429 / network trouble → `Unavailable` (retried by the worker), any other 4xx →
//! `Rejected`, carrying the server's `error.message`.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::protocol::*;
use crate::transport::{Transport, TransportError};

/// Timeout of every request but a claim.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A claim may long-poll for its `wait`; the HTTP timeout allows this much more.
const CLAIM_SLACK: Duration = Duration::from_secs(10);

/// The worker protocol over HTTP against a sundial server.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl HttpTransport {
    /// A transport to the server at `base_url` (e.g. `http://127.0.0.1:7070`), sending
    /// `Authorization: Bearer <token>` when a token is given.
    pub fn new(base_url: impl Into<String>, token: Option<String>) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("sundial-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("building an HTTP client with static settings");
        Self { base: base_url.into().trim_end_matches('/').to_string(), token, client }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(&self, req: reqwest::RequestBuilder, timeout: Duration) -> Result<reqwest::Response, TransportError> {
        let req = match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        };
        let resp = req.timeout(timeout).send().await.map_err(|e| TransportError::Unavailable(error_chain(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let message = server_message(&body).unwrap_or_else(|| format!("HTTP {status}"));
        Err(match status.as_u16() {
            409 => TransportError::StaleAttempt(message),
            404 => TransportError::NotFound(message),
            429 | 500..=599 => TransportError::Unavailable(message),
            _ => TransportError::Rejected(format!("HTTP {}: {message}", status.as_u16())),
        })
    }

    async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, TransportError> {
        let resp = self.send(self.client.post(self.url(path)).json(body), timeout).await?;
        let bytes = resp.bytes().await.map_err(|e| TransportError::Unavailable(error_chain(&e)))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| TransportError::Rejected(format!("unexpected answer from {path}: {e}")))
    }
}

/// The server's `{"error": {"code", "message"}}` as `"code: message"`.
fn server_message(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let err = v.get("error")?;
    let message = err.get("message").and_then(|m| m.as_str());
    let code = err.get("code").and_then(|c| c.as_str());
    match (code, message) {
        (Some(c), Some(m)) => Some(format!("{c}: {m}")),
        (None, Some(m)) => Some(m.to_string()),
        (Some(c), None) => Some(c.to_string()),
        (None, None) => None,
    }
}

/// reqwest's top-level messages hide the cause ("error sending request"); include the chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Path segment escaping for ids (they are opaque strings).
fn seg(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait::async_trait]
impl Transport for HttpTransport {
    async fn register(&self, req: &RegisterRequest) -> Result<Registered, TransportError> {
        self.post_json("/v1/workers", req, REQUEST_TIMEOUT).await
    }

    async fn claim(&self, worker_id: &str, req: &ClaimRequest) -> Result<ClaimResponse, TransportError> {
        let wait = req.wait.as_deref().and_then(|w| humantime::parse_duration(w).ok()).unwrap_or_default();
        let path = format!("/v1/workers/{}/claim", seg(worker_id));
        self.post_json(&path, req, wait + CLAIM_SLACK).await
    }

    async fn heartbeat(&self, worker_id: &str, req: &HeartbeatRequest) -> Result<HeartbeatResponse, TransportError> {
        let path = format!("/v1/workers/{}/heartbeat", seg(worker_id));
        self.post_json(&path, req, REQUEST_TIMEOUT).await
    }

    async fn complete(&self, run_id: &str, req: &CompleteRequest) -> Result<(), TransportError> {
        let path = format!("/v1/runs/{}/complete", seg(run_id));
        self.send(self.client.post(self.url(&path)).json(req), REQUEST_TIMEOUT).await?;
        Ok(())
    }

    async fn deregister(&self, worker_id: &str) -> Result<(), TransportError> {
        let path = format!("/v1/workers/{}", seg(worker_id));
        self.send(self.client.delete(self.url(&path)), REQUEST_TIMEOUT).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn canned(status: &'static str, body: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let (url, task) = crate::test_support::canned(status, "application/json", body).await;
        (format!("{url}/"), task) // a trailing slash must not double up
    }

    fn complete_req() -> CompleteRequest {
        CompleteRequest {
            worker_id: "w1".into(),
            attempt: 2,
            state: Outcome::Succeeded,
            output: None,
            error: None,
            retry: None,
        }
    }

    #[tokio::test]
    async fn register_posts_and_parses_answer_with_bearer_token() {
        let (url, server) = canned("201 Created", r#"{"id":"w1","lease":"30s","heartbeat_interval":"10s"}"#).await;
        let t = HttpTransport::new(url, Some("secret".into()));
        let req = RegisterRequest { name: "n".into(), handlers: vec!["echo".into()], capacity: 2 };
        let r = t.register(&req).await.unwrap();
        assert_eq!((r.id.as_str(), r.lease.as_str()), ("w1", "30s"));
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /v1/workers HTTP/1.1"), "{request}");
        assert!(request.to_ascii_lowercase().contains("authorization: bearer secret"), "{request}");
        assert!(request.contains(r#""capacity":2"#), "{request}");
    }

    #[tokio::test]
    async fn claim_and_heartbeat_use_worker_paths() {
        let (url, server) = canned("200 OK", r#"{"runs":[]}"#).await;
        let t = HttpTransport::new(url, None);
        let resp = t.claim("w 1", &ClaimRequest { max: 3, wait: Some("1s".into()) }).await.unwrap();
        assert!(resp.runs.is_empty());
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /v1/workers/w%201/claim HTTP/1.1"), "{request}");
        assert!(request.contains(r#""wait":"1s""#), "{request}");

        let (url, server) = canned("200 OK", r#"{"lease_expires_at":null,"cancel":["r1"],"lost":[]}"#).await;
        let t = HttpTransport::new(url, None);
        let req = HeartbeatRequest { runs: vec![HeldRun { run_id: "r1".into(), attempt: 1 }] };
        let resp = t.heartbeat("w1", &req).await.unwrap();
        assert_eq!(resp.cancel, vec!["r1".to_string()]);
        assert!(server.await.unwrap().starts_with("POST /v1/workers/w1/heartbeat "));
    }

    #[tokio::test]
    async fn complete_409_is_stale_attempt() {
        let (url, server) =
            canned("409 Conflict", r#"{"error":{"code":"stale_attempt","message":"attempt: run r1 is at attempt 3"}}"#)
                .await;
        let t = HttpTransport::new(url, None);
        match t.complete("r1", &complete_req()).await {
            Err(TransportError::StaleAttempt(m)) => assert_eq!(m, "stale_attempt: attempt: run r1 is at attempt 3"),
            other => panic!("{other:?}"),
        }
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /v1/runs/r1/complete "), "{request}");
        assert!(request.contains(r#""worker_id":"w1""#) && request.contains(r#""state":"succeeded""#), "{request}");
    }

    #[tokio::test]
    async fn status_codes_map_to_transport_errors() {
        type Check = fn(&TransportError) -> bool;
        let cases: [(&'static str, Check); 5] = [
            ("404 Not Found", |e| matches!(e, TransportError::NotFound(_))),
            ("503 Service Unavailable", |e| matches!(e, TransportError::Unavailable(_))),
            ("429 Too Many Requests", |e| matches!(e, TransportError::Unavailable(_))),
            (
                "422 Unprocessable Entity",
                |e| matches!(e, TransportError::Rejected(m) if m.contains("bad_value: max: must be positive")),
            ),
            ("401 Unauthorized", |e| matches!(e, TransportError::Rejected(m) if m.contains("401"))),
        ];
        for (status, check) in cases {
            let (url, _server) =
                canned(status, r#"{"error":{"code":"bad_value","message":"max: must be positive"}}"#).await;
            let t = HttpTransport::new(url, None);
            let err = t.deregister("w1").await.unwrap_err();
            assert!(check(&err), "{status}: {err:?}");
        }
    }

    #[tokio::test]
    async fn deregister_204_is_ok_and_network_error_is_unavailable() {
        let (url, server) = canned("204 No Content", "").await;
        HttpTransport::new(url, None).deregister("w1").await.unwrap();
        assert!(server.await.unwrap().starts_with("DELETE /v1/workers/w1 "));

        // Nothing listens on a port we just released.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let err = HttpTransport::new(url, None).heartbeat("w1", &HeartbeatRequest::default()).await.unwrap_err();
        assert!(matches!(err, TransportError::Unavailable(_)), "{err:?}");
    }
}
