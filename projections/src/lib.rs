//! Projections: consumers of the log that build the read model in Postgres.
//!
//! A [`Projection`] applies records to its own tables. The [`runner`] feeds it
//! batches and, in the same transaction, stores the next offset per
//! (projection, topic, partition), so every record takes effect exactly once
//! however often a projector is killed. [`queries`] read the tables;
//! [`progress`] lets a reader wait until a write it made is projected;
//! [`replay`] rebuilds everything from offset 0 into a fresh schema.

mod accounts;
mod messages;
pub mod progress;
pub mod queries;
pub mod replay;
pub mod runner;
mod threads;

use async_trait::async_trait;
use imlog_events::{Envelope, Topic};
use imlog_log::Record;
use imlog_postgres::Migration;
use std::sync::Arc;
use tokio_postgres::Transaction;

pub use accounts::Accounts;
pub use messages::Messages;
pub use threads::Threads;

/// The schema the live read model lives in.
pub const LIVE_SCHEMA: &str = "imlog";

/// Read-model migrations; applied into whichever schema a pool points at.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "read model",
    sql: include_str!("../migrations/0001_read_model.sql"),
}];

/// Every table of the read model (for replay's comparison).
pub const TABLES: &[&str] = &[
    "projection_offsets",
    "users",
    "sessions",
    "threads",
    "private_threads",
    "thread_members",
    "messages",
    "thread_seqs",
];

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Log(#[from] imlog_log::LogError),
    #[error(transparent)]
    Pg(#[from] imlog_postgres::PgError),
    #[error("another projector advanced {projection} concurrently; reloading its offsets")]
    Conflict { projection: &'static str },
    #[error("{0}")]
    Other(String),
}

#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name: the key of its offsets.
    fn name(&self) -> &'static str;
    /// The topics it consumes.
    fn topics(&self) -> &'static [Topic];
    /// Applies one record inside the batch's transaction. The effect must be
    /// a function of the record and the projection's own tables, so a replay
    /// produces the same rows.
    async fn apply(
        &self,
        tx: &Transaction<'_>,
        record: &Record,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError>;

    /// Applies a batch in log order (per partition). Projections with many
    /// records per batch override this with set-based SQL; the effect must
    /// equal applying the records one by one.
    async fn apply_batch(
        &self,
        tx: &Transaction<'_>,
        batch: &[(&Record, Envelope)],
    ) -> Result<(), ProjectionError> {
        for (record, envelope) in batch {
            self.apply(tx, record, envelope).await?;
        }
        Ok(())
    }
}

/// Every projection of the read model.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(Accounts), Arc::new(Threads), Arc::new(Messages)]
}

/// Which projection consumes `topic` (for read-your-writes waits).
pub fn projection_of(topic: Topic) -> Option<&'static str> {
    // On the read-your-writes path of every query: computed once.
    static BY_TOPIC: std::sync::OnceLock<Vec<(Topic, &'static str)>> = std::sync::OnceLock::new();
    BY_TOPIC
        .get_or_init(|| {
            all()
                .iter()
                .flat_map(|p| p.topics().iter().map(|&t| (t, p.name())))
                .collect()
        })
        .iter()
        .find(|(t, _)| *t == topic)
        .map(|(_, name)| *name)
}
