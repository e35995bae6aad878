//! The embedded log backend: records in a Postgres table.
//!
//! Offsets must become visible in order, or a tailing reader could pass offset
//! 8 before 7 commits and never see 7. So an append takes the next offsets by
//! updating the partition's row (`next_offset`), whose row lock is held until
//! the transaction commits: appenders to one partition commit one after the
//! other, in offset order. Appends are grouped into one transaction per batch
//! by a single writer task, which makes that serialisation cheap.
//!
//! Tailing does not poll: the writer issues `NOTIFY imlog_log` in its
//! transaction and every process LISTENs; readers wait on that (with a slow
//! fallback poll should the listening connection be down).

use crate::{AppendRecord, EventLog, LogError, LogReader, ReadFrom, Record, TopicNames};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use imlog_events::{partition_for_key, LogPosition, Topic};
use imlog_postgres::{connect_pool, migrate, spawn_payload_listener, Migration, Pool};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

const SCHEMA: &str = "imlog_log";
/// Also named in `APPEND`.
const CHANNEL: &str = "imlog_log";
/// Most records one append transaction carries.
const MAX_BATCH: usize = 1000;
/// Appends waiting for the writer; callers beyond this wait (backpressure).
const QUEUE: usize = 10_000;
/// How often a waiting reader checks anyway, in case a notification was lost.
const FALLBACK_POLL: Duration = Duration::from_secs(1);

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "log records and partitions",
    sql: r#"
        CREATE TABLE partitions (
            topic text NOT NULL,
            partition integer NOT NULL,
            next_offset bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (topic, partition)
        );
        CREATE TABLE records (
            topic text NOT NULL,
            partition integer NOT NULL,
            "offset" bigint NOT NULL,
            key text NOT NULL,
            payload bytea NOT NULL,
            appended_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (topic, partition, "offset")
        );
    "#,
}];

pub struct PgLog {
    pool: Pool,
    names: TopicNames,
    appends: mpsc::Sender<PendingAppend>,
    appended: watch::Receiver<Appended>,
    listener: JoinHandle<()>,
}

/// How many appends each topic has been told of (by index in `Topic::ALL`):
/// a reader wakes only when one of its own topics moved, so a busy topic does
/// not make the readers of every other one query.
type Appended = [u64; Topic::ALL.len()];

fn topic_index(topic: Topic) -> usize {
    Topic::ALL.iter().position(|&t| t == topic).unwrap_or(0)
}

/// Counts a notification: its payload names the topic appended to (empty,
/// from an older writer, or a reconnect: every topic, as anything may have
/// been missed); topics of another deployment's prefix are ignored.
fn heard(appended: &watch::Sender<Appended>, names: &TopicNames, payload: Option<&str>) {
    match payload.filter(|p| !p.is_empty()) {
        None => appended.send_modify(|counts| counts.iter_mut().for_each(|c| *c += 1)),
        Some(name) => {
            if let Some(topic) = names.topic(name) {
                appended.send_modify(|counts| counts[topic_index(topic)] += 1);
            }
        }
    }
}

struct PendingAppend {
    topic: String,
    partition: i32,
    key: String,
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<LogPosition, LogError>>,
}

impl PgLog {
    /// Connects, creates the log's schema if needed, and starts the writer and
    /// the listener.
    pub async fn connect(url: &str, topic_prefix: &str) -> Result<PgLog, LogError> {
        let pool = connect_pool(url, 8, None).map_err(|e| LogError::Fatal(e.to_string()))?;
        {
            let mut client = pool
                .get()
                .await
                .map_err(|e| LogError::Unavailable(e.to_string()))?;
            migrate(&mut client, SCHEMA, MIGRATIONS)
                .await
                .map_err(|e| LogError::Fatal(format!("migrating the log schema: {e}")))?;
        }
        let (bump, appended) = watch::channel(Appended::default());
        let bump = Arc::new(bump);
        let names = TopicNames::new(topic_prefix);
        let (appends, queue) = mpsc::channel(QUEUE);
        tokio::spawn(write_appends(
            pool.clone(),
            queue,
            bump.clone(),
            names.clone(),
        ));
        let heard_names = names.clone();
        let listener = spawn_payload_listener(
            url.to_owned(),
            CHANNEL,
            Arc::new(move |payload| heard(&bump, &heard_names, payload)),
        );
        Ok(PgLog {
            pool,
            names,
            appends,
            appended,
            listener,
        })
    }
}

type Reply = oneshot::Receiver<Result<LogPosition, LogError>>;

impl PgLog {
    async fn enqueue(
        &self,
        topic: Topic,
        partition: i32,
        key: String,
        payload: Vec<u8>,
    ) -> Result<Reply, LogError> {
        if !(0..topic.partitions()).contains(&partition) {
            return Err(LogError::Fatal(format!(
                "{topic} has no partition {partition}"
            )));
        }
        let (reply, result) = oneshot::channel();
        self.appends
            .send(PendingAppend {
                topic: self.names.name(topic),
                partition,
                key,
                payload,
                reply,
            })
            .await
            .map_err(|_| LogError::Unavailable("log writer stopped".into()))?;
        Ok(result)
    }
}

async fn await_reply(reply: Reply) -> Result<LogPosition, LogError> {
    reply
        .await
        .map_err(|_| LogError::Unavailable("log writer stopped".into()))?
}

impl Drop for PgLog {
    fn drop(&mut self) {
        // The writer stops by itself once `appends` is dropped.
        self.listener.abort();
    }
}

#[async_trait]
impl EventLog for PgLog {
    async fn ensure_topics(&self) -> Result<(), LogError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        for topic in Topic::ALL {
            let name = self.names.name(topic);
            client
                .execute(
                    "INSERT INTO imlog_log.partitions (topic, partition)
                     SELECT $1, p FROM generate_series(0, $2 - 1) AS p
                     ON CONFLICT DO NOTHING",
                    &[&name, &topic.partitions()],
                )
                .await
                .map_err(db_error)?;
            let count: i64 = client
                .query_one(
                    "SELECT count(*) FROM imlog_log.partitions WHERE topic = $1",
                    &[&name],
                )
                .await
                .map_err(db_error)?
                .get(0);
            if count != i64::from(topic.partitions()) {
                return Err(LogError::Fatal(format!(
                    "topic {name} has {count} partitions, this build needs {}",
                    topic.partitions()
                )));
            }
        }
        Ok(())
    }

    async fn append_all(&self, records: Vec<AppendRecord>) -> Vec<Result<LogPosition, LogError>> {
        // Queue them all in order first: the single writer keeps that order.
        let mut replies = Vec::with_capacity(records.len());
        for r in records {
            let partition = partition_for_key(r.key.as_bytes(), r.topic.partitions());
            replies.push(self.enqueue(r.topic, partition, r.key, r.payload).await);
        }
        let mut results = Vec::with_capacity(replies.len());
        for reply in replies {
            results.push(match reply {
                Ok(reply) => await_reply(reply).await,
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
        let reply = self
            .enqueue(topic, partition, key.to_owned(), payload)
            .await?;
        await_reply(reply).await
    }

    async fn end_offsets(&self, topic: Topic) -> Result<Vec<i64>, LogError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query(
                "SELECT next_offset FROM imlog_log.partitions WHERE topic = $1 ORDER BY partition",
                &[&self.names.name(topic)],
            )
            .await
            .map_err(db_error)?;
        if rows.len() != topic.partitions() as usize {
            return Err(LogError::Fatal(format!(
                "topic {topic} is missing; was ensure_topics run?"
            )));
        }
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn reader(&self, from: Vec<ReadFrom>) -> Result<Box<dyn LogReader>, LogError> {
        let topics: std::collections::BTreeSet<usize> =
            from.iter().map(|f| topic_index(f.topic)).collect();
        Ok(Box::new(PgReader {
            pool: self.pool.clone(),
            names: self.names.clone(),
            next: from,
            topics: topics.into_iter().collect(),
            appended: self.appended.clone(),
            caught_up: None,
        }))
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

/// The single writer: takes whatever appends are queued (up to `MAX_BATCH`),
/// writes them in one transaction, answers each caller.
async fn write_appends(
    pool: Pool,
    mut queue: mpsc::Receiver<PendingAppend>,
    bump: Arc<watch::Sender<Appended>>,
    names: TopicNames,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let started = std::time::Instant::now();
        let results = write_batch(&pool, &batch).await;
        metrics::histogram!("imlog_log_append_batch_seconds", "backend" => "postgres")
            .record(started.elapsed().as_secs_f64());
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            tracing::warn!(error = %e, records = batch.len(), "log append failed");
        }
        // Readers in this process need not wait for the notification.
        let written: std::collections::BTreeSet<&str> = batch
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(p, _)| p.topic.as_str())
            .collect();
        for topic in written {
            heard(&bump, &names, Some(topic));
        }
        for (pending, result) in batch.drain(..).zip(results) {
            let _ = pending.reply.send(result);
        }
    }
}

/// Appends a batch in one statement (one round trip, its own transaction):
/// lock the partitions' rows in a fixed order (so concurrent writers never
/// deadlock), bump their `next_offset`, insert the records at the offsets
/// taken, notify readers.
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
        RETURNING p.topic, p.partition, l.next_offset AS base
    ), inserted AS (
        INSERT INTO imlog_log.records (topic, partition, "offset", key, payload)
        SELECT r.topic, r.partition, b.base + r.idx, r.key, r.payload
        FROM unnest($4::text[], $5::integer[], $6::bigint[], $7::text[], $8::bytea[])
             AS r(topic, partition, idx, key, payload)
        JOIN bumped b ON b.topic = r.topic AND b.partition = r.partition
    )
    SELECT b.topic, b.partition, b.base, pg_notify('imlog_log', b.topic) FROM bumped b
"#;

async fn write_batch(pool: &Pool, batch: &[PendingAppend]) -> Vec<Result<LogPosition, LogError>> {
    match try_write_batch(pool, batch).await {
        Ok(positions) => positions,
        Err(e) => batch.iter().map(|_| Err(e.clone())).collect(),
    }
}

async fn try_write_batch(
    pool: &Pool,
    batch: &[PendingAppend],
) -> Result<Vec<Result<LogPosition, LogError>>, LogError> {
    // Each record's index within its partition's share of the batch.
    let mut counts: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    let mut indices = Vec::with_capacity(batch.len());
    for p in batch {
        let n = counts.entry((p.topic.as_str(), p.partition)).or_default();
        indices.push(*n);
        *n += 1;
    }
    let wanted_topics: Vec<&str> = counts.keys().map(|(t, _)| *t).collect();
    let wanted_partitions: Vec<i32> = counts.keys().map(|(_, p)| *p).collect();
    let wanted_counts: Vec<i64> = counts.values().copied().collect();
    let topics: Vec<&str> = batch.iter().map(|p| p.topic.as_str()).collect();
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
    Ok(batch
        .iter()
        .zip(indices)
        .map(
            |(p, index)| match bases.get(&(p.topic.clone(), p.partition)) {
                Some(base) => Ok(LogPosition {
                    partition: p.partition,
                    offset: base + index,
                }),
                None => Err(LogError::Fatal(format!(
                    "unknown topic partition {}/{}; was ensure_topics run?",
                    p.topic, p.partition
                ))),
            },
        )
        .collect())
}

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

struct PgReader {
    pool: Pool,
    names: TopicNames,
    next: Vec<ReadFrom>,
    /// Which topics (indices into `Appended`) this reader reads.
    topics: Vec<usize>,
    appended: watch::Receiver<Appended>,
    /// The count of appends to our topics before the last read, if that
    /// read reached the end of every partition.
    caught_up: Option<u64>,
}

impl PgReader {
    /// How many appends this reader's own topics have been told of.
    fn mine(&self, counts: &Appended) -> u64 {
        self.topics.iter().map(|&i| counts[i]).sum()
    }
}

#[async_trait]
impl LogReader for PgReader {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut first = true;
        loop {
            let counts = *self.appended.borrow_and_update();
            let seen = self.mine(&counts);
            // Nothing was appended to our topics since a read that reached
            // the end: do not ask again, wait for the next notification.
            let read_now = !(first && self.caught_up == Some(seen));
            first = false;
            if read_now {
                let (records, reached_end) = self.read(max).await?;
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
                        let counts = *self.appended.borrow_and_update();
                        if self.mine(&counts) != seen {
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
    /// The next records, and whether the read reached the end of every
    /// partition (no partition filled its share).
    async fn read(&mut self, max: usize) -> Result<(Vec<Record>, bool), LogError> {
        if self.next.is_empty() {
            return Ok((Vec::new(), true));
        }
        // Each partition gets a fair share, so one busy partition cannot
        // starve the others; every share is a prefix, so nothing is skipped.
        let per_partition = (max / self.next.len()).max(1) as i64;
        let ordinals: Vec<i32> = (0..self.next.len() as i32).collect();
        let topics: Vec<String> = self.next.iter().map(|f| self.names.name(f.topic)).collect();
        let partitions: Vec<i32> = self.next.iter().map(|f| f.partition).collect();
        let offsets: Vec<i64> = self.next.iter().map(|f| f.offset).collect();
        let client = self.pool.get().await.map_err(unavailable)?;
        let statement = client.prepare_cached(READ).await.map_err(db_error)?;
        let rows = client
            .query(
                &statement,
                &[&ordinals, &topics, &partitions, &offsets, &per_partition],
            )
            .await
            .map_err(db_error)?;
        let mut records = Vec::with_capacity(rows.len());
        let mut per_ord = vec![0i64; self.next.len()];
        for row in rows {
            let ord: i32 = row.get(0);
            per_ord[ord as usize] += 1;
            let from = &mut self.next[ord as usize];
            let offset: i64 = row.get(1);
            debug_assert_eq!(offset, from.offset, "the log has a gap");
            from.offset = offset + 1;
            let appended_at: DateTime<Utc> = row.get(4);
            records.push(Record {
                topic: from.topic,
                partition: from.partition,
                offset,
                key: row.get(2),
                payload: row.get(3),
                appended_at,
            });
        }
        let reached_end = per_ord.iter().all(|&n| n < per_partition);
        Ok((records, reached_end))
    }
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

/// Connection trouble, conflicts and resource limits are worth a retry;
/// anything else is a bug or a misconfiguration.
fn db_error(e: tokio_postgres::Error) -> LogError {
    let retriable = match e.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            matches!(class, "08" | "40" | "53" | "57")
        }
    };
    if retriable {
        LogError::Unavailable(e.to_string())
    } else {
        LogError::Fatal(e.to_string())
    }
}
