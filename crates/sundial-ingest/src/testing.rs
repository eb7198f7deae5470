//! Helpers for tests against a real Kafka-protocol broker (`scripts/kafka-broker.sh`, tansu on
//! 127.0.0.1:19092): start it once per machine, make topics with unique names, produce, and read
//! a topic back. Used by this crate's tests and by the `sundial` binary's process tests.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The test broker's address.
pub const BROKERS: &str = "127.0.0.1:19092";

/// `scripts/kafka-broker.sh` of this repository.
pub fn broker_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka-broker.sh")
}

fn answers() -> bool {
    TcpStream::connect_timeout(&BROKERS.parse().expect("address"), Duration::from_millis(500)).is_ok()
}

/// Makes sure the broker answers, starting it with the script when it does not (the script
/// holds a lock file, so parallel tests start one broker). Returns the bootstrap address.
pub fn ensure_broker() -> &'static str {
    if answers() {
        return BROKERS;
    }
    let status = std::process::Command::new("bash")
        .arg(broker_script())
        .arg("start")
        .status()
        .expect("running scripts/kafka-broker.sh");
    assert!(status.success(), "scripts/kafka-broker.sh start failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers() {
        assert!(Instant::now() < deadline, "the Kafka broker at {BROKERS} does not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    BROKERS
}

/// A topic name no other test (or earlier run) uses: `{prefix}-{pid}-{n}-{nanos}`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{prefix}-{}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), nanos % 1_000_000_000)
}

/// Creates topics (tansu does not create them on first use) through the admin API.
pub async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", BROKERS).create().expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let res = admin.create_topics([&topic], &opts).await.expect("CreateTopics request");
    for r in res {
        if let Err((t, e)) = r {
            panic!("creating topic {t}: {e}");
        }
    }
}

/// A producer with no compression (tansu supports none of snappy).
pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set("compression.type", "none")
        .set("linger.ms", "5")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

/// Produces `values` (with `key`s when given; no headers) to `topic`, spread over partitions by
/// key hash or librdkafka's sticky partitioner, and waits for every acknowledgement.
pub async fn produce<I>(topic: &str, values: I)
where
    I: IntoIterator<Item = (Option<Vec<u8>>, Vec<u8>)>,
{
    let p = producer();
    let mut pending = Vec::new();
    for (key, value) in values {
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(&value[..]);
        if let Some(k) = &key {
            rec = rec.key(&k[..]);
        }
        let fut = loop {
            match p.send_result(rec) {
                Ok(f) => break f,
                Err((e, r)) => {
                    // Queue full: let deliveries drain.
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "producing to {topic}: {e}"
                    );
                    rec = r;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        pending.push(fut);
        if pending.len() >= 10_000 {
            ack_all(topic, std::mem::take(&mut pending)).await;
        }
    }
    ack_all(topic, pending).await;
}

/// Produces one message with headers and waits for its acknowledgement.
pub async fn produce_with_headers(topic: &str, key: Option<&[u8]>, value: &[u8], headers: &[(&str, &str)]) {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header { key: k, value: Some(*v) });
    }
    let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(value).headers(h);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    if let Err((e, _)) = producer().send(rec, Duration::from_secs(10)).await {
        panic!("producing to {topic}: {e}");
    }
}

async fn ack_all(topic: &str, futs: Vec<rdkafka::producer::DeliveryFuture>) {
    for r in futures::future::join_all(futs).await {
        match r {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => panic!("producing to {topic}: {e}"),
            Err(_) => panic!("producing to {topic}: delivery cancelled"),
        }
    }
}

/// Reads `topic` from the beginning (a fresh group) until `n` messages or `timeout`.
pub async fn read_topic(topic: &str, n: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout_at(deadline, c.recv()).await {
            Err(_) => break,
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    out
}

/// A header of a message as text.
pub fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    use rdkafka::message::Headers;
    let h = m.headers()?;
    h.iter().find(|h| h.key == key).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Convenience: a message's value as text.
pub fn text(m: &OwnedMessage) -> String {
    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()
}
