//! The event log: the source of truth of imlog.
//!
//! One trait, [`EventLog`], with two backends: [`PgLog`] (the embedded
//! default: records in a Postgres table) and [`KafkaLog`] (production, through
//! rdkafka). Both place a record by the same partitioner and number it by
//! partition offset from 0, so ids derived from positions are identical on
//! either and survive `imlog log copy`.

#[cfg(feature = "conformance")]
pub mod conformance;
mod kafka;
mod postgres;
mod recent;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use imlog_events::{partition_for_key, LogPosition, Topic};
use std::sync::Arc;
use std::time::Duration;

pub use kafka::{producer_config, KafkaLog, KafkaSettings, READER_FETCH_WAIT_MS};
pub use postgres::PgLog;

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: Topic,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub payload: Vec<u8>,
    pub appended_at: DateTime<Utc>,
}

impl Record {
    pub fn position(&self) -> LogPosition {
        LogPosition {
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// A record to append: its topic, partitioning key and payload.
#[derive(Debug, Clone)]
pub struct AppendRecord {
    pub topic: Topic,
    pub key: String,
    pub payload: Vec<u8>,
}

/// Where a reader starts: a topic partition and the first offset to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadFrom {
    pub topic: Topic,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// Worth retrying: the backend is unreachable, overloaded or timed out.
    /// An append that failed this way may or may not have been written.
    #[error("log unavailable: {0}")]
    Unavailable(String),
    /// Retrying will not help: misconfiguration, an unknown topic, a record the
    /// backend refuses.
    #[error("log error: {0}")]
    Fatal(String),
}

impl LogError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, LogError::Unavailable(_))
    }
}

#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Creates the topics (with their fixed partition counts) where missing,
    /// and checks existing ones have the partition counts this build expects.
    async fn ensure_topics(&self) -> Result<(), LogError>;

    /// Appends one record to the partition its key maps to. Returns only once
    /// the backend confirmed the record durable.
    async fn append(
        &self,
        topic: Topic,
        key: &str,
        payload: Vec<u8>,
    ) -> Result<LogPosition, LogError> {
        let partition = partition_for_key(key.as_bytes(), topic.partitions());
        self.append_to(topic, partition, key, payload).await
    }

    /// Appends several records, each to its key's partition, keeping their
    /// order: records of one partition get increasing offsets in the order
    /// given. Result `i` belongs to record `i`.
    async fn append_all(&self, records: Vec<AppendRecord>) -> Vec<Result<LogPosition, LogError>>;

    /// Appends a record to an explicit partition (used by `log copy`, which
    /// must reproduce every position exactly).
    async fn append_to(
        &self,
        topic: Topic,
        partition: i32,
        key: &str,
        payload: Vec<u8>,
    ) -> Result<LogPosition, LogError>;

    /// The next offset to be written in each partition of `topic` (index =
    /// partition): everything below it is readable.
    async fn end_offsets(&self, topic: Topic) -> Result<Vec<i64>, LogError>;

    /// A reader over the given partitions, starting at the given offsets.
    async fn reader(&self, from: Vec<ReadFrom>) -> Result<Box<dyn LogReader>, LogError>;

    /// The backend's name, for logs and metrics.
    fn backend(&self) -> &'static str;
}

#[async_trait]
pub trait LogReader: Send {
    /// Up to `max` records, in offset order within each partition, with no
    /// gaps. Waits up to `wait` for the first one; an empty result means
    /// nothing new arrived in that time. After an error the reader's place
    /// is unknown: make a new one from the offsets the caller stored.
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, LogError>;
}

pub type SharedLog = Arc<dyn EventLog>;

/// Readers for every partition of `topics`, starting at each partition's end:
/// for consumers that only want what is appended from now on (pushes).
pub async fn read_from_end(
    log: &dyn EventLog,
    topics: &[Topic],
) -> Result<Box<dyn LogReader>, LogError> {
    let mut from = Vec::new();
    for &topic in topics {
        for (partition, offset) in log.end_offsets(topic).await?.into_iter().enumerate() {
            from.push(ReadFrom {
                topic,
                partition: partition as i32,
                offset,
            });
        }
    }
    log.reader(from).await
}

/// Topic names carry a deployment prefix, so several deployments (or test
/// runs) can share one broker.
#[derive(Debug, Clone)]
pub struct TopicNames {
    prefix: String,
}

impl TopicNames {
    pub fn new(prefix: impl Into<String>) -> Self {
        TopicNames {
            prefix: prefix.into(),
        }
    }

    pub fn name(&self, topic: Topic) -> String {
        format!("{}{}", self.prefix, topic.base_name())
    }

    pub fn topic(&self, name: &str) -> Option<Topic> {
        name.strip_prefix(&self.prefix)
            .and_then(Topic::from_base_name)
    }
}
