//! The Kafka backend, through rdkafka: a producer with `acks=all` that never
//! writes one append twice (idempotent, or never retrying: [`KafkaSettings`])
//! whose delivery is awaited before an append returns, `QueueFull` treated
//! as backpressure, and readers at explicit offsets (no consumer-group
//! commits: projections keep their offsets in Postgres, in the same
//! transaction as their effects). A process reads each topic once, on its
//! [`tail`], for all its readers ([`reader`]).

use crate::{AppendRecord, EventLog, LogError, LogReader, ReadFrom, Record, TopicNames};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use imlog_events::{partition_for_key, LogPosition, Topic};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod reader;
mod tail;

use crate::recent::Recent;
use reader::KafkaReader;
use tail::Tail;

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port[,host:port...]`
    pub brokers: String,
    /// Prefix of every topic name.
    pub topic_prefix: String,
    /// Replication factor for topics this process creates.
    pub replication_factor: i32,
    /// Producer `linger.ms`: batching delay against throughput.
    pub linger_ms: u32,
    /// Whether the broker honours idempotent producers (Apache Kafka since
    /// 0.11, Redpanda). Then the producer retries a request whose answer it
    /// missed, and the broker drops the copy. A broker that accepts an
    /// idempotent producer but keeps both copies (tansu 0.6.0) needs
    /// `false`: the producer then never retries, and a request whose answer
    /// is lost fails its records (their senders resend with `retry`).
    /// Either way a record is in the log once per successful append.
    pub idempotent: bool,
}

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Readers' `fetch.wait.max.ms`: how long the broker may hold a fetch that
/// found nothing. (tansu holds every fetch this long, records or not.)
pub const READER_FETCH_WAIT_MS: u32 = 50;

pub struct KafkaLog {
    settings: KafkaSettings,
    names: TopicNames,
    /// Replaced by a new one when it fails fatally (see `replace_if_fatal`).
    producer: std::sync::RwLock<Arc<FutureProducer>>,
    metadata: Metadata,
    /// What this process's readers read, kept for all of them: one tail
    /// per topic ([`tail`]), and what readers behind it read themselves.
    recent: Arc<Recent>,
    tails: Mutex<HashMap<Topic, Arc<Tail>>>,
}

/// For metadata and watermarks (blocking calls, run off the runtime).
#[derive(Clone)]
struct Metadata(Arc<BaseConsumer>);

impl Metadata {
    async fn end_offsets(&self, names: &TopicNames, topic: Topic) -> Result<Vec<i64>, LogError> {
        let consumer = self.0.clone();
        let name = names.name(topic);
        tokio::task::spawn_blocking(move || {
            (0..topic.partitions())
                .map(|p| {
                    consumer
                        .fetch_watermarks(&name, p, METADATA_TIMEOUT)
                        .map(|(_low, high)| high)
                        .map_err(classify)
                })
                .collect()
        })
        .await
        .map_err(|e| LogError::Fatal(e.to_string()))?
    }
}

impl KafkaLog {
    pub fn connect(settings: KafkaSettings) -> Result<KafkaLog, LogError> {
        let producer = new_producer(&settings)?;
        let metadata: BaseConsumer = consumer_config(&settings.brokers).create().map_err(fatal)?;
        Ok(KafkaLog {
            names: TopicNames::new(settings.topic_prefix.clone()),
            settings,
            producer: std::sync::RwLock::new(Arc::new(producer)),
            metadata: Metadata(Arc::new(metadata)),
            recent: Arc::default(),
            tails: Mutex::default(),
        })
    }

    fn producer(&self) -> Arc<FutureProducer> {
        self.producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// An idempotent producer that hit a fatal error (e.g. the broker lost
    /// acknowledged records and the sequence numbers no longer match) fails
    /// every send from then on: put a new one in its place. What was in
    /// flight has an unknown outcome, which `Unavailable` tells the caller
    /// (a client resends with `retry`).
    fn replace_if_fatal(&self, failed: &Arc<FutureProducer>, e: KafkaError) -> LogError {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return classify(e);
        };
        let mut current = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if Arc::ptr_eq(&current, failed) {
            match new_producer(&self.settings) {
                Ok(producer) => {
                    tracing::error!(?code, %reason, "the Kafka producer failed fatally; replaced it with a new one");
                    metrics::counter!("imlog_log_producer_rebuilds_total").increment(1);
                    *current = Arc::new(producer);
                }
                Err(e) => {
                    tracing::error!(error = %e, "the Kafka producer failed fatally and a new one could not be made")
                }
            }
        }
        LogError::Unavailable(format!(
            "the Kafka producer failed ({code:?}: {reason}); the write's outcome is unknown"
        ))
    }

    /// Puts the producer in librdkafka's fatal state, as a real fatal error
    /// would (for tests of the recovery).
    #[doc(hidden)]
    pub fn inject_fatal_error(&self) {
        let producer = self.producer();
        let reason = c"injected by a test";
        // SAFETY: the pointer is the live producer's handle (kept alive by
        // `producer` for the call); librdkafka copies the reason.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                producer.client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        }
    }

    async fn partition_count(&self, name: &str) -> Result<Option<usize>, LogError> {
        let consumer = self.metadata.0.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let md = consumer
                .fetch_metadata(Some(&name), METADATA_TIMEOUT)
                .map_err(classify)?;
            Ok(md
                .topics()
                .iter()
                .find(|t| t.name() == name && t.error().is_none())
                .map(|t| t.partitions().len())
                .filter(|&n| n > 0))
        })
        .await
        .map_err(|e| LogError::Fatal(e.to_string()))?
    }
}

impl KafkaLog {
    /// Hands a record to the producer, waiting while its queue is full.
    async fn enqueue(
        &self,
        topic: Topic,
        partition: i32,
        key: &str,
        payload: &[u8],
    ) -> Result<Delivery, LogError> {
        let producer = self.producer();
        let name = self.names.name(topic);
        let mut record = FutureRecord::to(&name)
            .partition(partition)
            .key(key)
            .payload(payload);
        loop {
            match producer.send_result(record) {
                Ok(future) => return Ok(Delivery { future, producer }),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    // Backpressure: wait for deliveries to drain the queue rather
                    // than fail or buffer without bound.
                    metrics::counter!("imlog_log_backpressure_total", "backend" => "kafka")
                        .increment(1);
                    record = returned;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(self.replace_if_fatal(&producer, e)),
            }
        }
    }

    async fn await_delivery(&self, delivery: Delivery) -> Result<LogPosition, LogError> {
        match delivery.future.await {
            Ok(Ok(d)) => Ok(LogPosition {
                partition: d.partition,
                offset: d.offset,
            }),
            Ok(Err((e, _))) => Err(self.replace_if_fatal(&delivery.producer, e)),
            Err(_) => Err(LogError::Unavailable(
                "producer shut down before delivery".into(),
            )),
        }
    }
}

/// A record handed to a producer: its delivery, and which producer it was.
struct Delivery {
    future: DeliveryFuture,
    producer: Arc<FutureProducer>,
}

fn new_producer(settings: &KafkaSettings) -> Result<FutureProducer, LogError> {
    producer_config(settings).create().map_err(fatal)
}

/// The configuration of the log's producer (public for benchmarks whose
/// baseline must produce exactly as imlog does).
pub fn producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = client_config(&settings.brokers);
    config
        .set("acks", "all")
        .set("linger.ms", settings.linger_ms.to_string())
        .set("message.timeout.ms", "30000");
    if settings.idempotent {
        config.set("enable.idempotence", "true");
    } else {
        // No retry can write a request's records a second time: one whose
        // answer is lost fails them instead. As many requests in flight as
        // an idempotent producer keeps (librdkafka's default otherwise is
        // unbounded: many tiny requests instead of batches).
        config
            .set("enable.idempotence", "false")
            .set("message.send.max.retries", "0")
            .set("max.in.flight.requests.per.connection", "5");
    }
    config
}

fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "imlog")
        .set("log_level", "4");
    config
}

fn consumer_config(brokers: &str) -> ClientConfig {
    let mut config = client_config(brokers);
    // Readers assign partitions explicitly and never commit, so the group id
    // is only a label librdkafka requires.
    config
        .set("group.id", "imlog-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", READER_FETCH_WAIT_MS.to_string())
        .set("auto.offset.reset", "error");
    config
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn ensure_topics(&self) -> Result<(), LogError> {
        let admin: AdminClient<DefaultClientContext> = client_config(&self.settings.brokers)
            .create()
            .map_err(fatal)?;
        let names: Vec<String> = Topic::ALL.iter().map(|&t| self.names.name(t)).collect();
        let new_topics: Vec<NewTopic> = Topic::ALL
            .iter()
            .zip(&names)
            .map(|(t, name)| {
                NewTopic::new(
                    name,
                    t.partitions(),
                    TopicReplication::Fixed(self.settings.replication_factor),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(classify)?
        {
            match result {
                Ok(name) => tracing::info!(topic = name, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(LogError::Fatal(format!("creating topic {name}: {code}")))
                }
            }
        }
        for (topic, name) in Topic::ALL.iter().zip(&names) {
            // A topic just created may take a moment to show in metadata.
            let mut found = None;
            for _ in 0..50 {
                found = self.partition_count(name).await?;
                if found.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            match found {
                Some(n) if n == topic.partitions() as usize => {}
                Some(n) => {
                    return Err(LogError::Fatal(format!(
                        "topic {name} has {n} partitions, this build needs {}",
                        topic.partitions()
                    )))
                }
                None => {
                    return Err(LogError::Unavailable(format!(
                        "topic {name} does not show in metadata"
                    )))
                }
            }
        }
        Ok(())
    }

    async fn append_all(&self, records: Vec<AppendRecord>) -> Vec<Result<LogPosition, LogError>> {
        // Enqueue in order (the producer keeps per-partition order: it is
        // idempotent, or never retries), then await every delivery.
        let mut deliveries = Vec::with_capacity(records.len());
        for r in &records {
            let partition = partition_for_key(r.key.as_bytes(), r.topic.partitions());
            deliveries.push(self.enqueue(r.topic, partition, &r.key, &r.payload).await);
        }
        let mut results = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            results.push(match delivery {
                Ok(delivery) => self.await_delivery(delivery).await,
                Err(e) => Err(e),
            });
        }
        results
    }

    async fn append_to(
        &self,
        topic: Topic,
        partition: i32,
        key: &str,
        payload: Vec<u8>,
    ) -> Result<LogPosition, LogError> {
        let delivery = self.enqueue(topic, partition, key, &payload).await?;
        self.await_delivery(delivery).await
    }

    async fn end_offsets(&self, topic: Topic) -> Result<Vec<i64>, LogError> {
        self.metadata.end_offsets(&self.names, topic).await
    }

    async fn reader(&self, from: Vec<ReadFrom>) -> Result<Box<dyn LogReader>, LogError> {
        let tails = from.iter().map(|f| self.tail(f.topic)).collect();
        Ok(Box::new(KafkaReader::new(
            self.names.clone(),
            self.settings.brokers.clone(),
            from,
            tails,
            self.recent.clone(),
        )))
    }

    fn backend(&self) -> &'static str {
        "kafka"
    }
}

impl KafkaLog {
    /// This process's tail of `topic`, started on first use (and again
    /// after one ended). A tail runs as long as the log: a process keeps
    /// its readers for its lifetime.
    fn tail(&self, topic: Topic) -> Arc<Tail> {
        let mut tails = self.tails.lock().unwrap_or_else(|e| e.into_inner());
        match tails.get(&topic) {
            Some(tail) if tail.is_alive() => tail.clone(),
            _ => {
                let tail = Arc::new(Tail::start(self, topic));
                tails.insert(topic, tail.clone());
                tail
            }
        }
    }
}

/// An assignment of each partition at its offset.
fn partitions_at(names: &TopicNames, from: &[ReadFrom]) -> Result<TopicPartitionList, LogError> {
    let mut assignment = TopicPartitionList::new();
    for f in from {
        assignment
            .add_partition_offset(&names.name(f.topic), f.partition, Offset::Offset(f.offset))
            .map_err(fatal)?;
    }
    Ok(assignment)
}

fn to_record(
    names: &TopicNames,
    m: &rdkafka::message::BorrowedMessage<'_>,
) -> Result<Record, LogError> {
    let topic = names
        .topic(m.topic())
        .ok_or_else(|| LogError::Fatal(format!("record from unexpected topic {}", m.topic())))?;
    let appended_at = m
        .timestamp()
        .to_millis()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or_else(Utc::now);
    Ok(Record {
        topic,
        partition: m.partition(),
        offset: m.offset(),
        key: m
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default(),
        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        appended_at,
    })
}

fn fatal(e: KafkaError) -> LogError {
    LogError::Fatal(e.to_string())
}

/// Sorts Kafka errors into "try again" and "give up".
fn classify(e: KafkaError) -> LogError {
    use RDKafkaErrorCode as C;
    let code = match &e {
        KafkaError::MessageProduction(c)
        | KafkaError::MessageConsumption(c)
        | KafkaError::MetadataFetch(c)
        | KafkaError::AdminOp(c) => Some(*c),
        KafkaError::Canceled => return LogError::Unavailable(e.to_string()),
        _ => e.rdkafka_error_code(),
    };
    match code {
        Some(
            C::QueueFull
            | C::MessageTimedOut
            | C::RequestTimedOut
            | C::OperationTimedOut
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::NotLeaderForPartition
            | C::LeaderNotAvailable
            | C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::NetworkException
            | C::BrokerNotAvailable
            | C::CoordinatorLoadInProgress
            | C::UnknownTopicOrPartition,
        ) => LogError::Unavailable(e.to_string()),
        _ => LogError::Fatal(e.to_string()),
    }
}
