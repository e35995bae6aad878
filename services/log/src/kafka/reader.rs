//! A reader of the Kafka log: from what its process's tails keep in memory
//! ([`Tail`], [`Recent`]); a partition it cannot be served there (behind the
//! tail's start, or behind what memory still holds: a projection catching
//! up, a replay) is read on a consumer of the reader's own, assigned only
//! to such partitions and dropped once none is left.

use super::tail::Tail;
use super::{classify, consumer_config, fatal, partitions_at, to_record};
use crate::recent::Recent;
use crate::{LogError, LogReader, ReadFrom, Record, TopicNames};
use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

pub(super) struct KafkaReader {
    names: TopicNames,
    brokers: String,
    next: Vec<ReadFrom>,
    /// The tail of each entry of `next`'s topic.
    tails: Vec<Arc<Tail>>,
    /// One per tail this reader uses.
    changes: Vec<watch::Receiver<u64>>,
    recent: Arc<Recent>,
    own: Option<Own>,
}

/// The reader's own consumer, for partitions memory cannot serve. It is
/// assigned once: librdkafka can abort the process when a consumer is
/// assigned anew while its last assignment is still starting (an assertion
/// in `rd_kafka_assignment_partition_stopped`), so a reader that needs
/// other partitions makes a new consumer.
struct Own {
    consumer: StreamConsumer,
    /// The entries of `next` it is assigned.
    assigned: Vec<usize>,
}

impl KafkaReader {
    pub(super) fn new(
        names: TopicNames,
        brokers: String,
        next: Vec<ReadFrom>,
        tails: Vec<Arc<Tail>>,
        recent: Arc<Recent>,
    ) -> KafkaReader {
        let mut distinct: Vec<&Arc<Tail>> = Vec::new();
        for tail in &tails {
            if !distinct.iter().any(|t| Arc::ptr_eq(t, tail)) {
                distinct.push(tail);
            }
        }
        let changes = distinct.iter().map(|t| t.changes()).collect();
        KafkaReader {
            names,
            brokers,
            next,
            tails,
            changes,
            recent,
            own: None,
        }
    }
}

#[async_trait]
impl LogReader for KafkaReader {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        let deadline = Instant::now() + wait;
        loop {
            for changes in &mut self.changes {
                changes.borrow_and_update();
            }
            let (mut records, behind) = self.read_memory(max);
            if behind.is_empty() {
                self.own = None;
            } else {
                self.assign_own(&behind)?;
                // What the own consumer has ready; waiting for it (or for a
                // tail) only when memory gave nothing.
                let until = records.is_empty().then_some(deadline);
                let left = max.saturating_sub(records.len()).max(1);
                records.extend(self.read_own(left, until).await?);
            }
            if !records.is_empty() || Instant::now() >= deadline {
                return Ok(records);
            }
            if behind.is_empty() {
                tokio::select! {
                    _ = any_change(&mut self.changes) => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
        }
    }
}

impl KafkaReader {
    /// Each partition's unbroken run in memory, and the entries of `next`
    /// that memory cannot serve though the log may hold more for them.
    ///
    /// Each partition gets a fair share of `max`; what the quiet ones leave
    /// is shared again among those that filled theirs (as the Postgres
    /// log's reader does), so one busy partition is still read `max` at a
    /// time.
    fn read_memory(&mut self, max: usize) -> (Vec<Record>, Vec<usize>) {
        let mut records = Vec::new();
        let mut behind = Vec::new();
        let mut asking: Vec<usize> = (0..self.next.len()).collect();
        while !asking.is_empty() && records.len() < max {
            let share = ((max - records.len()) / asking.len()).max(1);
            let mut more = Vec::new();
            for i in asking {
                let from = &mut self.next[i];
                // The tail's position before memory: the tail keeps records
                // before it moves on, so a run missing below it is not coming.
                let tail_next = self.tails[i].reads_next(from.partition);
                match self.recent.serve(from, share, &mut records) {
                    0 if tail_next.is_some_and(|next| from.offset >= next) => {}
                    0 => behind.push(i),
                    served if served == share => more.push(i),
                    _ => {}
                }
            }
            asking = more;
        }
        behind.sort_unstable();
        (records, behind)
    }

    /// An own consumer that reads every partition in `behind`. One that
    /// reads more (some have caught up since) is kept: what it reads of
    /// those is either already served (dropped) or exactly their next.
    fn assign_own(&mut self, behind: &[usize]) -> Result<(), LogError> {
        if let Some(own) = &self.own {
            if behind.iter().all(|i| own.assigned.contains(i)) {
                return Ok(());
            }
        }
        self.own = None;
        let consumer: StreamConsumer = consumer_config(&self.brokers).create().map_err(fatal)?;
        let from: Vec<ReadFrom> = behind.iter().map(|&i| self.next[i]).collect();
        consumer
            .assign(&partitions_at(&self.names, &from)?)
            .map_err(fatal)?;
        self.own = Some(Own {
            consumer,
            assigned: behind.to_vec(),
        });
        Ok(())
    }

    /// Up to `max` records from the own consumer: those ready now, or with
    /// `until`, the first to come before then (none if a tail moved first).
    async fn read_own(
        &mut self,
        max: usize,
        until: Option<Instant>,
    ) -> Result<Vec<Record>, LogError> {
        let Some(own) = &self.own else {
            return Ok(Vec::new());
        };
        let mut records = Vec::new();
        let first = match until {
            None => match own.consumer.recv().now_or_never() {
                Some(result) => result,
                None => return Ok(records),
            },
            Some(deadline) => tokio::select! {
                result = own.consumer.recv() => result,
                _ = any_change(&mut self.changes) => return Ok(records),
                _ = tokio::time::sleep_until(deadline) => return Ok(records),
            },
        };
        let first = to_record(&self.names, &first.map_err(classify)?)?;
        accept(&mut self.next, &mut records, first);
        while records.len() < max {
            match own.consumer.recv().now_or_never() {
                Some(Ok(message)) => {
                    let record = to_record(&self.names, &message)?;
                    accept(&mut self.next, &mut records, record);
                }
                Some(Err(e)) => return Err(classify(e)),
                None => break,
            }
        }
        self.recent.keep(records.iter().cloned());
        Ok(records)
    }
}

/// Takes a record read on the own consumer if it is the next of its
/// partition; one already served from memory (the consumer reads from where
/// it was assigned, memory may have served further since) is dropped.
fn accept(next: &mut [ReadFrom], records: &mut Vec<Record>, record: Record) {
    let Some(from) = next
        .iter_mut()
        .find(|f| f.topic == record.topic && f.partition == record.partition)
    else {
        return;
    };
    if record.offset >= from.offset {
        from.offset = record.offset + 1;
        records.push(record);
    }
}

/// Resolves when any tail kept new records (never, for a tail that ended:
/// its partitions are read on the own consumer then).
async fn any_change(changes: &mut [watch::Receiver<u64>]) {
    if changes.is_empty() {
        return std::future::pending().await;
    }
    let waits = changes.iter_mut().map(|changes| {
        Box::pin(async move {
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await
            }
        })
    });
    futures::future::select_all(waits).await;
}
