//! Rebuilding the read model from offset 0.
//!
//! A rebuild creates a fresh schema, applies the migrations into it, and runs
//! every projection there until it reaches the log's end as of the start.
//! `swap` then renames schemas in one transaction: queries use unqualified
//! names resolved through `search_path`, and Postgres re-plans a kept
//! prepared statement once that path resolves to another schema, so they
//! move to the new tables at once; the retired schema is kept for
//! inspection.
//! Because projection offsets live in the same schema as the tables, the
//! live projector simply continues from the rebuilt schema's offsets.

use crate::runner::{self, Offsets, Until};
use crate::{migrations, tables, ProjectionError};
use imlog_events::Topic;
use imlog_log::SharedLog;
use imlog_postgres::{connect_pool, migrate, validate_schema_name};
use std::sync::Arc;
use tokio_postgres::GenericClient;

/// Builds the whole read model from offset 0 into `schema`, which must not
/// exist yet. Returns the offsets it caught up to.
pub async fn rebuild(url: &str, log: &SharedLog, schema: &str) -> Result<Offsets, ProjectionError> {
    validate_schema_name(schema)?;
    let pool = connect_pool(url, 4, Some(schema))?;
    {
        let mut client = pool.get().await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
            .await?
            .is_some();
        if exists {
            return Err(ProjectionError::Other(format!(
                "schema {schema} already exists; a rebuild needs a fresh schema"
            )));
        }
        migrate(&mut client, schema, &migrations()).await?;
    }
    let mut target = Offsets::new();
    for topic in Topic::ALL {
        for (partition, end) in log.end_offsets(topic).await?.into_iter().enumerate() {
            target.insert((topic, partition as i32), end);
        }
    }
    let until = Until::Reached(Arc::new(target.clone()));
    let runs = runner::Shard::runners(crate::all()).map(|(projection, shard)| {
        let (pool, until) = (pool.clone(), until.clone());
        async move { runner::run(&pool, log, projection, shard, &until).await }
    });
    for result in futures::future::join_all(runs).await {
        result?;
    }
    Ok(target)
}

/// Makes `rebuilt` the live read model; the old one is renamed to `retired`.
/// Projector batches are excluded while the schemas are renamed
/// ([`runner::SWAP_LOCK`]).
pub async fn swap(
    url: &str,
    live: &str,
    rebuilt: &str,
    retired: &str,
) -> Result<(), ProjectionError> {
    for s in [live, rebuilt, retired] {
        validate_schema_name(s)?;
    }
    let pool = connect_pool(url, 1, None)?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Waits for projector batches in flight and holds new ones back until
    // the renames commit: no batch straddles the swap.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&runner::SWAP_LOCK])
        .await?;
    tx.batch_execute(&format!(
        "ALTER SCHEMA {live} RENAME TO {retired}; ALTER SCHEMA {rebuilt} RENAME TO {live};"
    ))
    .await?;
    // Live projectors reload their offsets from the new tables (on commit).
    tx.execute("SELECT pg_notify($1, '')", &[&runner::SWAPPED_CHANNEL])
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Tables whose contents differ between two read-model schemas (empty when
/// they are equal). `projection_offsets.last_appended_at` is left out: it is
/// the backend's append time, which a `log copy` does not preserve.
pub async fn differences(
    c: &impl GenericClient,
    a: &str,
    b: &str,
) -> Result<Vec<String>, ProjectionError> {
    validate_schema_name(a)?;
    validate_schema_name(b)?;
    let mut differing = Vec::new();
    for table in tables() {
        let columns = match table {
            "projection_offsets" => "projection, topic, partition, next_offset",
            _ => "*",
        };
        let sql = format!(
            "SELECT (SELECT count(*) FROM ((SELECT {columns} FROM {a}.{table} EXCEPT ALL SELECT {columns} FROM {b}.{table})
                                           UNION ALL
                                           (SELECT {columns} FROM {b}.{table} EXCEPT ALL SELECT {columns} FROM {a}.{table})) d)"
        );
        let count: i64 = c.query_one(&sql, &[]).await?.get(0);
        if count != 0 {
            differing.push(format!("{table}: {count} rows differ"));
        }
    }
    Ok(differing)
}
