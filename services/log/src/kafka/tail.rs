//! One consumer per topic per process: its tail. It reads every partition
//! of the topic from where the topic ended when the tail started, and keeps
//! what it reads in memory ([`Recent`]) for every reader of the process.
//! Without it each reader (a projection's shard, a process manager, the
//! fan-out) fetched every record of its topics from the broker itself; a
//! broker whose fetches are costly (tansu) then served each record three
//! times or more.
//!
//! A reader behind the tail's start, or behind what memory still holds,
//! reads on a consumer of its own until it reaches the kept run
//! (`reader.rs`).

use super::{classify, consumer_config, partitions_at, to_record, KafkaLog};
use crate::recent::Recent;
use crate::{ReadFrom, Record};
use futures::FutureExt;
use imlog_events::Topic;
use rdkafka::consumer::{Consumer, StreamConsumer};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Records the tail takes from its consumer at a time.
const BATCH: usize = 1000;
/// How long the tail waits before trying again when the broker cannot say
/// where the topic ends, or a read fails.
const RETRY: Duration = Duration::from_millis(500);

pub(super) struct Tail {
    shared: Arc<Shared>,
    /// Bumped after every batch the tail kept.
    changed: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

struct Shared {
    /// Per partition, the offset the tail reads next: every record from the
    /// tail's start up to it has been kept (the oldest may be forgotten
    /// since). -1 until the tail knows where it starts.
    next: Vec<AtomicI64>,
    /// False once the tail's task ended (it never ends by itself; a panic).
    alive: AtomicBool,
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tail {
    pub(super) fn start(log: &KafkaLog, topic: Topic) -> Tail {
        let shared = Arc::new(Shared {
            next: (0..topic.partitions())
                .map(|_| AtomicI64::new(-1))
                .collect(),
            alive: AtomicBool::new(true),
        });
        let (bump, changed) = watch::channel(0);
        let task = tokio::spawn(run(
            log.metadata.clone(),
            log.settings.brokers.clone(),
            log.names.clone(),
            topic,
            log.recent.clone(),
            shared.clone(),
            bump,
        ));
        Tail {
            shared,
            changed,
            task,
        }
    }

    /// Where a reader of `partition` at `offset` stands: records from there
    /// on, if any exist, are either kept in memory or (below the tail's
    /// start, or forgotten) to be read from the broker.
    pub(super) fn reads_next(&self, partition: i32) -> Option<i64> {
        if !self.is_alive() {
            return None;
        }
        let next = self.shared.next.get(partition as usize)?;
        Some(next.load(Ordering::Acquire)).filter(|&n| n >= 0)
    }

    pub(super) fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Acquire)
    }

    pub(super) fn changes(&self) -> watch::Receiver<u64> {
        self.changed.clone()
    }
}

/// Clears `alive` and wakes the readers when the task ends, however.
struct Alive(Arc<Shared>, watch::Sender<u64>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
        self.1.send_modify(|n| *n += 1);
    }
}

async fn run(
    metadata: super::Metadata,
    brokers: String,
    names: crate::TopicNames,
    topic: Topic,
    recent: Arc<Recent>,
    shared: Arc<Shared>,
    bump: watch::Sender<u64>,
) {
    let alive = Alive(shared.clone(), bump);
    // Where the topic ends now: the tail's start. Until it is known,
    // readers read on their own consumers.
    let consumer = loop {
        match start_at_end(&metadata, &brokers, &names, topic).await {
            Ok((consumer, ends)) => {
                for (next, end) in shared.next.iter().zip(ends) {
                    next.store(end, Ordering::Release);
                }
                break consumer;
            }
            Err(e) => {
                tracing::warn!(topic = topic.base_name(), error = %e, "the log's tail cannot start yet; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    alive.1.send_modify(|n| *n += 1);
    loop {
        let first = match consumer.recv().await {
            Ok(message) => message,
            Err(e) => match classify(e) {
                e @ crate::LogError::Unavailable(_) => {
                    tracing::warn!(topic = topic.base_name(), error = %e, "the log's tail could not read; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
                // E.g. its offset is out of range (the broker lost records it
                // had acknowledged): the consumer would not read that
                // partition again. The tail ends; its readers read on their
                // own consumers, which report the error to their owners,
                // and the next reader of the topic starts a new tail.
                e => {
                    tracing::error!(topic = topic.base_name(), error = %e, "the log's tail stopped");
                    return;
                }
            },
        };
        let mut records: Vec<Record> = Vec::new();
        let mut keep = |m: &rdkafka::message::BorrowedMessage<'_>| match to_record(&names, m) {
            Ok(record) => records.push(record),
            Err(e) => tracing::error!(error = %e, "the log's tail skipped a record"),
        };
        keep(&first);
        drop(first);
        for _ in 1..BATCH {
            match consumer.recv().now_or_never() {
                Some(Ok(message)) => keep(&message),
                _ => break,
            }
        }
        let ends: Vec<(i32, i64)> = records
            .iter()
            .map(|r| (r.partition, r.offset + 1))
            .collect();
        recent.keep(records);
        // Kept first, then announced: a reader that sees the new end finds
        // the records in memory.
        for (partition, end) in ends {
            if let Some(next) = shared.next.get(partition as usize) {
                next.fetch_max(end, Ordering::AcqRel);
            }
        }
        alive.1.send_modify(|n| *n += 1);
    }
}

async fn start_at_end(
    metadata: &super::Metadata,
    brokers: &str,
    names: &crate::TopicNames,
    topic: Topic,
) -> Result<(StreamConsumer, Vec<i64>), crate::LogError> {
    let ends = metadata.end_offsets(names, topic).await?;
    let from: Vec<ReadFrom> = ends
        .iter()
        .enumerate()
        .map(|(partition, &offset)| ReadFrom {
            topic,
            partition: partition as i32,
            offset,
        })
        .collect();
    let consumer: StreamConsumer = consumer_config(brokers).create().map_err(super::fatal)?;
    consumer
        .assign(&partitions_at(names, &from)?)
        .map_err(super::fatal)?;
    Ok((consumer, ends))
}
