//! Messages, with a gapless per-thread sequence number, read markers and
//! recalls.

mod queries;
mod receipts;

use crate::{Feature, Projection, ProjectionError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use imlog_events::{Envelope, Event, MessageId, MessagePosted, Topic};
use imlog_log::Record;
use imlog_postgres::Migration;
use imlog_postgres::Prepared;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio_postgres::types::Type;

pub(crate) use queries::COLUMNS;
pub use queries::{MediaMessageRow, MessageRow, ReceiptRow};

pub(crate) const FEATURE: Feature = Feature {
    projection: &Messages,
    tables: &["messages", "thread_seqs", "thread_reads"],
    migrations: &[
        Migration {
            version: 4,
            name: "read markers and recalls",
            sql: include_str!("receipts.sql"),
        },
        Migration {
            version: 8,
            name: "media messages",
            sql: include_str!("media.sql"),
        },
    ],
};

pub struct Messages;

#[async_trait]
impl Projection for Messages {
    fn name(&self) -> &'static str {
        "messages"
    }

    fn topics(&self) -> &'static [Topic] {
        &[Topic::Messages]
    }

    /// Messages, receipts and recalls are re-applied from the log after a
    /// crash; waiting for the disk would add an fsync to every message
    /// (the log append already made it durable).
    fn waits_for_disk(&self) -> bool {
        false
    }

    /// Thousands of records a second under chat load: a batch every 10 ms
    /// instead of one every 2 costs a sync or an unread count at most 8 ms
    /// of freshness, and frees about a tenth of a 2-core machine for the
    /// gateways (the runners' round trips, not the rows, were most of this
    /// projection's work; docs/BENCHMARKS.md).
    fn linger(&self) -> Duration {
        Duration::from_millis(10)
    }

    /// Everything here is keyed by thread (seqs, dedupe, read markers), and
    /// a thread is one partition: two runners each take half the
    /// partitions, so one's commit overlaps the other's work.
    fn shards(&self) -> i32 {
        2
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        record: &Record,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        self.apply_batch(tx, &[(record, envelope.clone())]).await
    }

    /// Runs of posts are set-based (four statements per run, whatever its
    /// size); a read marker or a recall is applied between them, in log
    /// order.
    async fn apply_batch(
        &self,
        tx: &Transaction<'_>,
        batch: &[(&Record, Envelope)],
    ) -> Result<(), ProjectionError> {
        let mut run: Vec<(&Record, &Envelope, &MessagePosted)> = Vec::new();
        for (record, envelope) in batch {
            let at = envelope.meta.occurred_at;
            match &envelope.event {
                Event::MessagePosted(m) => run.push((*record, envelope, m)),
                Event::MessagesRead(r) => {
                    post(tx, std::mem::take(&mut run)).await?;
                    receipts::read(tx, r, at).await?;
                }
                Event::MessageRecalled(r) => {
                    post(tx, std::mem::take(&mut run)).await?;
                    receipts::recall(tx, r, at).await?;
                }
                Event::MessageMediaSettled(m) => {
                    post(tx, std::mem::take(&mut run)).await?;
                    settle_media(tx, m).await?;
                }
                _ => {}
            }
        }
        post(tx, run).await
    }
}

/// Inserts a run of posts.
async fn post(
    tx: &Transaction<'_>,
    posted: Vec<(&Record, &Envelope, &MessagePosted)>,
) -> Result<(), ProjectionError> {
    if posted.is_empty() {
        return Ok(());
    }
    // A retried send carries the same (thread, sender, unique_id): the
    // first one in log order counts, whether stored already or in this
    // batch. A thread is one partition, so this verdict is the same in a
    // replay, whatever its batches.
    let threads: Vec<i64> = posted.iter().map(|(_, _, m)| m.thread_id.get()).collect();
    let senders: Vec<i64> = posted.iter().map(|(_, _, m)| m.sender_id.get()).collect();
    let unique_ids: Vec<&str> = posted
        .iter()
        .map(|(_, _, m)| m.unique_id.as_str())
        .collect();
    let mut seen: HashSet<(i64, i64, String)> = tx
            .query_prepared(
                // LATERAL, kept as written (OFFSET 0): one index probe per
                // posted message, whatever the planner guesses of the
                // array's size (a join over the whole table otherwise).
                "SELECT m.thread_id, m.sender_id, m.unique_id
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS u(thread_id, sender_id, unique_id)
                 CROSS JOIN LATERAL (
                     SELECT thread_id, sender_id, unique_id FROM messages x
                     WHERE x.thread_id = u.thread_id AND x.sender_id = u.sender_id AND x.unique_id = u.unique_id
                     OFFSET 0
                 ) m",
                &[
                    (&threads, Type::INT8_ARRAY),
                    (&senders, Type::INT8_ARRAY),
                    (&unique_ids, Type::TEXT_ARRAY),
                ],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    let fresh: Vec<_> = posted
        .into_iter()
        .filter(|(_, _, m)| {
            seen.insert((m.thread_id.get(), m.sender_id.get(), m.unique_id.clone()))
        })
        .collect();
    if fresh.is_empty() {
        return Ok(());
    }

    // Reserve each thread's next seqs in one statement.
    let mut per_thread: BTreeMap<i64, i64> = BTreeMap::new();
    for (_, _, m) in &fresh {
        *per_thread.entry(m.thread_id.get()).or_default() += 1;
    }
    let threads: Vec<i64> = per_thread.keys().copied().collect();
    let counts: Vec<i64> = per_thread.values().copied().collect();
    let mut next_seq: HashMap<i64, i64> = tx
            .query_prepared(
                "INSERT INTO thread_seqs (thread_id, last_seq) SELECT * FROM unnest($1::bigint[], $2::bigint[])
                 ON CONFLICT (thread_id) DO UPDATE SET last_seq = thread_seqs.last_seq + EXCLUDED.last_seq
                 RETURNING thread_id, last_seq",
                &[(&threads, Type::INT8_ARRAY), (&counts, Type::INT8_ARRAY)],
            )
            .await?
            .iter()
            .map(|r| {
                let thread: i64 = r.get(0);
                let last: i64 = r.get(1);
                (thread, last - per_thread[&thread] + 1)
            })
            .collect();

    let mut rows = MessageRows::default();
    for (record, envelope, m) in fresh {
        let seq = next_seq
            .get_mut(&m.thread_id.get())
            .expect("reserved above");
        rows.message_id
            .push(MessageId::from_position(record.position()).get());
        rows.thread_id.push(m.thread_id.get());
        rows.seq.push(*seq);
        rows.sender_id.push(m.sender_id.get());
        rows.unique_id.push(&m.unique_id);
        rows.kind.push(m.kind.as_str());
        rows.body.push(&m.body);
        rows.created_at.push(envelope.meta.occurred_at);
        rows.media
            .push(m.media.as_ref().and_then(|a| serde_json::to_value(a).ok()));
        *seq += 1;
    }
    tx.query_prepared(
            "INSERT INTO messages (message_id, thread_id, seq, sender_id, unique_id, kind, body, created_at, media)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[],
                                  $6::text[], $7::text[], $8::timestamptz[], $9::jsonb[])",
            &[
                (&rows.message_id, Type::INT8_ARRAY),
                (&rows.thread_id, Type::INT8_ARRAY),
                (&rows.seq, Type::INT8_ARRAY),
                (&rows.sender_id, Type::INT8_ARRAY),
                (&rows.unique_id, Type::TEXT_ARRAY),
                (&rows.kind, Type::TEXT_ARRAY),
                (&rows.body, Type::TEXT_ARRAY),
                (&rows.created_at, Type::TIMESTAMPTZ_ARRAY),
                (&rows.media, Type::JSONB_ARRAY),
            ],
        )
        .await?;
    receipts::read_own_posts(
        tx,
        &rows.thread_id,
        &rows.sender_id,
        &rows.seq,
        &rows.message_id,
        &rows.created_at,
    )
    .await
}

/// Column arrays for one multi-row insert.
#[derive(Default)]
struct MessageRows<'a> {
    message_id: Vec<i64>,
    thread_id: Vec<i64>,
    seq: Vec<i64>,
    sender_id: Vec<i64>,
    unique_id: Vec<&'a str>,
    kind: Vec<&'a str>,
    body: Vec<&'a str>,
    created_at: Vec<DateTime<Utc>>,
    media: Vec<Option<serde_json::Value>>,
}

/// A media message's upload ended: the first settlement counts (a message
/// still `uploading`), so a repeated one changes nothing.
async fn settle_media(
    tx: &Transaction<'_>,
    m: &imlog_events::MessageMediaSettled,
) -> Result<(), ProjectionError> {
    tx.query_prepared(
        "UPDATE messages SET media = jsonb_set(media, '{state}', to_jsonb($3::text))
         WHERE message_id = $1 AND thread_id = $2 AND media->>'state' = 'uploading'",
        &[
            (&m.message_id.get(), Type::INT8),
            (&m.thread_id.get(), Type::INT8),
            (&m.state.as_str(), Type::TEXT),
        ],
    )
    .await?;
    Ok(())
}
