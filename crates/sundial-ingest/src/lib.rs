//! sundial-ingest: services schedule jobs by producing a message to a Kafka topic.
//!
//! Each message's value is the JSON of `POST /v1/jobs` (or `{"jobs": [...]}`, the body of
//! `POST /v1/jobs/batch`). Every node of a cluster runs one [`Ingest`] in the same consumer
//! group, so the topic's partitions are spread over the nodes.
//!
//! # Guarantees, and the one place each is kept
//! * **At-least-once in, exactly-once effect** (the `pipeline` module): a message's offset is
//!   committed only after the transaction holding its job committed (or after the dead-letter
//!   topic acknowledged it). A message without an `idempotency_key` gets one derived from
//!   `topic/partition/offset` ([`decode::Source::derived_key`]), so a redelivery after a crash or
//!   a rebalance finds the job it already created instead of making a second one.
//! * **Group commit**: messages are consumed in batches (up to [`IngestConfig::max_batch`] or
//!   [`IngestConfig::max_wait`]) and each batch is stored with one
//!   [`Store::job_create_many`](sundial_core::store::Store::job_create_many) call: one
//!   transaction.
//! * **Bad messages never stall a partition**: a message that is not valid JSON or not a valid
//!   job ([`decode`], the API's own parser and validation) goes to the dead-letter topic with its
//!   original key and value and headers naming the reason (the API's error `code` and
//!   `message`) and its source; once the dead-letter topic acknowledged it, its offset moves on.
//! * **Nothing is committed past an unstored message**: when the store is unavailable the
//!   consumer pauses its partitions and retries the same batch with backoff, polling only to
//!   stay in the group.
//!
//! # Metrics
//! `sundial_kafka_messages_total`, `sundial_kafka_jobs_created_total`,
//! `sundial_kafka_duplicates_total`, `sundial_kafka_dead_lettered_total{code}`,
//! `sundial_kafka_consumer_lag` (summed over this node's partitions),
//! `sundial_kafka_assigned_partitions`, `sundial_kafka_store_retries_total`,
//! `sundial_kafka_batch_size`.
//!
//! # Broker notes
//! Tested against tansu 0.6.0 (`scripts/kafka-broker.sh`). The consumer works around one of its
//! group-coordination faults (see the `pipeline` module's watch loop); its DescribeGroups fails
//! on SQLite storage, so nothing here uses it. Dead letters are produced uncompressed.

pub mod decode;
mod pipeline;
#[cfg(feature = "testing")]
pub mod testing;

use anyhow::Context as _;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;
use sundial_core::clock::SharedClock;
use sundial_core::signals::Signals;
use sundial_core::store::SharedStore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Header names on dead-lettered messages.
pub mod headers {
    /// The API's error code (`malformed_json`, `invalid_value`, `name_conflict`, …).
    pub const ERROR_CODE: &str = "sundial-error-code";
    /// The API's error message, naming the field by its path.
    pub const ERROR_MESSAGE: &str = "sundial-error-message";
    /// Topic the message was consumed from.
    pub const SOURCE_TOPIC: &str = "sundial-source-topic";
    /// Its partition (decimal).
    pub const SOURCE_PARTITION: &str = "sundial-source-partition";
    /// Its offset (decimal).
    pub const SOURCE_OFFSET: &str = "sundial-source-offset";
}

/// How a node consumes.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// `HOST:PORT[,…]`.
    pub brokers: String,
    /// Topic of job messages.
    pub topic: String,
    /// Consumer group every node joins.
    pub group: String,
    /// Topic invalid messages go to.
    pub dlq_topic: String,
    /// Most messages stored in one transaction.
    pub max_batch: usize,
    /// Longest a batch waits to fill once it has a message.
    pub max_wait: Duration,
    /// A node silent this long loses its partitions to the others.
    pub session_timeout: Duration,
    /// Longest pause between retries while the store is unavailable.
    pub max_backoff: Duration,
    /// Extra librdkafka settings (`security.protocol`, …), applied last.
    pub extra: Vec<(String, String)>,
    /// The node's limits on a job (`--max-payload`, `--min-interval`), as the HTTP API applies them.
    pub job_limits: sundial_core::input::JobLimits,
}

impl IngestConfig {
    /// Defaults: group `sundial`, dead letters to `<topic>.dlq`, batches of up to 500 messages
    /// or 20 ms.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        let topic = topic.into();
        Self {
            brokers: brokers.into(),
            dlq_topic: format!("{topic}.dlq"),
            topic,
            group: "sundial".into(),
            max_batch: 500,
            max_wait: Duration::from_millis(20),
            session_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(5),
            extra: Vec::new(),
            job_limits: Default::default(),
        }
    }

    fn consumer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .set("client.id", "sundial")
            // Offsets are committed by hand, after the jobs are stored.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A new group starts at the beginning: messages produced before any node ran count.
            .set("auto.offset.reset", "earliest")
            // Eager rebalancing: a node finishes its batch in hand, then all partitions move.
            .set("partition.assignment.strategy", "range,roundrobin")
            .set("session.timeout.ms", self.session_timeout.as_millis().to_string())
            .set("heartbeat.interval.ms", (self.session_timeout.as_millis() / 5).max(100).to_string())
            // A topic created after the node started is found within seconds.
            .set("topic.metadata.refresh.interval.ms", "5000")
            .set("fetch.wait.max.ms", "100")
            .set_log_level(RDKafkaLogLevel::Warning);
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    fn producer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "sundial-dlq")
            .set("acks", "all")
            .set("compression.type", "none")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .set_log_level(RDKafkaLogLevel::Warning);
        for (k, v) in &self.extra {
            // Consumer-only settings would make the producer refuse to start.
            if !k.starts_with("group.") && !k.starts_with("session.") && !k.starts_with("auto.") {
                c.set(k, v);
            }
        }
        c
    }
}

/// Where consumed jobs go: a node's store, clock and wake-ups.
#[derive(Clone)]
pub struct Target {
    /// The store.
    pub store: SharedStore,
    /// The clock (`now` of each transaction).
    pub clock: SharedClock,
    /// Woken after jobs are stored (`runs_ready` for due-now jobs, `triggers_changed` for others).
    pub signals: Arc<Signals>,
}

/// librdkafka's logs and rebalances, as tracing events; counts rebalances so the pipeline can
/// tell whether an assignment is the one its offsets were stored under.
#[derive(Default)]
pub(crate) struct Ctx {
    pub(crate) rebalances: std::sync::atomic::AtomicU64,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "rdkafka", facility = fac, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "rdkafka", facility = fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "rdkafka", facility = fac, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "rdkafka", facility = fac, "{message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(target: "rdkafka", error = %error, "kafka client error: {reason}");
    }
}

impl ConsumerContext for Ctx {
    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalances.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match rebalance {
            // Eager protocol: an assignment is the whole set, a revocation takes all of it.
            Rebalance::Assign(tpl) => {
                metrics::gauge!("sundial_kafka_assigned_partitions").set(tpl.count() as f64);
                tracing::info!(partitions = %describe(tpl), "kafka partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                metrics::gauge!("sundial_kafka_assigned_partitions").set(0.0);
                tracing::info!(partitions = %describe(tpl), "kafka partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::trace!(offsets = %describe(offsets), "kafka offsets committed"),
            // The next commit covers it; a redelivery meanwhile is harmless (derived keys).
            Err(e) => tracing::warn!(error = %e, offsets = %describe(offsets), "kafka offset commit failed"),
        }
    }
}

pub(crate) fn describe(tpl: &TopicPartitionList) -> String {
    let parts: Vec<String> = tpl
        .elements()
        .iter()
        .map(|e| match e.offset().to_raw() {
            Some(o) if o >= 0 => format!("{}/{}@{o}", e.topic(), e.partition()),
            _ => format!("{}/{}", e.topic(), e.partition()),
        })
        .collect();
    parts.join(",")
}

pub(crate) type KafkaConsumer = StreamConsumer<Ctx>;

/// A running consumer; [`Ingest::stop`] commits what is stored and leaves the group.
pub struct Ingest {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Ingest {
    /// Connects (lazily: an unreachable broker is retried in the background and logged), joins
    /// the group and starts consuming into `target`.
    pub fn start(config: IngestConfig, target: Target) -> anyhow::Result<Ingest> {
        let consumer: KafkaConsumer =
            config.consumer_config().create_with_context(Ctx::default()).context("creating the Kafka consumer")?;
        let producer: FutureProducer =
            config.producer_config().create().context("creating the Kafka dead-letter producer")?;
        consumer.subscribe(&[&config.topic]).with_context(|| format!("subscribing to {}", config.topic))?;
        describe_metrics();
        tracing::info!(
            brokers = %config.brokers, topic = %config.topic, group = %config.group, dlq = %config.dlq_topic,
            "kafka ingest started"
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(pipeline::run(Arc::new(consumer), producer, config, target, shutdown.clone()));
        Ok(Ingest { shutdown, task })
    }

    /// Stops consuming: the batch in hand is finished (unless the store is down), stored
    /// offsets are committed, and the node leaves the group so its partitions move at once.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "kafka ingest task failed");
        }
    }
}

fn describe_metrics() {
    metrics::describe_counter!("sundial_kafka_messages_total", "Kafka messages consumed");
    metrics::describe_counter!("sundial_kafka_jobs_created_total", "Jobs created from Kafka messages");
    metrics::describe_counter!(
        "sundial_kafka_duplicates_total",
        "Jobs from Kafka messages that matched an existing job (redelivery or idempotency key)"
    );
    metrics::describe_counter!("sundial_kafka_dead_lettered_total", "Kafka messages sent to the dead-letter topic");
    metrics::describe_gauge!("sundial_kafka_consumer_lag", "Messages not yet consumed on this node's partitions");
    metrics::describe_gauge!("sundial_kafka_assigned_partitions", "Partitions this node consumes");
    metrics::describe_counter!(
        "sundial_kafka_store_retries_total",
        "Batches retried because the store was unavailable"
    );
    metrics::describe_histogram!("sundial_kafka_batch_size", "Kafka messages stored per transaction");
}
