//! Kafka ingest with whole processes: `sundial serve --kafka-brokers …` as children, a real
//! Kafka-protocol broker (`scripts/kafka-broker.sh`: tansu on 127.0.0.1:19092, started when it
//! does not answer), jobs counted over the HTTP API. Each test has topics and a group of its own.

use serde_json::{json, Value};
use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};
use sundial_core::testing::eventually;
use sundial_ingest::testing::{self, create_topic, ensure_broker, produce, unique};

mod support;
use support::*;

const N: usize = 10_000;

struct Node {
    proc: Proc,
    base: String,
}

impl Node {
    /// `sundial serve` on a free port, consuming `topic` in `group`.
    async fn start(db: &str, topic: &str, group: &str) -> Node {
        let port = free_port();
        let kafka =
            ["--workers", "0", "--kafka-brokers", testing::BROKERS, "--kafka-topic", topic, "--kafka-group", group];
        let node = Node { proc: serve(db, port, &kafka), base: format!("http://127.0.0.1:{port}") };
        wait_ready(&node.base).await;
        node
    }

    /// SIGKILL: no drain, no commit, no leaving the group — a crash.
    fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// SIGTERM, and the exit code.
    fn terminate(&mut self) -> Option<i32> {
        // The `kill` command rather than libc: this file stays free of unsafe code.
        let _ = Command::new("kill").args(["-TERM", &self.proc.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.proc.0.try_wait().unwrap() {
                return s.code();
            }
            assert!(Instant::now() < deadline, "node did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A metric's value from `/metrics` (summed over label sets; 0 when absent).
    async fn metric(&self, name: &str) -> f64 {
        let text = match reqwest::get(format!("{}/metrics", self.base)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => return 0.0,
        };
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Every job, through `GET /v1/jobs` pages of 1000.
    async fn jobs(&self) -> Vec<Value> {
        let http = reqwest::Client::new();
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/jobs?limit=1000", self.base);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            out.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }

    /// Waits until the created + duplicate counters say `n` jobs were handled on this node.
    async fn wait_created(&self, n: f64, secs: u64) {
        let what = format!("{} to create {n} jobs", self.base);
        eventually(&what, Duration::from_secs(secs), move || async move {
            (self.metric("sundial_kafka_jobs_created_total").await >= n).then_some(())
        })
        .await;
    }
}

/// `N` job messages, keyed so the producer spreads them over the partitions.
fn messages(n: usize) -> impl Iterator<Item = (Option<Vec<u8>>, Vec<u8>)> {
    (0..n).map(|i| {
        let v = json!({"handler": "echo", "payload": {"i": i}});
        (Some(format!("k{i}").into_bytes()), serde_json::to_vec(&v).unwrap())
    })
}

/// Waits for exactly `n` distinct jobs (one per message index), failing on any extra.
async fn assert_exactly(node: &Node, n: usize, secs: u64) -> Vec<Value> {
    let what = format!("{n} jobs");
    let jobs = eventually(&what, Duration::from_secs(secs), move || async move {
        let jobs = node.jobs().await;
        assert!(jobs.len() <= n, "{} jobs for {n} messages", jobs.len());
        (jobs.len() == n).then_some(jobs)
    })
    .await;
    let seen: HashSet<u64> = jobs.iter().map(|j| j["payload"]["i"].as_u64().unwrap()).collect();
    assert_eq!(seen.len(), n, "one job per message");
    jobs
}

async fn topic(partitions: i32) -> String {
    ensure_broker();
    let t = unique("jobs");
    create_topic(&t, partitions).await;
    create_topic(&format!("{t}.dlq"), 1).await;
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_messages_become_exactly_ten_thousand_jobs() {
    let topic = topic(4).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/k.db", dir.path().display());
    let mut node = Node::start(&db, &topic, &unique("group")).await;
    let started = Instant::now();
    produce(&topic, messages(N)).await;
    assert_exactly(&node, N, 90).await;
    let secs = started.elapsed().as_secs_f64();
    eprintln!("{N} messages produced and stored in {secs:.1}s ({:.0}/s)", N as f64 / secs);
    assert_eq!(node.metric("sundial_kafka_messages_total").await, N as f64);
    assert_eq!(node.metric("sundial_kafka_jobs_created_total").await, N as f64);
    assert_eq!(node.metric("sundial_kafka_dead_lettered_total").await, 0.0);
    // The lag gauge is refreshed every 5 s; everything is consumed, so it settles at 0.
    let n_ref = &node;
    eventually("consumer lag to reach 0", Duration::from_secs(15), move || async move {
        (n_ref.metric("sundial_kafka_consumer_lag").await == 0.0 && metric_present(n_ref).await).then_some(())
    })
    .await;
    assert_eq!(node.terminate(), Some(0), "exits 0 on SIGTERM after committing");
}

async fn metric_present(node: &Node) -> bool {
    let text = reqwest::get(format!("{}/metrics", node.base)).await.unwrap().text().await.unwrap();
    text.contains("\nsundial_kafka_consumer_lag ")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_mid_stream_and_restarted_loses_and_doubles_no_job() {
    let topic = topic(4).await;
    let group = unique("group");
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/k.db", dir.path().display());
    produce(&topic, messages(N)).await;
    let mut node = Node::start(&db, &topic, &group).await;
    node.wait_created(1500.0, 60).await;
    // A little later, so the kill may land inside a batch's transaction or before its commit.
    let jitter = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() % 40;
    tokio::time::sleep(Duration::from_millis(jitter as u64)).await;
    node.kill9();
    let after = Node::start(&db, &topic, &group).await; // same store, same group
    let stored_before = after.jobs().await.len();
    assert!(stored_before < N, "killed mid-stream: {stored_before} of {N} stored before the restart");
    assert_exactly(&after, N, 120).await;
    let dups = after.metric("sundial_kafka_duplicates_total").await;
    eprintln!("killed after {stored_before} of {N} stored; restarted node redelivered {dups} already-stored messages");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_in_one_group_share_the_partitions() {
    let topic = topic(4).await;
    let group = unique("group");
    let dir = tempfile::tempdir().unwrap();
    // One store (two nodes on one SQLite file: it serialises their writers), so "exactly once"
    // is countable across both.
    let db = format!("sqlite://{}/k.db", dir.path().display());
    let a = Node::start(&db, &topic, &group).await;
    let b = Node::start(&db, &topic, &group).await;
    let (a_ref, b_ref) = (&a, &b);
    eventually("the partitions to split between the nodes", Duration::from_secs(60), move || async move {
        let (pa, pb) = (
            a_ref.metric("sundial_kafka_assigned_partitions").await,
            b_ref.metric("sundial_kafka_assigned_partitions").await,
        );
        (pa > 0.0 && pb > 0.0 && pa + pb == 4.0).then_some(())
    })
    .await;
    produce(&topic, messages(N)).await;
    assert_exactly(&a, N, 120).await;
    let (ca, cb) =
        (a.metric("sundial_kafka_jobs_created_total").await, b.metric("sundial_kafka_jobs_created_total").await);
    eprintln!("node a created {ca} jobs, node b {cb}");
    assert!(ca > 0.0 && cb > 0.0, "both nodes stored some: {ca} + {cb}");
    assert_eq!(ca + cb, N as f64, "each message stored by exactly one node");
}
