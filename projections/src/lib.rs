//! Projections: consumers of the log that build the read model in Postgres.
//!
//! One folder per feature holds its [`Projection`], its tables' SQL and its
//! queries (methods on the [`ReadModel`] handle), side by side; [`FEATURES`]
//! below is the one list that the runner, read-your-writes, migrations and
//! replay all read. The [`runner`] feeds each projection batches and, in the
//! same transaction, stores the next offset per (projection, topic,
//! partition), so every record takes effect exactly once however often a
//! projector is killed. [`progress`] lets a reader wait until a write it made
//! is projected; [`replay`] rebuilds everything from offset 0 into a fresh
//! schema.

pub mod accounts;
pub mod files;
pub mod friends;
pub mod messages;
pub mod progress;
mod read_model;
pub mod replay;
pub mod runner;
pub mod threads;

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use imlog_events::{Envelope, Topic};
use imlog_log::Record;
use imlog_postgres::Migration;
use std::time::Duration;

pub use read_model::{Page, ReadError, ReadModel};

/// The schema the live read model lives in.
pub const LIVE_SCHEMA: &str = "imlog";

/// A feature's part of the read model: its projection and the tables it
/// alone writes.
pub struct Feature {
    pub projection: &'static dyn Projection,
    pub tables: &'static [&'static str],
    /// Migrations after the baseline, with versions unique across features.
    pub migrations: &'static [Migration],
}

/// Every feature of the read model. Adding one is a folder and a line here.
pub const FEATURES: &[Feature] = &[
    accounts::FEATURE,
    threads::FEATURE,
    messages::FEATURE,
    friends::FEATURE,
    files::FEATURE,
];

/// Version 1: the tables of the backbone, written before features had
/// folders. Their SQL now lives in those folders; the version stays 1 so
/// that deployments that applied it never apply it again.
const BASELINE: Migration = Migration {
    version: 1,
    name: "read model",
    sql: concat!(
        include_str!("offsets.sql"),
        include_str!("accounts/schema.sql"),
        include_str!("threads/schema.sql"),
        include_str!("messages/schema.sql"),
    ),
};

/// Every read-model migration, in version order; applied into whichever
/// schema a pool points at.
pub fn migrations() -> Vec<Migration> {
    let mut all = vec![BASELINE];
    all.extend(FEATURES.iter().flat_map(|f| f.migrations.iter().copied()));
    all.sort_by_key(|m| m.version);
    all
}

/// Every table of the read model (for replay's comparison).
pub fn tables() -> Vec<&'static str> {
    std::iter::once("projection_offsets")
        .chain(FEATURES.iter().flat_map(|f| f.tables.iter().copied()))
        .collect()
}

/// Every projection.
pub fn all() -> Vec<&'static dyn Projection> {
    FEATURES.iter().map(|f| f.projection).collect()
}

/// The names of the projections that consume `topic`: a read-your-writes
/// wait on a position of `topic` waits for every one of them.
pub fn projections_of(topic: Topic) -> Vec<&'static str> {
    FEATURES
        .iter()
        .filter(|f| f.projection.topics().contains(&topic))
        .map(|f| f.projection.name())
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("{}", describe_db_error(.0))]
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

/// tokio-postgres says only "db error"; the server's message says why.
fn describe_db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("db error: {} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name: the key of its offsets.
    fn name(&self) -> &'static str;
    /// The topics it consumes.
    fn topics(&self) -> &'static [Topic];
    /// Whether its transactions wait for the WAL flush (the default). Rows
    /// that decide who may do what (sessions and logouts, members and
    /// mutes, friends) are kept durable, so that a Postgres crash cannot
    /// undo a logout or a removal even for a moment. A projection of many
    /// small records whose loss is only a delay may say no: a crash loses
    /// its last transactions together with their offsets, and the projector,
    /// restarting from its stored offsets, applies them again from the log.
    fn waits_for_disk(&self) -> bool {
        true
    }
    /// How often at most a live runner starts a batch while records keep
    /// coming (the first record after a quiet spell is applied at once, the
    /// ones behind it share the next transaction). Each batch costs its
    /// transaction's round trips whatever its size; a projection of many
    /// records may trade freshness for fewer of them.
    fn linger(&self) -> Duration {
        runner::LINGER
    }
    /// How many runners apply it side by side, each over its share of the
    /// partitions ([`runner::Shard`]). Only for a projection whose rows of
    /// one partition never depend on another partition's records.
    fn shards(&self) -> i32 {
        1
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_consistent() {
        let names: std::collections::HashSet<_> = all().iter().map(|p| p.name()).collect();
        assert_eq!(names.len(), FEATURES.len(), "projection names are unique");
        let tables = tables();
        let unique: std::collections::HashSet<_> = tables.iter().collect();
        assert_eq!(unique.len(), tables.len(), "each table has one owner");
        let versions: Vec<i32> = migrations().iter().map(|m| m.version).collect();
        let mut sorted = versions.clone();
        sorted.dedup();
        assert_eq!(versions, sorted, "migration versions are unique");
        for topic in [
            Topic::Users,
            Topic::Sessions,
            Topic::Threads,
            Topic::Messages,
            Topic::Social,
            Topic::Files,
        ] {
            assert!(!projections_of(topic).is_empty(), "{topic} is projected");
        }
    }
}
