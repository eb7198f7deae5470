//! Test server: a real node on 127.0.0.1:0 over a temp SQLite file, spoken to over real HTTP.
#![allow(dead_code)]

use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use sundial_core::clock::SharedClock;
use sundial_core::signals::{Event, Signals};
use sundial_core::testing::eventually;
use sundial_server::node::{Node, NodeConfig};

pub(crate) struct TestServer {
    pub node: Option<Node>,
    pub base: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
    _dir: tempfile::TempDir,
}

pub(crate) struct Resp {
    pub status: u16,
    pub body: Value,
}

impl TestServer {
    pub(crate) async fn start(f: impl FnOnce(&mut NodeConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NodeConfig {
            db: format!("sqlite://{}/t.db", dir.path().display()),
            listen: "127.0.0.1:0".into(),
            workers: 0,
            ..NodeConfig::default()
        };
        f(&mut cfg);
        let token = cfg.tokens.first().cloned();
        let node = Node::start(cfg).await.unwrap();
        let base = format!("http://{}", node.addr);
        TestServer { node: Some(node), base, http: reqwest::Client::new(), token, _dir: dir }
    }

    pub(crate) async fn with_workers(n: u32) -> TestServer {
        Self::start(|c| c.workers = n).await
    }

    pub(crate) fn clock(&self) -> SharedClock {
        self.node.as_ref().unwrap().state.clock.clone()
    }

    pub(crate) async fn req(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.raw(method, path, body.map(|b| b.to_string().into_bytes())).await
    }

    pub(crate) async fn raw(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Resp {
        let mut r = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Resp { status, body }
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Resp {
        self.req("POST", path, Some(body)).await
    }

    pub(crate) async fn get(&self, path: &str) -> Resp {
        self.req("GET", path, None).await
    }

    /// Polls `GET path` until `pred` holds (bounded wait for asynchronous execution).
    pub(crate) async fn wait_for(&self, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let pred = &pred;
        eventually(what, Duration::from_secs(20), move || async move {
            let r = self.get(path).await;
            (r.status == 200 && pred(&r.body)).then_some(r.body)
        })
        .await
    }

    /// The node's wake-ups and test events.
    pub(crate) fn signals(&self) -> Arc<Signals> {
        self.node.as_ref().unwrap().state.signals.clone()
    }

    /// Waits until a claim that started after this call (so after every commit before it)
    /// found nothing due and parked: whatever is pending now was passed over by it.
    pub(crate) async fn claim_passed_over_pending_runs(&self) {
        let signals = self.signals();
        let mut events = signals.events();
        let after = signals.claims_started();
        // Wakes a parked claimer; one mid-claim has registered for this wake-up already.
        signals.runs_ready.notify_waiters();
        events
            .wait_for(
                "a claim that looked after the last commit to park",
                Duration::from_secs(20),
                |e| matches!(e, Event::ClaimParked { claim } if *claim > after),
            )
            .await;
    }

    pub(crate) async fn stop(mut self) {
        if let Some(n) = self.node.take() {
            n.stop().await;
        }
    }
}

pub(crate) fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "body: {}", r.body);
    assert_eq!(r.body["error"]["code"], code, "body: {}", r.body);
    assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "body: {}", r.body);
}

pub(crate) fn manual_clock() -> (Arc<sundial_core::clock::ManualClock>, SharedClock) {
    let c = Arc::new(sundial_core::clock::ManualClock::new(
        chrono::DateTime::parse_from_rfc3339("2026-11-24T08:00:00Z").unwrap().with_timezone(&chrono::Utc),
    ));
    let shared: SharedClock = c.clone();
    (c, shared)
}
