//! What a process has heard of appends to the log: a count per topic (so a
//! reader wakes only when one of its own topics moved) and each partition's
//! end offset (so a reader that has everything up to it in memory need not
//! ask the table whether there is more).
//!
//! Every append transaction notifies `imlog_log` with `<topic> <partition>
//! <end>` for each partition it wrote; the process's own writer tells the
//! same at once, without waiting for the round trip through Postgres. A
//! partition's end is known only from such a notification or a read of the
//! table: a notification naming just a topic (an older writer) or none (the
//! listener reconnected, so any may have been missed) makes the ends it
//! concerns unknown, and readers ask the table again.

use crate::TopicNames;
use imlog_events::Topic;
use std::collections::BTreeMap;
use tokio::sync::watch;

/// Partitions per topic whose ends are kept. Every topic has at most this
/// many (a test says so): a reader trusts the end it found in the table
/// only because a later append to the partition moves the heard end past
/// it, so a partition without a slot would wait for the fallback poll.
const KEPT_PARTITIONS: usize = 8;

#[derive(Clone, Copy, Default)]
pub(super) struct Appended {
    /// Notifications heard per topic (by index in `Topic::ALL`).
    counts: [u64; Topic::ALL.len()],
    /// Each partition's end offset as last heard: every record before it is
    /// committed, and an append after it will be heard of. `None` where
    /// appends may have gone unheard.
    ends: [[Option<i64>; KEPT_PARTITIONS]; Topic::ALL.len()],
    /// Bumped whenever ends became unknown: an end a reader found in the
    /// table before that may be stale.
    forgotten: u64,
    /// Where this process's append batch in flight starts, at the least,
    /// per partition: the end heard when the writer took the batch (unset
    /// if it was unknown). Its notification can be heard before the writer
    /// has kept its records: a reader missing records from there on waits
    /// for the writer (which wakes it) instead of asking the table for
    /// records about to be in memory. Records before it are not the
    /// batch's: those come from the table.
    writing_from: [[Option<i64>; KEPT_PARTITIONS]; Topic::ALL.len()],
}

fn topic_index(topic: Topic) -> usize {
    Topic::ALL.iter().position(|&t| t == topic).unwrap_or(0)
}

impl Appended {
    /// Notifications heard for these topics, summed.
    pub(super) fn count(&self, topics: &[Topic]) -> u64 {
        topics.iter().map(|&t| self.counts[topic_index(t)]).sum()
    }

    pub(super) fn end(&self, topic: Topic, partition: i32) -> Option<i64> {
        let ends = &self.ends[topic_index(topic)];
        usize::try_from(partition)
            .ok()
            .and_then(|p| ends.get(p).copied().flatten())
    }

    pub(super) fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Whether the record at `offset` of the partition may be in this
    /// process's append batch in flight.
    pub(super) fn writing(&self, topic: Topic, partition: i32, offset: i64) -> bool {
        usize::try_from(partition)
            .ok()
            .and_then(|p| {
                self.writing_from[topic_index(topic)]
                    .get(p)
                    .copied()
                    .flatten()
            })
            .is_some_and(|from| offset >= from)
    }

    fn advance(&mut self, topic: Topic, partition: i32, end: i64) {
        let t = topic_index(topic);
        self.counts[t] += 1;
        if let Some(known) = usize::try_from(partition)
            .ok()
            .and_then(|p| self.ends[t].get_mut(p))
        {
            *known = (*known).max(Some(end));
        }
    }

    fn forget(&mut self, topic: Option<Topic>) {
        for (t, ends) in self.ends.iter_mut().enumerate() {
            if topic.is_none_or(|topic| topic_index(topic) == t) {
                self.counts[t] += 1;
                *ends = Default::default();
            }
        }
        self.forgotten += 1;
    }
}

/// The payload this process's writer notifies after appending up to `end`
/// (exclusive) in a partition: written by `APPEND` in SQL, read by [`heard`].
#[cfg(test)]
fn payload(name: &str, partition: i32, end: i64) -> String {
    format!("{name} {partition} {end}")
}

/// Counts a notification (`None`: the listener reconnected). Topics of
/// another deployment's prefix are ignored.
pub(super) fn heard(appended: &watch::Sender<Appended>, names: &TopicNames, payload: Option<&str>) {
    let Some(payload) = payload.filter(|p| !p.is_empty()) else {
        appended.send_modify(|a| a.forget(None));
        return;
    };
    // From the right: the topic's name is the deployment's to choose.
    let mut words = payload.rsplitn(3, ' ');
    let (end, partition, name) = (words.next(), words.next(), words.next());
    let position = partition
        .and_then(|p| p.parse().ok())
        .zip(end.and_then(|e| e.parse().ok()));
    match (name.and_then(|n| names.topic(n)), position) {
        (Some(topic), Some((partition, end))) => {
            appended.send_modify(|a| a.advance(topic, partition, end))
        }
        // An older writer's, naming only the topic.
        (None, _) => {
            if let Some(topic) = names.topic(payload) {
                appended.send_modify(|a| a.forget(Some(topic)));
            }
        }
        // A topic of ours with a malformed position: assume anything.
        (Some(topic), None) => appended.send_modify(|a| a.forget(Some(topic))),
    }
}

/// Partitions of a batch this process's writer is about to append: marked
/// before the statement runs (so before its notification can be heard),
/// without waking anyone.
pub(super) fn writing<'a>(
    appended: &watch::Sender<Appended>,
    partitions: impl IntoIterator<Item = &'a (Topic, i32)>,
) {
    appended.send_if_modified(|a| {
        for &(topic, partition) in partitions {
            let end = a.end(topic, partition);
            if let Some(from) = writing_slot(a, topic, partition) {
                *from = end;
            }
        }
        false
    });
}

fn writing_slot(a: &mut Appended, topic: Topic, partition: i32) -> Option<&mut Option<i64>> {
    usize::try_from(partition)
        .ok()
        .and_then(|p| a.writing_from[topic_index(topic)].get_mut(p))
}

/// What this process's writer just did with the partitions it marked
/// [`writing`]: each one's new end if the batch committed (`None` if it
/// failed), told in one update without waiting for the notifications to
/// come back. Wakes the readers of every partition marked, failed or not:
/// one may have skipped the table for it.
pub(super) fn wrote(
    appended: &watch::Sender<Appended>,
    batch: BTreeMap<(Topic, i32), Option<i64>>,
) {
    if !batch.is_empty() {
        appended.send_modify(|a| {
            for ((topic, partition), end) in batch {
                if let Some(from) = writing_slot(a, topic, partition) {
                    *from = None;
                }
                match end {
                    Some(end) => a.advance(topic, partition, end),
                    None => a.counts[topic_index(topic)] += 1,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_a_kept_end() {
        for topic in Topic::ALL {
            assert!(topic.partitions() as usize <= KEPT_PARTITIONS, "{topic}");
        }
    }

    #[test]
    fn ends_are_heard_and_forgotten() {
        let names = TopicNames::new("p .");
        let (tx, rx) = watch::channel(Appended::default());
        let messages = [Topic::Messages];
        heard(&tx, &names, Some(&payload("p .messages", 3, 10)));
        heard(&tx, &names, Some(&payload("p .messages", 3, 7)));
        let a = *rx.borrow();
        assert_eq!(a.end(Topic::Messages, 3), Some(10), "never moves back");
        assert_eq!(a.end(Topic::Messages, 2), None);
        assert_eq!(a.count(&messages), 2);
        // Another deployment's topic, or nonsense: ignored.
        heard(&tx, &names, Some(&payload("q.messages", 3, 50)));
        heard(&tx, &names, Some("p .nothing 1 2"));
        assert_eq!(rx.borrow().count(&messages), 2);
        // An older writer names only the topic: its ends are unknown.
        wrote(&tx, BTreeMap::from([((Topic::Sessions, 1), Some(4))]));
        heard(&tx, &names, Some("p .messages"));
        let a = *rx.borrow();
        assert_eq!(a.end(Topic::Messages, 3), None);
        assert_eq!(a.end(Topic::Sessions, 1), Some(4));
        assert_eq!((a.count(&messages), a.forgotten()), (3, 1));
        // A reconnect: every end is unknown, every reader wakes.
        heard(&tx, &names, None);
        let a = *rx.borrow();
        assert_eq!(a.end(Topic::Sessions, 1), None);
        assert_eq!((a.count(&messages), a.forgotten()), (4, 2));
    }

    #[test]
    fn an_append_in_flight_is_marked_quietly_and_its_end_wakes_readers() {
        let names = TopicNames::new("p.");
        let (tx, mut rx) = watch::channel(Appended::default());
        wrote(&tx, BTreeMap::from([((Topic::Messages, 3), Some(2))]));
        rx.borrow_and_update();
        let batch = [(Topic::Messages, 3), (Topic::Threads, 0)];
        writing(&tx, &batch);
        assert!(!rx.has_changed().unwrap(), "marking wakes nobody");
        let a = *rx.borrow();
        assert!(a.writing(Topic::Messages, 3, 2) && a.writing(Topic::Messages, 3, 4));
        // Before the end heard (another process's, or older than memory):
        // not the batch's. An unknown end, or another partition: no claim.
        assert!(!a.writing(Topic::Messages, 3, 1));
        assert!(!a.writing(Topic::Threads, 0, 0));
        assert!(!a.writing(Topic::Messages, 2, 0));
        // Its notification may be heard first: still in flight.
        heard(&tx, &names, Some(&payload("p.messages", 3, 5)));
        assert!(rx.borrow_and_update().writing(Topic::Messages, 3, 2));
        // Committed in messages, failed in threads: both done, both woken.
        wrote(&tx, BTreeMap::from([(batch[0], Some(5)), (batch[1], None)]));
        assert!(rx.has_changed().unwrap());
        let a = *rx.borrow_and_update();
        assert!(!a.writing(Topic::Messages, 3, 5));
        assert_eq!(a.end(Topic::Messages, 3), Some(5));
        assert_eq!(a.end(Topic::Threads, 0), None);
        assert_eq!(
            (a.count(&[Topic::Messages]), a.count(&[Topic::Threads])),
            (3, 1)
        );
    }
}
