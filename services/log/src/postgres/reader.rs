//! Tailing the table: a reader takes what this process keeps in memory
//! ([`Recent`]) and asks the table only for partitions where it may have
//! more than that ([`Appended`]'s ends).

use super::heard::Appended;
use super::{db_error, unavailable, FALLBACK_POLL};
use crate::recent::Recent;
use crate::{LogError, LogReader, ReadFrom, Record, TopicNames};
use async_trait::async_trait;
use imlog_events::Topic;
use imlog_postgres::Pool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The next records of several partitions: each partition's share is a
/// prefix from its offset (so nothing is ever skipped).
const READ: &str = r#"
    SELECT a.ord, r."offset", r.key, r.payload, r.appended_at
    FROM unnest($1::integer[], $2::text[], $3::integer[], $4::bigint[])
         AS a(ord, topic, partition, from_offset)
    CROSS JOIN LATERAL (
        SELECT "offset", key, payload, appended_at FROM imlog_log.records
        WHERE topic = a.topic AND partition = a.partition AND "offset" >= a.from_offset
        ORDER BY "offset" LIMIT $5
    ) r
    ORDER BY a.ord, r."offset"
"#;

pub(super) struct PgReader {
    pool: Pool,
    names: TopicNames,
    next: Vec<ReadFrom>,
    /// The topics of `next`.
    topics: Vec<Topic>,
    appended: watch::Receiver<Appended>,
    /// The count of appends to our topics before the last read, if that
    /// read reached the end of every partition.
    caught_up: Option<u64>,
    recent: Arc<Recent>,
    /// Where the table ended for each partition of `next` when last read,
    /// while no end was forgotten since (`found_after`).
    found_ends: Vec<Option<i64>>,
    found_after: u64,
    /// When every partition not served from memory was last read from the
    /// table, whatever the ends said (as a notification can be lost with
    /// the listener's connection before the listener knows).
    checked: Instant,
}

impl PgReader {
    pub(super) fn new(
        pool: Pool,
        names: TopicNames,
        from: Vec<ReadFrom>,
        appended: watch::Receiver<Appended>,
        recent: Arc<Recent>,
    ) -> PgReader {
        let mut topics: Vec<Topic> = from.iter().map(|f| f.topic).collect();
        topics.sort();
        topics.dedup();
        PgReader {
            pool,
            names,
            found_ends: vec![None; from.len()],
            next: from,
            topics,
            appended,
            caught_up: None,
            recent,
            found_after: 0,
            checked: Instant::now(),
        }
    }
}

#[async_trait]
impl LogReader for PgReader {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut first = true;
        loop {
            let heard = *self.appended.borrow_and_update();
            let seen = heard.count(&self.topics);
            // Nothing was appended to our topics since a read that reached
            // the end: do not ask again, wait for the next notification.
            let read_now = !(first && self.caught_up == Some(seen));
            first = false;
            if read_now {
                let (records, reached_end) = self.read(max, &heard).await?;
                // Every append counted in `seen` had committed before this
                // read began, so it saw them all; a later one notifies.
                self.caught_up = reached_end.then_some(seen);
                if !records.is_empty() {
                    return Ok(records);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            // Wait until one of this reader's topics was appended to (or
            // the fallback poll, for a notification lost with the
            // listener's connection): another topic's appends do not wake it.
            let nap = deadline.min(tokio::time::Instant::now() + FALLBACK_POLL);
            loop {
                tokio::select! {
                    r = self.appended.changed() => {
                        // A closed channel (listener gone) must not turn this into a spin.
                        if r.is_err() {
                            tokio::time::sleep_until(nap).await;
                            break;
                        }
                        if self.appended.borrow_and_update().count(&self.topics) != seen {
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(nap) => break,
                }
            }
        }
    }
}

impl PgReader {
    /// The next records (at most `max`), and whether the read reached the
    /// end of every partition as `heard` knows it.
    ///
    /// Each partition gets a fair share, so one busy partition cannot starve
    /// the others; what the quiet ones leave is shared again among those
    /// that filled theirs, so a backlog in a few partitions is still read
    /// `max` at a time. Every share is a prefix, so nothing is skipped.
    async fn read(
        &mut self,
        max: usize,
        heard: &Appended,
    ) -> Result<(Vec<Record>, bool), LogError> {
        if heard.forgotten() != self.found_after {
            self.found_ends.fill(None);
            self.found_after = heard.forgotten();
        }
        let check = self.checked.elapsed() >= FALLBACK_POLL;
        if check {
            // Even if this read fills up before asking about every
            // partition: the rest are asked a second later.
            self.checked = Instant::now();
        }
        let mut records = Vec::new();
        let mut reached_end = true;
        let mut client = None;
        let mut asking: Vec<usize> = (0..self.next.len()).collect();
        while !asking.is_empty() {
            let left = max.saturating_sub(records.len());
            if left == 0 {
                // Partitions with more to read, and no room left for them.
                return Ok((records, false));
            }
            // At least one each, so a batch may carry up to one record per
            // partition more than asked for (a few, against 500).
            let share = (left / asking.len()).max(1);
            // Memory first. A partition served its whole share there may
            // have more; one served part of it is at its end, or at another
            // process's append not kept here (the next read asks the table).
            let mut more = Vec::new();
            let mut from_table = Vec::new();
            for &i in &asking {
                let from = &mut self.next[i];
                let end = heard
                    .end(from.topic, from.partition)
                    .max(self.found_ends[i]);
                match self.recent.serve(from, share, &mut records) {
                    served if served == share => more.push(i),
                    1.. => {
                        if end.is_none_or(|end| from.offset < end) {
                            reached_end = false;
                        }
                    }
                    0 if !check && end.is_some_and(|end| from.offset >= end) => {}
                    // Our own writer's batch in flight, heard of before it
                    // was kept: the writer wakes us once it is in memory.
                    0 if !check && heard.writing(from.topic, from.partition, from.offset) => {
                        reached_end = false;
                    }
                    0 => from_table.push(i),
                }
            }
            if !from_table.is_empty() {
                if client.is_none() {
                    client = Some(self.pool.get().await.map_err(unavailable)?);
                }
                let client = client.as_ref().expect("connected above");
                let (read, counts) = self.read_table(client, &from_table, share).await?;
                for i in from_table {
                    if counts[i] == share {
                        more.push(i);
                    } else {
                        self.found_ends[i] = Some(self.next[i].offset);
                    }
                }
                self.recent.keep(read.iter().cloned());
                records.extend(read);
            }
            asking = more;
        }
        Ok((records, reached_end))
    }

    /// Up to `share` records of each partition `ordinals` names, from the
    /// table; and how many each partition gave.
    async fn read_table(
        &mut self,
        client: &deadpool_postgres::Object,
        ordinals: &[usize],
        share: usize,
    ) -> Result<(Vec<Record>, Vec<usize>), LogError> {
        let statement = client.prepare_cached(READ).await.map_err(db_error)?;
        let topics: Vec<String> = ordinals
            .iter()
            .map(|&i| self.names.name(self.next[i].topic))
            .collect();
        let partitions: Vec<i32> = ordinals.iter().map(|&i| self.next[i].partition).collect();
        let offsets: Vec<i64> = ordinals.iter().map(|&i| self.next[i].offset).collect();
        let ordinals: Vec<i32> = ordinals.iter().map(|&i| i as i32).collect();
        let rows = client
            .query(
                &statement,
                &[&ordinals, &topics, &partitions, &offsets, &(share as i64)],
            )
            .await
            .map_err(db_error)?;
        let mut records = Vec::with_capacity(rows.len());
        let mut counts = vec![0; self.next.len()];
        for row in rows {
            let ord: i32 = row.get(0);
            counts[ord as usize] += 1;
            let from = &mut self.next[ord as usize];
            let offset: i64 = row.get(1);
            debug_assert_eq!(offset, from.offset, "the log has a gap");
            from.offset = offset + 1;
            records.push(Record {
                topic: from.topic,
                partition: from.partition,
                offset,
                key: row.get(2),
                payload: row.get(3),
                appended_at: row.get(4),
            });
        }
        Ok((records, counts))
    }
}
