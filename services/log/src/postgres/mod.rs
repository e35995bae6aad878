//! The embedded log backend: records in a Postgres table.
//!
//! Offsets must become visible in order, or a tailing reader could pass offset
//! 8 before 7 commits and never see 7. So an append takes the next offsets by
//! updating the partition's row (`next_offset`), whose row lock is held until
//! the transaction commits: appenders to one partition commit one after the
//! other, in offset order. Appends are grouped into one transaction per batch
//! by a single writer (a thread of its own), which makes that serialisation
//! cheap.
//!
//! Tailing does not poll: the writer issues `NOTIFY imlog_log` in its
//! transaction and every process LISTENs; readers wait on that (with a slow
//! fallback poll should the listening connection be down) — [`heard`].
//!
//! Readers in one process share what it appended or read (`crate::recent`): a
//! record is fetched from the table about once per process, not once per
//! reader, and a reader that has in memory everything up to the end it
//! heard of does not ask the table at all ([`reader`]).

use crate::{AppendRecord, EventLog, LogError, LogReader, ReadFrom, TopicNames};
use async_trait::async_trait;
use imlog_events::{partition_for_key, LogPosition, Topic};
use imlog_postgres::{connect_pool, migrate, spawn_payload_listener, Migration, Pool};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

mod heard;
mod reader;
mod writer;

use crate::recent::Recent;
use heard::{heard, Appended};
use reader::PgReader;
use writer::{await_reply, write_appends, PendingAppend, Reply};

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
    recent: Arc<Recent>,
    listener: JoinHandle<()>,
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
        let recent = Arc::new(Recent::default());
        spawn_writer(url, queue, bump.clone(), recent.clone())?;
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
            recent,
            listener,
        })
    }
}

/// Starts the single writer on a thread of its own, with a connection of
/// its own: every acknowledged message waits for it, and on a runtime busy
/// with thousands of connections each of its wake-ups (the query's answer,
/// then the writer) would queue behind them. On its own thread the kernel
/// runs it as soon as Postgres answers.
fn spawn_writer(
    url: &str,
    queue: mpsc::Receiver<PendingAppend>,
    bump: Arc<watch::Sender<Appended>>,
    recent: Arc<Recent>,
) -> Result<(), LogError> {
    let pool = connect_pool(url, 1, None).map_err(|e| LogError::Fatal(e.to_string()))?;
    let start = move || match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(write_appends(pool, queue, bump, recent)),
        // The queue is dropped with it: every append fails, "log writer stopped".
        Err(e) => tracing::error!(error = %e, "cannot start the log writer"),
    };
    std::thread::Builder::new()
        .name("imlog-log-writer".into())
        .spawn(start)
        .map_err(|e| LogError::Fatal(format!("starting the log writer: {e}")))?;
    Ok(())
}

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
                topic,
                name: self.names.name(topic),
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
        Ok(Box::new(PgReader::new(
            self.pool.clone(),
            self.names.clone(),
            from,
            self.appended.clone(),
            self.recent.clone(),
        )))
    }

    fn backend(&self) -> &'static str {
        "postgres"
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
