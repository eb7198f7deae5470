//! The ingest consumer inside one process, against the real broker (`scripts/kafka-broker.sh`,
//! started when 127.0.0.1:19092 does not answer) and a real SQLite store. Each test uses topics
//! and a consumer group of its own. Waits are on the node's events or bounded polls
//! (`eventually`) on stored state.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;
use sundial_core::domain::Job;
use sundial_core::signals::Event;
use sundial_core::store::JobFilter;
use sundial_core::testing::eventually;
use sundial_ingest::testing::{
    self, create_topic, ensure_broker, header, produce, produce_with_headers, read_topic, text, unique,
};
use sundial_ingest::{headers, Ingest, IngestConfig, Target};
use sundial_server::node::{Node, NodeConfig};

struct Fixture {
    _dir: tempfile::TempDir,
    node: Node,
    topic: String,
    dlq: String,
    group: String,
}

async fn setup(partitions: i32) -> Fixture {
    setup_with(partitions, true).await
}

/// `with_dlq = false` leaves the dead-letter topic for the consumer to create.
async fn setup_with(partitions: i32, with_dlq: bool) -> Fixture {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    ensure_broker();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(NodeConfig {
        db: format!("sqlite://{}/ingest.db", dir.path().display()),
        listen: "127.0.0.1:0".into(),
        workers: 0,
        ..NodeConfig::default()
    })
    .await
    .unwrap();
    let topic = unique("jobs");
    let dlq = format!("{topic}.dlq");
    create_topic(&topic, partitions).await;
    if with_dlq {
        create_topic(&dlq, 1).await;
    }
    Fixture { _dir: dir, node, topic, dlq, group: unique("group") }
}

/// Where the node's own API would store jobs: its store, clock and wake-ups.
fn target(node: &Node) -> Target {
    let s = &node.state;
    Target { store: s.store.clone(), clock: s.clock.clone(), signals: s.signals.clone() }
}

impl Fixture {
    fn config(&self) -> IngestConfig {
        let mut c = IngestConfig::new(testing::BROKERS, &self.topic);
        c.group = self.group.clone();
        c
    }

    fn ingest(&self) -> Ingest {
        Ingest::start(self.config(), target(&self.node)).unwrap()
    }

    async fn jobs(&self) -> Vec<Job> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let f = JobFilter { limit: 1000, cursor, ..Default::default() };
            let page = self.node.state.store.job_list(&f, self.node.state.clock.now()).await.unwrap();
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }

    async fn wait_jobs(&self, n: usize, secs: u64) -> Vec<Job> {
        let what = format!("{n} jobs");
        eventually(&what, Duration::from_secs(secs), move || async move {
            let jobs = self.jobs().await;
            (jobs.len() >= n).then_some(jobs)
        })
        .await
    }

    /// The group's committed offsets summed over partitions (-1001 = none counts as 0).
    fn committed(&self, partitions: i32) -> i64 {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", testing::BROKERS)
            .set("group.id", &self.group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&self.topic, p);
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
        got.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum()
    }
}

fn msg(v: Value) -> (Option<Vec<u8>>, Vec<u8>) {
    (None, serde_json::to_vec(&v).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_message_becomes_one_job_and_offsets_are_committed() {
    let f = setup(3).await;
    produce(&f.topic, (0..1000).map(|i| msg(json!({"handler": "echo", "payload": {"i": i}})))).await;
    let ingest = f.ingest();
    let jobs = f.wait_jobs(1000, 60).await;
    ingest.stop().await;
    assert_eq!(jobs.len(), 1000);
    let seen: HashSet<i64> = jobs.iter().map(|j| j.payload["i"].as_i64().unwrap()).collect();
    assert_eq!(seen.len(), 1000, "each message once");
    assert_eq!(f.committed(3), 1000, "every offset committed once stored");
    f.node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivered_messages_map_to_the_jobs_they_created() {
    let f = setup(2).await;
    produce(&f.topic, (0..300).map(|i| msg(json!({"handler": "echo", "payload": {"i": i}})))).await;
    // Two messages with the same explicit key: one job.
    produce(&f.topic, (0..2).map(|_| msg(json!({"handler": "echo", "idempotency_key": "order-42"})))).await;
    let first = f.ingest();
    f.wait_jobs(301, 60).await;
    first.stop().await;
    // Every message again, as after a crash before any commit: a new group reads from the start.
    let mut again = f.config();
    again.group = unique("replay");
    let second = Ingest::start(again.clone(), target(&f.node)).unwrap();
    let c: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", testing::BROKERS).set("group.id", &again.group).create().unwrap();
    let c = &c;
    let topic = f.topic.as_str();
    eventually("the replay group to commit all 302 offsets", Duration::from_secs(60), move || async move {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, 0);
        tpl.add_partition(topic, 1);
        let got = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
        let sum: i64 = got.elements().iter().filter_map(|e| e.offset().to_raw()).filter(|o| *o >= 0).sum();
        (sum == 302).then_some(())
    })
    .await;
    second.stop().await;
    let jobs = f.jobs().await;
    assert_eq!(jobs.len(), 301, "redelivery created no second job");
    f.node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_messages_go_to_the_dead_letter_topic_with_reasons_and_good_ones_are_stored() {
    let f = setup_with(2, false).await;
    let good = |r: std::ops::Range<i32>| r.map(|i| msg(json!({"handler": "echo", "payload": {"i": i}})));
    let origin = [("origin", "test")];
    produce(&f.topic, good(0..10)).await;
    produce_with_headers(&f.topic, Some(b"k-malformed"), b"{\"handler\": \"echo\",", &origin).await;
    produce(&f.topic, good(10..90)).await;
    let bad_cron = json!({"handler": "echo", "triggers": [{"kind": "cron", "expr": "not a cron"}]});
    produce_with_headers(&f.topic, None, &serde_json::to_vec(&bad_cron).unwrap(), &origin).await;
    produce(&f.topic, good(90..150)).await;
    produce_with_headers(&f.topic, None, br#"{"payload": {"no": "handler"}}"#, &origin).await;
    produce(&f.topic, good(150..200)).await;
    // Under the node's --min-interval (default 1s), as over HTTP.
    let too_fast = json!({"handler": "echo", "triggers": [{"kind": "interval", "every": "1ns"}]});
    produce_with_headers(&f.topic, None, &serde_json::to_vec(&too_fast).unwrap(), &origin).await;
    let ingest = f.ingest();
    let jobs = f.wait_jobs(200, 60).await;
    let dead = read_topic(&f.dlq, 4, Duration::from_secs(30)).await;
    ingest.stop().await;
    assert_eq!(jobs.len(), 200, "every good message stored");
    assert_eq!(dead.len(), 4, "four dead letters");
    let mut by_code: Vec<(String, String, String)> = dead
        .iter()
        .map(|m| {
            assert_eq!(header(m, headers::SOURCE_TOPIC).as_deref(), Some(f.topic.as_str()));
            let p: i32 = header(m, headers::SOURCE_PARTITION).unwrap().parse().unwrap();
            let o: i64 = header(m, headers::SOURCE_OFFSET).unwrap().parse().unwrap();
            assert!((0..2).contains(&p) && o >= 0);
            assert_eq!(header(m, "origin").as_deref(), Some("test"), "original headers kept");
            (header(m, headers::ERROR_CODE).unwrap(), header(m, headers::ERROR_MESSAGE).unwrap(), text(m))
        })
        .collect();
    by_code.sort();
    let malformed = by_code.iter().find(|(c, _, _)| c == "malformed_json").expect("malformed one");
    assert_eq!(malformed.2, "{\"handler\": \"echo\",", "original bytes");
    let key = dead.iter().find(|m| header(m, headers::ERROR_CODE).as_deref() == Some("malformed_json")).unwrap();
    assert_eq!(rdkafka::Message::key(key), Some(&b"k-malformed"[..]), "original key");
    let invalid: Vec<&String> = by_code.iter().filter(|(c, _, _)| c == "invalid_value").map(|(_, m, _)| m).collect();
    assert_eq!(invalid.len(), 3, "{by_code:?}");
    assert!(invalid.iter().any(|m| m.starts_with("triggers[0].every")), "{invalid:?}");
    assert!(invalid.iter().any(|m| m.starts_with("triggers[0].expr")), "{invalid:?}");
    assert!(invalid.iter().any(|m| m.as_str() == "handler: is required"), "{invalid:?}");
    assert_eq!(f.committed(2), 204, "dead-lettered offsets move on too");
    f.node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_messages_store_every_item_and_a_bad_item_dead_letters_its_message() {
    let f = setup(1).await;
    produce(
        &f.topic,
        [
            msg(json!({"jobs": [{"handler": "a"}, {"handler": "b", "triggers": [{"kind": "interval", "every": "1h"}]}]})),
            msg(json!({"jobs": [{"handler": "c"}, {"handler": "d", "timeout": "soon"}]})),
            msg(json!({"jobs": [{"handler": "e", "name": "taken"}, {"handler": "f"}]})),
            msg(json!({"handler": "g", "name": "taken"})),
        ],
    )
    .await;
    let ingest = f.ingest();
    let dead = read_topic(&f.dlq, 2, Duration::from_secs(30)).await;
    let jobs = f.wait_jobs(4, 30).await;
    ingest.stop().await;
    let mut handlers: Vec<String> = jobs.iter().map(|j| j.handler.clone()).collect();
    handlers.sort();
    // The bad batch stored nothing; the name conflict is found in the store, after e and f.
    assert_eq!(handlers, ["a", "b", "e", "f"]);
    let reasons: Vec<(String, String)> = dead
        .iter()
        .map(|m| (header(m, headers::ERROR_CODE).unwrap(), header(m, headers::ERROR_MESSAGE).unwrap()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, "invalid_value");
    assert!(reasons[0].1.starts_with("jobs[1].timeout"), "{reasons:?}");
    assert_eq!(reasons[1].0, "name_conflict", "{reasons:?}");
    assert!(reasons[1].1.starts_with("name: "), "{reasons:?}");
    f.node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unavailable_store_pauses_consumption_and_commits_nothing_past_it() {
    let f = setup(1).await;
    let db = f._dir.path().join("ingest.db");
    // Another process holds the write lock (longer than the store's busy timeout, 10s) until
    // its stdin is closed.
    let mut locker = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1],isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\nprint('locked',flush=True)\nsys.stdin.read()\nc.execute('COMMIT')",
            db.to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(locker.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked");
    }
    let mut events = f.node.state.signals.events();
    produce(&f.topic, (0..50).map(|i| msg(json!({"handler": "echo", "payload": {"i": i}})))).await;
    let ingest = f.ingest();
    events
        .wait_for("the pipeline to find the store unavailable", Duration::from_secs(60), |e| {
            *e == Event::IngestStoreRetry
        })
        .await;
    assert_eq!(f.committed(1), 0, "nothing committed while the batch is not stored");
    drop(locker.stdin.take());
    let _ = locker.wait();
    let jobs = f.wait_jobs(50, 40).await;
    assert_eq!(jobs.len(), 50);
    let fixture = &f;
    eventually("offsets committed after the store came back", Duration::from_secs(10), move || async move {
        (fixture.committed(1) == 50).then_some(())
    })
    .await;
    ingest.stop().await;
    f.node.stop().await;
}
