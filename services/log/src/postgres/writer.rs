//! The single writer: appends arrive on a queue, each batch of them is
//! written in one transaction, kept in memory for this process's readers
//! and answered.

use super::heard::{writing, wrote, Appended};
use super::{db_error, unavailable, MAX_BATCH};
use crate::recent::Recent;
use crate::{LogError, Record};
use chrono::{DateTime, Utc};
use imlog_events::{LogPosition, Topic};
use imlog_postgres::Pool;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

pub(super) struct PendingAppend {
    pub(super) topic: Topic,
    /// The topic's name in the table (with the deployment's prefix).
    pub(super) name: String,
    pub(super) partition: i32,
    pub(super) key: String,
    pub(super) payload: Vec<u8>,
    pub(super) reply: oneshot::Sender<Result<LogPosition, LogError>>,
}

pub(super) type Reply = oneshot::Receiver<Result<LogPosition, LogError>>;

pub(super) async fn await_reply(reply: Reply) -> Result<LogPosition, LogError> {
    reply
        .await
        .map_err(|_| LogError::Unavailable("log writer stopped".into()))?
}

/// The single writer: takes whatever appends are queued (up to `MAX_BATCH`),
/// writes them in one transaction, keeps them in `recent`, answers each
/// caller.
pub(super) async fn write_appends(
    pool: Pool,
    mut queue: mpsc::Receiver<PendingAppend>,
    bump: Arc<watch::Sender<Appended>>,
    recent: Arc<Recent>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Each partition written, and its new end once committed.
        let mut ends: BTreeMap<(Topic, i32), Option<i64>> = batch
            .iter()
            .map(|p| ((p.topic, p.partition), None))
            .collect();
        writing(&bump, ends.keys());
        let started = std::time::Instant::now();
        let (results, appended_at) = write_batch(&pool, &batch).await;
        metrics::histogram!("imlog_log_append_batch_seconds", "backend" => "postgres")
            .record(started.elapsed().as_secs_f64());
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            tracing::warn!(error = %e, records = batch.len(), "log append failed");
        }
        let mut kept = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for (pending, result) in batch.drain(..).zip(results) {
            if let (Ok(position), Some(appended_at)) = (&result, appended_at) {
                ends.insert(
                    (pending.topic, position.partition),
                    Some(position.offset + 1),
                );
                kept.push(Record {
                    topic: pending.topic,
                    partition: position.partition,
                    offset: position.offset,
                    key: pending.key,
                    payload: pending.payload,
                    appended_at,
                });
            }
            replies.push((pending.reply, result));
        }
        recent.keep(kept);
        // Readers in this process need not wait for the notification.
        wrote(&bump, ends);
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
    }
}

/// Appends a batch in one statement (one round trip, its own transaction):
/// lock the partitions' rows in a fixed order (so concurrent writers never
/// deadlock), bump their `next_offset`, insert the records at the offsets
/// taken, notify readers of each partition's new end (`heard`).
const APPEND: &str = r#"
    WITH wanted AS (
        SELECT * FROM unnest($1::text[], $2::integer[], $3::bigint[]) AS w(topic, partition, n)
    ), locked AS (
        SELECT p.topic, p.partition, p.next_offset
        FROM imlog_log.partitions p JOIN wanted w USING (topic, partition)
        ORDER BY p.topic, p.partition
        FOR UPDATE OF p
    ), bumped AS (
        UPDATE imlog_log.partitions p SET next_offset = l.next_offset + w.n
        FROM locked l JOIN wanted w USING (topic, partition)
        WHERE p.topic = l.topic AND p.partition = l.partition
        RETURNING p.topic, p.partition, l.next_offset AS base, p.next_offset AS "end"
    ), inserted AS (
        INSERT INTO imlog_log.records (topic, partition, "offset", key, payload)
        SELECT r.topic, r.partition, b.base + r.idx, r.key, r.payload
        FROM unnest($4::text[], $5::integer[], $6::bigint[], $7::text[], $8::bytea[])
             AS r(topic, partition, idx, key, payload)
        JOIN bumped b ON b.topic = r.topic AND b.partition = r.partition
    )
    SELECT b.topic, b.partition, b.base, now(),
           pg_notify('imlog_log', b.topic || ' ' || b.partition || ' ' || b."end")
    FROM bumped b
"#;

/// Each append's position, and when they were appended (as the table
/// says: `appended_at`'s default), unless the batch failed.
type Written = (Vec<Result<LogPosition, LogError>>, Option<DateTime<Utc>>);

async fn write_batch(pool: &Pool, batch: &[PendingAppend]) -> Written {
    match try_write_batch(pool, batch).await {
        Ok((positions, at)) => (positions, at),
        Err(e) => (batch.iter().map(|_| Err(e.clone())).collect(), None),
    }
}

async fn try_write_batch(
    pool: &Pool,
    batch: &[PendingAppend],
) -> Result<(Vec<Result<LogPosition, LogError>>, Option<DateTime<Utc>>), LogError> {
    // Each record's index within its partition's share of the batch.
    let mut counts: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    let mut indices = Vec::with_capacity(batch.len());
    for p in batch {
        let n = counts.entry((p.name.as_str(), p.partition)).or_default();
        indices.push(*n);
        *n += 1;
    }
    let wanted_topics: Vec<&str> = counts.keys().map(|(t, _)| *t).collect();
    let wanted_partitions: Vec<i32> = counts.keys().map(|(_, p)| *p).collect();
    let wanted_counts: Vec<i64> = counts.values().copied().collect();
    let topics: Vec<&str> = batch.iter().map(|p| p.name.as_str()).collect();
    let partitions: Vec<i32> = batch.iter().map(|p| p.partition).collect();
    let keys: Vec<&str> = batch.iter().map(|p| p.key.as_str()).collect();
    let payloads: Vec<&[u8]> = batch.iter().map(|p| p.payload.as_slice()).collect();

    let client = pool.get().await.map_err(unavailable)?;
    // The log's tables never move (unlike the read model), so the
    // statement can stay prepared on the connection.
    let statement = client.prepare_cached(APPEND).await.map_err(db_error)?;
    let rows = client
        .query(
            &statement,
            &[
                &wanted_topics,
                &wanted_partitions,
                &wanted_counts,
                &topics,
                &partitions,
                &indices,
                &keys,
                &payloads,
            ],
        )
        .await
        .map_err(db_error)?;
    let bases: BTreeMap<(String, i32), i64> = rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let appended_at: Option<DateTime<Utc>> = rows.first().map(|r| r.get(3));
    let positions = batch
        .iter()
        .zip(indices)
        .map(
            |(p, index)| match bases.get(&(p.name.clone(), p.partition)) {
                Some(base) => Ok(LogPosition {
                    partition: p.partition,
                    offset: base + index,
                }),
                None => Err(LogError::Fatal(format!(
                    "unknown topic partition {}/{}; was ensure_topics run?",
                    p.name, p.partition
                ))),
            },
        )
        .collect();
    Ok((positions, appended_at))
}
