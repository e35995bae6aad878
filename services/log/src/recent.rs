//! The log's most recent records, kept in memory by the process that
//! appended or read them, so that its other readers (a projection, the
//! fan-out, a process manager: each reads every record of its topics) do not
//! each fetch the same records from Postgres or the broker again.
//!
//! A record is kept only once it is known committed (its append confirmed,
//! or read back from the table or the broker), exactly as the log holds it,
//! so a reader served from here reads what it would have read there. What
//! is not kept leaves gaps, so a reader takes only the unbroken run from its
//! next offset and asks the log itself for the rest.

use crate::{ReadFrom, Record};
use imlog_events::Topic;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Bytes of records kept per partition; the oldest go first.
const BYTES_PER_PARTITION: usize = 4 << 20;
/// What a kept record costs beyond its key and payload.
const OVERHEAD: usize = 96;

#[derive(Default)]
pub(crate) struct Recent {
    partitions: Mutex<HashMap<(Topic, i32), Tail>>,
}

#[derive(Default)]
struct Tail {
    records: BTreeMap<i64, Record>,
    bytes: usize,
}

fn size(record: &Record) -> usize {
    record.payload.len() + record.key.len() + OVERHEAD
}

impl Recent {
    /// Keeps committed records.
    pub(crate) fn keep(&self, records: impl IntoIterator<Item = Record>) {
        let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        for record in records {
            let tail = partitions
                .entry((record.topic, record.partition))
                .or_default();
            if tail.records.contains_key(&record.offset) {
                continue;
            }
            tail.bytes += size(&record);
            tail.records.insert(record.offset, record);
            while tail.bytes > BYTES_PER_PARTITION {
                match tail.records.pop_first() {
                    Some((_, old)) => tail.bytes -= size(&old),
                    None => break,
                }
            }
        }
    }

    /// Serves a reader at `from` up to `max` records of its partition from
    /// here (an unbroken run, into `records`), moving `from` past them;
    /// how many.
    pub(crate) fn serve(
        &self,
        from: &mut ReadFrom,
        max: usize,
        records: &mut Vec<Record>,
    ) -> usize {
        let run = self.run_from(from.topic, from.partition, from.offset, max);
        if let Some(last) = run.last() {
            from.offset = last.offset + 1;
        }
        let served = run.len();
        records.extend(run);
        served
    }

    /// Up to `max` records of a partition from offset `from` on, without a
    /// gap (none if `from` is not kept).
    fn run_from(&self, topic: Topic, partition: i32, from: i64, max: usize) -> Vec<Record> {
        let partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tail) = partitions.get(&(topic, partition)) else {
            return Vec::new();
        };
        tail.records
            .range(from..)
            .zip(from..)
            .take_while(|((&offset, _), expected)| offset == *expected)
            .take(max)
            .map(|((_, record), _)| record.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn record(partition: i32, offset: i64, bytes: usize) -> Record {
        Record {
            topic: Topic::Messages,
            partition,
            offset,
            key: "k".into(),
            payload: vec![0; bytes],
            appended_at: Utc::now(),
        }
    }

    fn offsets(records: &[Record]) -> Vec<i64> {
        records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn serves_only_an_unbroken_run() {
        let recent = Recent::default();
        let kept = [3, 4, 5, 7, 8].map(|o| record(0, o, 10));
        recent.keep(kept);
        assert_eq!(
            offsets(&recent.run_from(Topic::Messages, 0, 3, 10)),
            [3, 4, 5]
        );
        assert_eq!(offsets(&recent.run_from(Topic::Messages, 0, 4, 1)), [4]);
        assert!(recent.run_from(Topic::Messages, 0, 2, 10).is_empty());
        assert!(recent.run_from(Topic::Messages, 0, 6, 10).is_empty());
        assert_eq!(offsets(&recent.run_from(Topic::Messages, 0, 7, 10)), [7, 8]);
        assert!(recent.run_from(Topic::Messages, 1, 3, 10).is_empty());
        // A read that fills the gap joins the runs.
        recent.keep([record(0, 6, 10)]);
        assert_eq!(
            offsets(&recent.run_from(Topic::Messages, 0, 3, 10)),
            [3, 4, 5, 6, 7, 8]
        );
    }

    #[test]
    fn forgets_the_oldest_beyond_its_budget() {
        let recent = Recent::default();
        let each = 64 << 10;
        let kept = (0..100).map(|o| record(0, o, each));
        recent.keep(kept);
        let run = recent.run_from(Topic::Messages, 0, 0, 1000);
        assert!(run.is_empty(), "offset 0 was forgotten");
        let last = 99 - (BYTES_PER_PARTITION / (each + OVERHEAD + 1)) as i64 + 1;
        let run = recent.run_from(Topic::Messages, 0, last, 1000);
        assert_eq!(run.last().map(|r| r.offset), Some(99));
        assert!(run.len() * each <= BYTES_PER_PARTITION);
    }
}
