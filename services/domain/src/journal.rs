//! The journal: how every domain service writes and then reads its own
//! writes. Appending returns only once the log confirmed the record; a
//! caller's later reads wait until the projections reached its appends
//! (read-your-writes), per topic partition, recorded in its [`Writes`].

use imlog_events::{partition_for_key, Envelope, Event, EventMeta, LogPosition, Topic, UserId};
use imlog_log::{AppendRecord, LogError, SharedLog};
use imlog_projections::progress::Progress;
use imlog_projections::{ProjectionError, ReadError, ReadModel};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

/// Why a domain operation could not reach its stores. Every feature's error
/// enum carries it; the edges map it to "unavailable" and friends.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("event log: {0}")]
    Log(#[from] LogError),
    #[error("read model: {0}")]
    Read(String),
    #[error("the read model has not caught up with the caller's writes within {0:?}")]
    Lagging(Duration),
}

impl From<ReadError> for StoreError {
    fn from(e: ReadError) -> Self {
        StoreError::Read(e.to_string())
    }
}

impl From<ProjectionError> for StoreError {
    fn from(e: ProjectionError) -> Self {
        StoreError::Read(e.to_string())
    }
}

/// The last position a caller (a connection) appended per topic partition:
/// what its reads must wait for.
#[derive(Debug, Default)]
pub struct Writes(BTreeMap<(Topic, i32), i64>);

impl Writes {
    pub fn record(&mut self, topic: Topic, pos: LogPosition) {
        let entry = self.0.entry((topic, pos.partition)).or_insert(pos.offset);
        *entry = (*entry).max(pos.offset);
    }

    /// Once projected, a write need not be waited for again.
    fn forget(&mut self, topics: &[Topic]) {
        self.0.retain(|(topic, _), _| !topics.contains(topic));
    }

    fn positions(&self, topics: &[Topic]) -> Vec<(Topic, LogPosition)> {
        self.0
            .iter()
            .filter(|((topic, _), _)| topics.contains(topic))
            .map(|(&(topic, partition), &offset)| (topic, LogPosition { partition, offset }))
            .collect()
    }
}

/// The log, the read model and the progress of its projections: what every
/// domain service shares.
pub struct Journal {
    log: SharedLog,
    read: ReadModel,
    progress: Progress,
    /// How long a read waits for the caller's own writes to be projected.
    projection_wait: Duration,
}

impl Journal {
    pub fn new(
        log: SharedLog,
        read: ReadModel,
        progress: Progress,
        projection_wait: Duration,
    ) -> Journal {
        Journal {
            log,
            read,
            progress,
            projection_wait,
        }
    }

    pub fn read(&self) -> &ReadModel {
        &self.read
    }

    pub fn log(&self) -> &SharedLog {
        &self.log
    }

    /// How long a read waits for the caller's own writes to be projected.
    pub fn projection_wait(&self) -> Duration {
        self.projection_wait
    }

    /// Appends one event caused by `actor`'s request; returns once durable.
    pub async fn append(
        &self,
        writes: &mut Writes,
        actor: Option<UserId>,
        event: impl Into<Event>,
    ) -> Result<LogPosition, StoreError> {
        let envelope = Envelope::new(EventMeta::new(actor, Uuid::now_v7()), event);
        let topic = envelope.event.topic();
        let pos = self
            .log
            .append(topic, &envelope.event.key(), envelope.encode())
            .await?;
        writes.record(topic, pos);
        Ok(pos)
    }

    /// Appends envelopes in order (records of one partition get increasing
    /// offsets in the order given); result `i` belongs to envelope `i`.
    pub async fn append_all(
        &self,
        writes: &mut Writes,
        envelopes: &[Envelope],
    ) -> Vec<Result<LogPosition, StoreError>> {
        let records = envelopes
            .iter()
            .map(|e| AppendRecord {
                topic: e.event.topic(),
                key: e.event.key(),
                payload: e.encode(),
            })
            .collect();
        let results = self.log.append_all(records).await;
        envelopes
            .iter()
            .zip(results)
            .map(|(envelope, result)| {
                let pos = result?;
                writes.record(envelope.event.topic(), pos);
                Ok(pos)
            })
            .collect()
    }

    /// Waits until the read model reflects the caller's writes to `topics`.
    pub async fn settle(&self, writes: &mut Writes, topics: &[Topic]) -> Result<(), StoreError> {
        let positions = writes.positions(topics);
        if positions.is_empty() {
            return Ok(());
        }
        if self
            .progress
            .wait_for(&positions, self.projection_wait)
            .await?
        {
            writes.forget(topics);
            Ok(())
        } else {
            Err(StoreError::Lagging(self.projection_wait))
        }
    }

    /// Waits until everything appended so far to `topic` is projected, by
    /// anyone: for lists a push may have announced a moment ago.
    pub async fn settle_topic(&self, topic: Topic) -> Result<(), StoreError> {
        self.settle_appended(topic, None).await
    }

    /// Waits until everything appended so far to the partition of `key` in
    /// `topic` is projected — by anyone, not just this caller.
    pub async fn settle_partition(&self, topic: Topic, key: &str) -> Result<(), StoreError> {
        let partition = partition_for_key(key.as_bytes(), topic.partitions());
        self.settle_appended(topic, Some(partition)).await
    }

    /// Waits for the projections to reach the end of `topic` as of now, in
    /// every partition or in `only` one.
    async fn settle_appended(&self, topic: Topic, only: Option<i32>) -> Result<(), StoreError> {
        let mut appended = Writes::default();
        for (partition, end) in self.log.end_offsets(topic).await?.into_iter().enumerate() {
            let partition = partition as i32;
            if end > 0 && only.is_none_or(|p| p == partition) {
                let offset = end - 1;
                appended.record(topic, LogPosition { partition, offset });
            }
        }
        self.settle(&mut appended, &[topic]).await
    }
}
