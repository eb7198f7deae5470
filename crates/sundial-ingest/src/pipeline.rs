//! The consume → store → dead-letter → commit loop of one node.
//!
//! One batch is in hand at a time. Its offsets are committed only after
//! 1. every job of its valid messages is in a committed transaction (`job_create_many`), and
//! 2. every invalid message was acknowledged by the dead-letter topic.
//!
//! Until then the batch is retried, never skipped: while the store (or the dead-letter topic) is
//! unavailable the assigned partitions are paused and the consumer is polled only to keep its
//! group membership; anything polled meanwhile waits in `backlog`, in order. A redelivered
//! message (after a crash, a rebalance, or a commit that did not land) maps to the job it
//! created through its derived idempotency key, so the effect is exactly once.

use crate::decode::{decode, within_item, Source};
use crate::{headers, IngestConfig, KafkaConsumer, Target};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use sundial_core::input::Rejection;
use sundial_core::signals::Event;
use sundial_core::store::{JobCreate, JobCreated, StoreError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What became of one message.
enum Outcome {
    /// Its jobs are `creates[range]` (and later `results[range]`).
    Jobs { range: Range<usize>, batch: bool },
    /// To the dead-letter topic with this reason.
    Reject(Rejection),
}

struct Item {
    msg: OwnedMessage,
    source: Source,
    outcome: Outcome,
}

/// Result of storing one job.
type Stored = Result<JobCreated, Rejection>;

struct Pipeline {
    consumer: Arc<KafkaConsumer>,
    producer: FutureProducer,
    config: IngestConfig,
    target: Target,
    shutdown: CancellationToken,
    /// Polled while paused; handled before anything newer.
    backlog: VecDeque<OwnedMessage>,
    /// Next offset per partition whose messages are all stored, with the rebalance generation
    /// it was stored under (what the final commit sends, if the assignment has not changed).
    done: BTreeMap<(String, i32), (i64, u64)>,
    paused: bool,
}

pub(crate) async fn run(
    consumer: Arc<KafkaConsumer>,
    producer: FutureProducer,
    config: IngestConfig,
    target: Target,
    shutdown: CancellationToken,
) {
    ensure_topic(&config).await;
    let lag = tokio::spawn(watch_loop(consumer.clone(), config.clone(), shutdown.clone()));
    let mut p = Pipeline {
        consumer,
        producer,
        config,
        target,
        shutdown,
        backlog: VecDeque::new(),
        done: BTreeMap::new(),
        paused: false,
    };
    while let Some(batch) = p.gather().await {
        p.handle(batch).await;
        if p.shutdown.is_cancelled() {
            break;
        }
    }
    let _ = lag.await;
    p.finish().await;
}

impl Pipeline {
    /// The next batch: the backlog first, then up to `max_batch` messages or `max_wait` after
    /// the first one. `None` on shutdown.
    async fn gather(&mut self) -> Option<Vec<OwnedMessage>> {
        let max = self.config.max_batch.max(1);
        let mut batch = Vec::with_capacity(max);
        while batch.len() < max {
            match self.backlog.pop_front() {
                Some(m) => batch.push(m),
                None => break,
            }
        }
        if batch.is_empty() {
            loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return None,
                    r = self.consumer.recv() => match r {
                        Ok(m) => {
                            batch.push(m.detach());
                            break;
                        }
                        Err(e) => self.recv_error(e).await,
                    },
                }
            }
        }
        let deadline = Instant::now() + self.config.max_wait;
        while batch.len() < max {
            tokio::select! {
                biased;
                r = self.consumer.recv() => match r {
                    Ok(m) => batch.push(m.detach()),
                    Err(e) => self.recv_error(e).await,
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = self.shutdown.cancelled() => break,
            }
        }
        Some(batch)
    }

    async fn recv_error(&self, e: rdkafka::error::KafkaError) {
        // E.g. the topic does not exist yet; librdkafka keeps retrying by itself.
        tracing::warn!(error = %e, topic = %self.config.topic, "kafka consumer error");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Stores, dead-letters and commits one batch. Returns early (committing nothing) only on
    /// shutdown while the store or the dead-letter topic is unavailable.
    async fn handle(&mut self, batch: Vec<OwnedMessage>) {
        let n = batch.len();
        metrics::counter!("sundial_kafka_messages_total").increment(n as u64);
        metrics::histogram!("sundial_kafka_batch_size").record(n as f64);

        let mut creates: Vec<JobCreate> = Vec::new();
        let mut items: Vec<Item> = Vec::with_capacity(n);
        let now = self.target.clock.now();
        for msg in batch {
            let source = Source { topic: msg.topic().to_string(), partition: msg.partition(), offset: msg.offset() };
            let outcome = match decode(&source, msg.payload(), now, &self.config.job_limits) {
                Ok(d) => {
                    let start = creates.len();
                    creates.extend(d.jobs);
                    Outcome::Jobs { range: start..creates.len(), batch: d.batch }
                }
                Err(e) => Outcome::Reject(e),
            };
            items.push(Item { msg, source, outcome });
        }

        let Some(results) = self.store(&creates, &items).await else { return };
        let (mut created, mut duplicates, mut due_now, mut with_triggers) = (0u64, 0u64, false, false);
        for item in &mut items {
            let Outcome::Jobs { range, batch } = &item.outcome else { continue };
            let rs = &results[range.clone()];
            for c in rs.iter().flatten() {
                if c.created {
                    created += 1;
                    if c.job.triggers.is_empty() {
                        due_now = true;
                    } else {
                        with_triggers = true;
                    }
                } else {
                    duplicates += 1;
                }
            }
            if let Some((i, e)) = rs.iter().enumerate().find_map(|(i, r)| r.as_ref().err().map(|e| (i, e))) {
                // E.g. `name_conflict`: the message can never be stored as it is. (The other
                // jobs of a batch message were stored; a fixed message is a new one.)
                let mut e = e.clone();
                if *batch {
                    e.message = within_item(i, &e.message);
                }
                item.outcome = Outcome::Reject(e);
            }
        }
        metrics::counter!("sundial_kafka_jobs_created_total").increment(created);
        metrics::counter!("sundial_kafka_duplicates_total").increment(duplicates);
        if due_now {
            self.target.signals.runs_ready.notify_waiters();
        }
        if with_triggers {
            self.target.signals.triggers_changed.notify_one();
        }

        if !self.dead_letter(&items).await {
            return;
        }
        self.commit(&items);
        tracing::debug!(messages = n, created, duplicates, "kafka batch stored");
    }

    /// All of `creates` in one transaction, retried while the store is unavailable. Any other
    /// failure of the whole transaction is retried one message at a time, so a message the
    /// store cannot take is dead-lettered instead of stalling its partition.
    async fn store(&mut self, creates: &[JobCreate], items: &[Item]) -> Option<Vec<Stored>> {
        if creates.is_empty() {
            return Some(Vec::new());
        }
        match self.store_retrying(creates).await? {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "storing a kafka batch failed; storing its messages one by one");
                let mut out: Vec<Stored> = Vec::with_capacity(creates.len());
                for item in items {
                    let Outcome::Jobs { range, .. } = &item.outcome else { continue };
                    if range.is_empty() {
                        continue;
                    }
                    match self.store_retrying(&creates[range.clone()]).await? {
                        Ok(r) => out.extend(r),
                        Err(e) => {
                            tracing::error!(error = %e, source = ?item.source, "the store refused a kafka message");
                            let e = Rejection::from(e);
                            out.extend(range.clone().map(|_| Err(e.clone())));
                        }
                    }
                }
                Some(out)
            }
        }
    }

    /// One `job_create_many` call, repeated with backoff while the store is unavailable (the
    /// partitions paused meanwhile). `None` on shutdown.
    async fn store_retrying(&mut self, creates: &[JobCreate]) -> Option<Result<Vec<Stored>, StoreError>> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let now = self.target.clock.now();
            match self.target.store.job_create_many(creates.to_vec(), now).await {
                Ok(r) => {
                    self.resume();
                    return Some(Ok(r.into_iter().map(|r| r.map_err(Rejection::from)).collect()));
                }
                Err(StoreError::Unavailable(m)) => {
                    metrics::counter!("sundial_kafka_store_retries_total").increment(1);
                    self.target.signals.emit(Event::IngestStoreRetry);
                    tracing::warn!(error = %m, retry_in = ?backoff, "store unavailable: kafka consumption paused");
                    if !self.wait_paused(backoff).await {
                        return None;
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Sends every rejected message of the batch to the dead-letter topic and waits for the
    /// acknowledgements, retrying with backoff. False on shutdown before all were acknowledged.
    async fn dead_letter(&mut self, items: &[Item]) -> bool {
        let mut pending: Vec<(&Item, &Rejection)> = items
            .iter()
            .filter_map(|i| match &i.outcome {
                Outcome::Reject(e) => Some((i, e)),
                Outcome::Jobs { .. } => None,
            })
            .collect();
        let mut backoff = Duration::from_millis(100);
        while !pending.is_empty() {
            let sends = pending.iter().map(|(item, e)| self.send_dead_letter(item, e));
            let results = futures::future::join_all(sends).await;
            let mut failed = Vec::new();
            for ((item, e), r) in pending.into_iter().zip(results) {
                match r {
                    Ok(()) => {
                        metrics::counter!("sundial_kafka_dead_lettered_total", "code" => e.code).increment(1);
                        tracing::warn!(
                            topic = %item.source.topic, partition = item.source.partition, offset = item.source.offset,
                            code = e.code, reason = %e.message, dlq = %self.config.dlq_topic,
                            "kafka message dead-lettered"
                        );
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, dlq = %self.config.dlq_topic, retry_in = ?backoff,
                            "dead-lettering failed: kafka consumption paused");
                        failed.push((item, e));
                    }
                }
            }
            pending = failed;
            if !pending.is_empty() {
                if !self.wait_paused(backoff).await {
                    return false;
                }
                backoff = (backoff * 2).min(self.config.max_backoff);
            }
        }
        self.resume();
        true
    }

    async fn send_dead_letter(&self, item: &Item, e: &Rejection) -> Result<(), rdkafka::error::KafkaError> {
        let partition = item.source.partition.to_string();
        let offset = item.source.offset.to_string();
        let mut h = OwnedHeaders::new();
        if let Some(orig) = item.msg.headers() {
            for hd in orig.iter() {
                h = h.insert(Header { key: hd.key, value: hd.value });
            }
        }
        let h = h
            .insert(Header { key: headers::ERROR_CODE, value: Some(e.code) })
            .insert(Header { key: headers::ERROR_MESSAGE, value: Some(e.message.as_str()) })
            .insert(Header { key: headers::SOURCE_TOPIC, value: Some(item.source.topic.as_str()) })
            .insert(Header { key: headers::SOURCE_PARTITION, value: Some(partition.as_str()) })
            .insert(Header { key: headers::SOURCE_OFFSET, value: Some(offset.as_str()) });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.config.dlq_topic).headers(h);
        if let Some(k) = item.msg.key() {
            record = record.key(k);
        }
        if let Some(v) = item.msg.payload() {
            record = record.payload(v);
        }
        self.producer.send(record, Timeout::After(Duration::from_secs(5))).await.map(|_| ()).map_err(|(e, _)| e)
    }

    /// Commits (asynchronously) the offsets after the batch's last message per partition, for
    /// the partitions this node still holds (a partition that moved meanwhile is the new
    /// owner's to commit; it redelivers, and the derived keys make that harmless).
    fn commit(&mut self, items: &[Item]) {
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for i in items {
            let e = next.entry((i.source.topic.clone(), i.source.partition)).or_insert(0);
            *e = (*e).max(i.source.offset + 1);
        }
        let generation = self.generation();
        let assigned = self.consumer.assignment().unwrap_or_default();
        next.retain(|(t, p), _| assigned.find_partition(t, *p).is_some());
        if next.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &next {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(error = %e, "kafka offset commit failed; the next one covers it");
        }
        self.done.extend(next.into_iter().map(|(k, o)| (k, (o, generation))));
    }

    /// Changes with every assignment and revocation.
    fn generation(&self) -> u64 {
        self.consumer.context().rebalances.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Pauses the assigned partitions (again: a rebalance may have assigned new ones) and waits,
    /// polling only to stay in the group. False on shutdown.
    async fn wait_paused(&mut self, d: Duration) -> bool {
        if let Ok(a) = self.consumer.assignment() {
            if self.consumer.pause(&a).is_ok() {
                self.paused = true;
            }
        }
        let deadline = Instant::now() + d;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep_until(deadline) => return true,
                r = self.consumer.recv() => match r {
                    Ok(m) => self.backlog.push_back(m.detach()),
                    Err(e) => tracing::debug!(error = %e, "kafka consumer error while paused"),
                },
            }
        }
    }

    fn resume(&mut self) {
        if self.paused {
            if let Ok(a) = self.consumer.assignment() {
                let _ = self.consumer.resume(&a);
            }
            self.paused = false;
            tracing::info!("kafka consumption resumed");
        }
    }

    /// On shutdown: commits what is stored (synchronously) for the partitions still assigned,
    /// then closes the consumer, leaving the group.
    async fn finish(self) {
        let generation = self.generation();
        let consumer = self.consumer;
        let done = self.done;
        let _ = tokio::task::spawn_blocking(move || {
            // Partition lists hold references into the client: all are dropped before it is.
            {
                let assigned = consumer.assignment().unwrap_or_default();
                let mut tpl = TopicPartitionList::new();
                for ((t, p), (o, g)) in &done {
                    if *g == generation && assigned.find_partition(t, *p).is_some() {
                        let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
                    }
                }
                if tpl.count() > 0 {
                    match consumer.commit(&tpl, CommitMode::Sync) {
                        Ok(()) => {
                            tracing::info!(offsets = %crate::describe(&tpl), "kafka offsets committed on shutdown")
                        }
                        Err(e) => tracing::warn!(error = %e, "final kafka offset commit failed"),
                    }
                }
            }
            consumer.unsubscribe();
            // Dropping the last handle closes the consumer: it leaves the group.
            drop(consumer);
            tracing::info!("kafka ingest stopped");
        })
        .await;
    }
}

/// Creates the dead-letter topic (one partition, the broker's replication factor) when the
/// broker does not know it, so a bad message does not wait for an operator. Failures are logged:
/// dead-lettering then retries until the topic exists.
async fn ensure_topic(config: &IngestConfig) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::types::RDKafkaErrorCode;
    let topic = config.dlq_topic.as_str();
    let admin: Arc<AdminClient<rdkafka::client::DefaultClientContext>> = match config.producer_config().create() {
        Ok(a) => Arc::new(a),
        Err(e) => return tracing::warn!(error = %e, topic, "cannot check the dead-letter topic"),
    };
    let (a, t) = (admin.clone(), topic.to_string());
    let known = tokio::task::spawn_blocking(move || {
        let md = a.inner().fetch_metadata(Some(&t), Duration::from_secs(5)).ok()?;
        Some(md.topics().iter().any(|m| m.name() == t && m.error().is_none() && !m.partitions().is_empty()))
    })
    .await
    .ok()
    .flatten();
    if known != Some(false) {
        return;
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    // -1: the broker's default replication factor; brokers that do not take it get 1.
    for replication in [-1, 1] {
        let new = NewTopic::new(topic, 1, TopicReplication::Fixed(replication));
        match admin.create_topics([&new], &opts).await {
            Ok(r) => match r.into_iter().next() {
                Some(Err((_, e))) if e != RDKafkaErrorCode::TopicAlreadyExists => {
                    tracing::debug!(error = %e, topic, replication, "creating the dead-letter topic")
                }
                _ => return tracing::info!(topic, "dead-letter topic created"),
            },
            Err(e) => tracing::debug!(error = %e, topic, "creating the dead-letter topic"),
        }
    }
    tracing::warn!(topic, "the dead-letter topic does not exist and could not be created: create it");
}

/// Every few seconds: updates `sundial_kafka_consumer_lag`; and, while this node holds no
/// partition, rejoins the group if the topic has messages that nobody consumes (the group's
/// committed offsets stay below the high watermarks and do not move for a while).
///
/// The second part works around a broker fault seen with tansu 0.6.0: when a restarted node
/// joins while the crashed node it replaces is still the group's leader, and that leader's
/// session expires between the new node's JoinGroup and SyncGroup, the broker completes the
/// group with the follower's empty assignment, and nobody consumes until a member rejoins.
/// (tansu's DescribeGroups cannot tell, it fails on its SQLite storage, so progress is the
/// signal.) Waits double after each rejoin, so a group stalled for another reason (the store
/// down on every node) is not rebalanced over and over.
async fn watch_loop(consumer: Arc<KafkaConsumer>, config: IngestConfig, shutdown: CancellationToken) {
    let period = Duration::from_secs(5);
    // Longer than a normal rebalance waits for a crashed member (one session timeout).
    let mut patience = (config.session_timeout * 2).max(Duration::from_secs(20));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (committed offsets summed, for how long they have not moved with a backlog waiting)
    let mut stalled: Option<(i64, Duration)> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (c, cfg) = (consumer.clone(), config.clone());
        let prev = stalled;
        let Ok((lag, stalled_now, rejoined)) = tokio::task::spawn_blocking(move || {
            let lag = lag(&c);
            let empty = c.assignment().map(|a| a.count() == 0).unwrap_or(false);
            let Some((committed, backlog)) = empty.then(|| group_progress(&c, &cfg)).flatten() else {
                return (lag, None, false);
            };
            if backlog == 0 {
                return (lag, None, false);
            }
            let still = match prev {
                Some((before, waited)) if before == committed => waited + period,
                _ => Duration::ZERO,
            };
            if still < patience {
                return (lag, Some((committed, still)), false);
            }
            tracing::warn!(group = %cfg.group, topic = %cfg.topic, backlog, stalled_for = ?still,
                "this node holds no partition and nobody consumes the topic's backlog: rejoining the group");
            c.unsubscribe();
            if let Err(e) = c.subscribe(&[&cfg.topic]) {
                tracing::error!(error = %e, topic = %cfg.topic, "resubscribing failed");
            }
            (lag, None, true)
        })
        .await
        else {
            continue;
        };
        if let Some(lag) = lag {
            metrics::gauge!("sundial_kafka_consumer_lag").set(lag as f64);
        }
        stalled = stalled_now;
        if rejoined {
            patience = (patience * 2).min(Duration::from_secs(300));
        }
    }
}

/// The group's committed offsets on the topic, summed, and the messages beyond them.
fn group_progress(consumer: &KafkaConsumer, config: &IngestConfig) -> Option<(i64, i64)> {
    let timeout = Duration::from_secs(5);
    let md = consumer.fetch_metadata(Some(&config.topic), timeout).ok()?;
    let topic = md.topics().iter().find(|t| t.name() == config.topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in topic.partitions() {
        tpl.add_partition(&config.topic, p.id());
    }
    let committed = consumer.committed_offsets(tpl, timeout).ok()?;
    let (mut sum, mut backlog) = (0i64, 0i64);
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(e.topic(), e.partition(), timeout).ok()?;
        let at = match e.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        sum += at;
        backlog += (high - at).max(0);
    }
    Some((sum, backlog))
}

fn lag(consumer: &KafkaConsumer) -> Option<i64> {
    let timeout = Duration::from_secs(2);
    let positions = consumer.position().ok()?;
    let mut committed: Option<TopicPartitionList> = None;
    let mut total = 0i64;
    for e in positions.elements() {
        let (low, high) = consumer.fetch_watermarks(e.topic(), e.partition(), timeout).ok()?;
        let pos = match e.offset() {
            Offset::Offset(o) => o,
            _ => {
                if committed.is_none() {
                    committed = consumer.committed(timeout).ok();
                }
                committed
                    .as_ref()
                    .and_then(|c| c.find_partition(e.topic(), e.partition()))
                    .and_then(|c| match c.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .unwrap_or(low)
            }
        };
        total += (high - pos).max(0);
    }
    Some(total)
}
