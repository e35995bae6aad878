//! Runs projections over the log, exactly once.
//!
//! Each batch is applied in one Postgres transaction that also advances the
//! projection's offsets, guarded by the offsets it started from: if another
//! projector advanced them meanwhile, the transaction changes nothing and
//! this runner reloads. Offsets are never committed to the log backend; a
//! restarted projector resumes from Postgres.

use crate::{Projection, ProjectionError};
use imlog_events::{DecodeError, Envelope, Topic};
use imlog_log::{ReadFrom, Record, SharedLog};
use imlog_postgres::Prepared;
use imlog_postgres::{run_leased, spawn_listener, Pool, Worker};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_postgres::types::Type;
use tokio_util::sync::CancellationToken;

/// Notified in every projector transaction; readers waiting for their writes
/// LISTEN to it.
pub const PROJECTED_CHANNEL: &str = "imlog_projected";
/// The advisory lock between projector batches (shared: they run side by
/// side) and `replay --swap` (exclusive): a batch resolves its tables by
/// `search_path` statement by statement, so a swap in the middle of one
/// would put its rows in the retired schema and its offsets in the new.
pub const SWAP_LOCK: i64 = 0x696d_6c6f_675f_7377; // "imlog_sw"
/// Notified by `replay --swap` once the new read model is in place.
pub const SWAPPED_CHANNEL: &str = "imlog_swapped";

const BATCH: usize = 500;
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// A live projection starts batches at most this often while records keep
/// coming, unless it says otherwise (`Projection::linger`): a record
/// arriving when it was idle is applied at once, the ones behind it share a
/// transaction instead of paying one each.
pub const LINGER: Duration = Duration::from_millis(2);
const LAG_EVERY: Duration = Duration::from_secs(5);

/// Next offset per topic partition.
pub type Offsets = BTreeMap<(Topic, i32), i64>;

/// The partitions one runner of a projection applies: those whose number
/// modulo `count` is `index`. Every record of a partition goes through one
/// runner, in log order; a projection with `shards() == count` runs `count`
/// of them side by side ([`Projection::shards`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: i32,
    pub count: i32,
}

impl Shard {
    /// Every runner of these projections: each with each of its shards.
    pub fn runners(
        projections: Vec<&'static dyn Projection>,
    ) -> impl Iterator<Item = (&'static dyn Projection, Shard)> {
        projections.into_iter().flat_map(|projection| {
            let count = projection.shards().max(1);
            (0..count).map(move |index| (projection, Shard { index, count }))
        })
    }

    fn owns(self, partition: i32) -> bool {
        partition.rem_euclid(self.count) == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// When a runner stops.
#[derive(Clone)]
pub enum Until {
    /// On shutdown (a live projector). A bump of `swaps` (`replay --swap`
    /// put another read model in place) reloads the offsets from it.
    Cancelled(CancellationToken, watch::Receiver<u64>),
    /// Once every partition reached these offsets (a rebuild).
    Reached(Arc<Offsets>),
}

/// Runs every projection until `shutdown`. A projection applies only while
/// this process holds its lease; otherwise it stands by and retries. A
/// failing projection is restarted from its stored offsets after a pause,
/// the others carry on. (Even without the lease, the offset guard in
/// `apply_batch` keeps two appliers exactly-once; the lease keeps them from
/// doing the work twice.)
pub async fn run_all(
    pool: Pool,
    lease_url: String,
    schema: String,
    log: SharedLog,
    projections: Vec<&'static dyn Projection>,
    shutdown: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    let (swapped, swaps) = watch::channel(0);
    let listener = spawn_listener(lease_url.clone(), SWAPPED_CHANNEL, Arc::new(swapped));
    for (projection, shard) in Shard::runners(projections) {
        let (pool, log, shutdown) = (pool.clone(), log.clone(), shutdown.clone());
        let (lease_url, schema, swaps) = (lease_url.clone(), schema.clone(), swaps.clone());
        tasks.spawn(async move {
            let name = projection.name();
            let until = Until::Cancelled(shutdown.clone(), swaps);
            let key = match shard.count {
                1 => format!("imlog.projection.{schema}.{name}"),
                _ => format!(
                    "imlog.projection.{schema}.{name}.{}of{}",
                    shard.index, shard.count
                ),
            };
            let worker = Worker {
                kind: "projection",
                name,
            };
            run_leased(&lease_url, &key, worker, &shutdown, || {
                run(&pool, &log, projection, shard, &until)
            })
            .await;
        });
    }
    while tasks.join_next().await.is_some() {}
    listener.abort();
}

/// Loads the offsets of the projection's partitions in `shard` and applies
/// the log from there until `until`. Returns an error on any failure;
/// nothing half-applied remains.
pub async fn run(
    pool: &Pool,
    log: &SharedLog,
    projection: &dyn Projection,
    shard: Shard,
    until: &Until,
) -> Result<(), ProjectionError> {
    let mut next = load_offsets(pool, projection, shard).await?;
    let mut reader = log.reader(read_from(&next)).await?;
    let mut swaps = match until {
        Until::Cancelled(_, swaps) => Some(swaps.clone()),
        Until::Reached(_) => None,
    };
    let name = projection.name();
    let shard_label = shard.to_string();
    let mut last_lag: Option<Instant> = None;
    let mut last_appended = None;
    loop {
        if let Until::Reached(target) = until {
            if reached(&next, target) {
                return Ok(());
            }
        }
        if last_lag.is_none_or(|at| at.elapsed() >= LAG_EVERY) {
            record_lag(log, name, shard, &next, last_appended).await;
            last_lag = Some(Instant::now());
        }
        let batch = match until {
            Until::Cancelled(shutdown, _) => tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = swapped(&mut swaps) => {
                    // The swapped-in read model has offsets of its own.
                    next = load_offsets(pool, projection, shard).await?;
                    reader = log.reader(read_from(&next)).await?;
                    tracing::info!(projection = name, "the read model was swapped; continuing from its offsets");
                    continue;
                }
                batch = reader.next_batch(BATCH, IDLE_WAIT) => batch?,
            },
            Until::Reached(_) => reader.next_batch(BATCH, IDLE_WAIT).await?,
        };
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        apply_batch(pool, projection, &batch, &mut next).await?;
        last_appended = batch.last().map(|r| r.appended_at);
        metrics::counter!("imlog_projection_records_total", "projection" => name, "shard" => shard_label.clone())
            .increment(batch.len() as u64);
        metrics::histogram!("imlog_projection_batch_seconds", "projection" => name, "shard" => shard_label.clone())
            .record(started.elapsed().as_secs_f64());
        if matches!(until, Until::Cancelled(..)) && batch.len() < BATCH {
            tokio::time::sleep_until((started + projection.linger()).into()).await;
        }
    }
}

fn read_from(next: &Offsets) -> Vec<ReadFrom> {
    next.iter()
        .map(|(&(topic, partition), &offset)| ReadFrom {
            topic,
            partition,
            offset,
        })
        .collect()
}

/// Resolves when `replay --swap` announced a new read model.
async fn swapped(swaps: &mut Option<watch::Receiver<u64>>) {
    match swaps {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

/// The stored next offset of every partition of `shard` the projection
/// consumes (0 where it never applied anything).
pub async fn load_offsets(
    pool: &Pool,
    projection: &dyn Projection,
    shard: Shard,
) -> Result<Offsets, ProjectionError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = $1",
            &[&projection.name()],
        )
        .await?;
    let mut offsets = Offsets::new();
    for &topic in projection.topics() {
        for partition in (0..topic.partitions()).filter(|&p| shard.owns(p)) {
            offsets.insert((topic, partition), 0);
        }
    }
    for row in rows {
        let topic: String = row.get(0);
        let partition: i32 = row.get(1);
        if let Some(topic) = Topic::from_base_name(&topic).filter(|_| shard.owns(partition)) {
            offsets.insert((topic, partition), row.get(2));
        }
    }
    Ok(offsets)
}

/// Applies a batch and advances the offsets, in one transaction. A record
/// the database refuses as data (SQLSTATE class 22/23: a poison record) makes
/// the batch run again record by record, skipping just that record, so one
/// bad event can never stall a projection; the skip is deterministic, so a
/// replay skips it too.
async fn apply_batch(
    pool: &Pool,
    projection: &dyn Projection,
    batch: &[Record],
    next: &mut Offsets,
) -> Result<(), ProjectionError> {
    let name = projection.name();
    let decoded = decode(name, batch)?;
    match apply_in_transaction(pool, projection, batch, &decoded, next, false).await {
        Err(ProjectionError::Db(e)) if is_data_error(&e) => {
            tracing::warn!(projection = name, error = %e, "a record was refused; applying the batch one by one");
            apply_in_transaction(pool, projection, batch, &decoded, next, true).await
        }
        result => result,
    }
}

/// The records of a batch that can be applied. Malformed records are skipped
/// (deterministically); a record from a newer build (unknown type, future
/// version) stops the projection instead, so that it is not skipped for good:
/// a projector of the newer build will take the lease and apply it.
fn decode<'r>(
    name: &'static str,
    batch: &'r [Record],
) -> Result<Vec<(&'r Record, Envelope)>, ProjectionError> {
    let mut decoded = Vec::with_capacity(batch.len());
    for record in batch {
        match Envelope::decode(&record.payload) {
            Ok(envelope) => decoded.push((record, envelope)),
            Err(e @ (DecodeError::UnknownType(_) | DecodeError::FutureVersion { .. })) => {
                return Err(ProjectionError::Other(format!(
                    "{}/{}@{} was written by a newer imlog ({e}); upgrade this projector",
                    record.topic, record.partition, record.offset
                )));
            }
            Err(e) => {
                metrics::counter!("imlog_projection_skipped_total", "projection" => name)
                    .increment(1);
                tracing::error!(projection = name, topic = %record.topic, partition = record.partition,
                    offset = record.offset, error = %e, "skipping a malformed record");
            }
        }
    }
    Ok(decoded)
}

/// SQLSTATE classes 22 (data exception) and 23 (integrity constraint).
fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| matches!(&c.code()[..2], "22" | "23"))
}

async fn apply_in_transaction(
    pool: &Pool,
    projection: &dyn Projection,
    batch: &[Record],
    decoded: &[(&Record, Envelope)],
    next: &mut Offsets,
    one_by_one: bool,
) -> Result<(), ProjectionError> {
    let name = projection.name();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // First, so that every table of the batch is named after any swap.
    // Whether the commit waits for the disk is the projection's choice
    // (`Projection::waits_for_disk`): one that does not loses, in a crash,
    // this transaction's offsets with its rows, never one without the other.
    // Its statements are key look-ups and set-based writes over arrays,
    // whose plan does not depend on the values: planned once per connection
    // (a plan for the values at hand would be re-made every batch, as the
    // planner sizes each array).
    let first = if projection.waits_for_disk() {
        "SELECT pg_advisory_xact_lock_shared($1),
                set_config('plan_cache_mode', 'force_generic_plan', true)"
    } else {
        "SELECT pg_advisory_xact_lock_shared($1),
                set_config('plan_cache_mode', 'force_generic_plan', true),
                set_config('synchronous_commit', 'off', true)"
    };
    tx.query_prepared(first, &[(&SWAP_LOCK, Type::INT8)])
        .await?;
    if one_by_one {
        for one in decoded.chunks(1) {
            tx.batch_execute("SAVEPOINT record").await?;
            match projection.apply_batch(&tx, one).await {
                Ok(()) => tx.batch_execute("RELEASE SAVEPOINT record").await?,
                Err(ProjectionError::Db(e)) if is_data_error(&e) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT record").await?;
                    let record = one[0].0;
                    metrics::counter!("imlog_projection_poison_total", "projection" => name)
                        .increment(1);
                    tracing::error!(projection = name, topic = %record.topic, partition = record.partition,
                        offset = record.offset, error = %e, "skipping a record the database refuses");
                }
                Err(e) => return Err(e),
            }
        }
    } else {
        projection.apply_batch(&tx, decoded).await?;
    }
    imlog_postgres::pausepoint(&format!("projection.{name}.before_offsets")).await;
    let mut advanced: BTreeMap<(Topic, i32), (i64, chrono::DateTime<chrono::Utc>)> =
        BTreeMap::new();
    for record in batch {
        advanced.insert(
            (record.topic, record.partition),
            (record.offset + 1, record.appended_at),
        );
    }
    // Compare-and-set, every partition of the batch in one statement: each
    // row must say the offset this runner started from; a missing row only
    // when nothing was applied yet (a swapped-in read model without a row
    // for a partition must not take offsets it never applied).
    let topics: Vec<&str> = advanced.keys().map(|(t, _)| t.base_name()).collect();
    let partitions: Vec<i32> = advanced.keys().map(|&(_, p)| p).collect();
    let new_next: Vec<i64> = advanced.values().map(|&(n, _)| n).collect();
    let appended_at: Vec<chrono::DateTime<chrono::Utc>> =
        advanced.values().map(|&(_, at)| at).collect();
    let expected: Vec<i64> = advanced
        .keys()
        .map(|key| next.get(key).copied().unwrap_or(0))
        .collect();
    let set: i64 = tx
        .query_prepared(
            "WITH batch AS (
                 SELECT * FROM unnest($2::text[], $3::integer[], $4::bigint[], $5::timestamptz[], $6::bigint[])
                     AS b(topic, partition, next_offset, last_appended_at, expected)
             ), updated AS (
                 UPDATE projection_offsets o
                 SET next_offset = b.next_offset, last_appended_at = b.last_appended_at
                 FROM batch b
                 WHERE o.projection = $1 AND o.topic = b.topic AND o.partition = b.partition
                   AND o.next_offset = b.expected
                 RETURNING 1
             ), inserted AS (
                 INSERT INTO projection_offsets (projection, topic, partition, next_offset, last_appended_at)
                 SELECT $1, topic, partition, next_offset, last_appended_at FROM batch WHERE expected = 0
                 ON CONFLICT (projection, topic, partition) DO NOTHING
                 RETURNING 1
             )
             SELECT (SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted), pg_notify($7, $1)",
            &[
                (&name, Type::TEXT),
                (&topics, Type::TEXT_ARRAY),
                (&partitions, Type::INT4_ARRAY),
                (&new_next, Type::INT8_ARRAY),
                (&appended_at, Type::TIMESTAMPTZ_ARRAY),
                (&expected, Type::INT8_ARRAY),
                (&PROJECTED_CHANNEL, Type::TEXT),
            ],
        )
        .await?
        .first()
        .map_or(0, |row| row.get(0));
    if set != advanced.len() as i64 {
        return Err(ProjectionError::Conflict { projection: name });
    }
    tx.commit().await?;
    for (key, (new_next, _)) in advanced {
        next.insert(key, new_next);
    }
    Ok(())
}

fn reached(next: &Offsets, target: &Offsets) -> bool {
    next.iter()
        .all(|(key, &offset)| offset >= target.get(key).copied().unwrap_or(0))
}

async fn record_lag(
    log: &SharedLog,
    name: &'static str,
    shard: Shard,
    next: &Offsets,
    last_appended: Option<chrono::DateTime<chrono::Utc>>,
) {
    let mut behind = 0i64;
    let topics: std::collections::BTreeSet<Topic> = next.keys().map(|(t, _)| *t).collect();
    for topic in topics {
        match log.end_offsets(topic).await {
            Ok(ends) => {
                for (partition, end) in ends.into_iter().enumerate() {
                    if let Some(at) = next.get(&(topic, partition as i32)) {
                        behind += (end - at).max(0);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read end offsets for lag");
                return;
            }
        }
    }
    let seconds = match (behind, last_appended) {
        (0, _) | (_, None) => 0.0,
        (_, Some(at)) => (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0,
    };
    let shard = shard.to_string();
    metrics::gauge!("imlog_projection_lag_events", "projection" => name, "shard" => shard.clone())
        .set(behind as f64);
    metrics::gauge!("imlog_projection_lag_seconds", "projection" => name, "shard" => shard)
        .set(seconds);
}
