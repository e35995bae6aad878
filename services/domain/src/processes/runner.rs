//! Runs process managers over the log. Each one's next offset per topic
//! partition lives in its own schema ([`SCHEMA`]), outside the read model:
//! a replay rebuilds projections, never re-runs processes.

use super::{ProcessError, ProcessManager, Trigger};
use crate::journal::Journal;
use imlog_events::{DecodeError, Envelope, Topic};
use imlog_log::{ReadFrom, Record};
use imlog_postgres::Prepared;
use imlog_postgres::{run_leased, Migration, Pool, Worker};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::Type;
use tokio_util::sync::CancellationToken;

/// The schema of the process managers' own state.
pub const SCHEMA: &str = "imlog_process";

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "process offsets",
    sql: "CREATE TABLE process_offsets (
              process text NOT NULL,
              topic text NOT NULL,
              partition integer NOT NULL,
              next_offset bigint NOT NULL,
              PRIMARY KEY (process, topic, partition)
          );",
}];

const BATCH: usize = 100;
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// How long reacted-to offsets may go unstored while records keep coming
/// (once they stop, they are stored when the reader has waited `IDLE_WAIT`).
const STORE_EVERY: Duration = Duration::from_millis(200);
/// As a projection's: records behind a batch share the next.
const LINGER: Duration = imlog_projections::runner::LINGER;

/// Runs every manager until `shutdown`, each while this process holds its
/// lease. `state` is a pool whose search path is [`SCHEMA`].
pub async fn run_all(
    journal: Arc<Journal>,
    state: Pool,
    lease_url: String,
    managers: Vec<Arc<dyn ProcessManager>>,
    shutdown: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for manager in managers {
        let (journal, state, lease_url, shutdown) = (
            journal.clone(),
            state.clone(),
            lease_url.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            let worker = Worker {
                kind: "process",
                name: manager.name(),
            };
            let key = format!("imlog.process.{}", manager.name());
            run_leased(&lease_url, &key, worker, &shutdown, || {
                run(&journal, &state, &*manager, &shutdown)
            })
            .await;
        });
    }
    while tasks.join_next().await.is_some() {}
}

type Offsets = BTreeMap<(Topic, i32), i64>;

async fn run(
    journal: &Journal,
    state: &Pool,
    manager: &dyn ProcessManager,
    shutdown: &CancellationToken,
) -> Result<(), ProcessError> {
    let name = manager.name();
    let mut next = load_offsets(state, manager).await?;
    let from = next
        .iter()
        .map(|(&(topic, partition), &offset)| ReadFrom {
            topic,
            partition,
            offset,
        })
        .collect();
    let mut reader = journal
        .log()
        .reader(from)
        .await
        .map_err(crate::StoreError::from)?;
    // Offsets reacted past but not stored yet, and when they last were.
    let mut reached = next.clone();
    let mut stored_at = std::time::Instant::now();
    loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => {
                return store_offsets(state, name, &reached, &mut next).await;
            }
            batch = reader.next_batch(BATCH, IDLE_WAIT) => batch.map_err(crate::StoreError::from)?,
        };
        if batch.is_empty() {
            store_offsets(state, name, &reached, &mut next).await?;
            stored_at = std::time::Instant::now();
            continue;
        }
        let started = std::time::Instant::now();
        for record in &batch {
            let reacted = match decode(name, record) {
                Ok(Some(envelope)) => {
                    let trigger = Trigger {
                        record,
                        envelope: &envelope,
                    };
                    manager.react(journal, &trigger).await
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = reacted {
                // Restarted after this, it resumes here, not at the last
                // store: the steps before were appended.
                let _ = store_offsets(state, name, &reached, &mut next).await;
                return Err(e);
            }
            reached.insert((record.topic, record.partition), record.offset + 1);
        }
        metrics::counter!("imlog_process_records_total", "process" => name)
            .increment(batch.len() as u64);
        // Storing lags reacting by at most this: a crash then only makes
        // the manager react again to those records, which it must bear
        // anyway, and a busy topic does not cost a transaction per batch.
        if stored_at.elapsed() >= STORE_EVERY {
            store_offsets(state, name, &reached, &mut next).await?;
            stored_at = std::time::Instant::now();
        }
        // As a projection does: records behind this batch share the next.
        if batch.len() < BATCH {
            tokio::time::sleep_until((started + LINGER).into()).await;
        }
    }
}

/// A malformed record is skipped; one from a newer build stops the manager
/// (as it does a projection), so that it is not skipped for good.
fn decode(name: &'static str, record: &Record) -> Result<Option<Envelope>, ProcessError> {
    match Envelope::decode(&record.payload) {
        Ok(envelope) => Ok(Some(envelope)),
        Err(e @ (DecodeError::UnknownType(_) | DecodeError::FutureVersion { .. })) => {
            Err(ProcessError::Other(format!(
                "{}/{}@{} was written by a newer imlog ({e}); upgrade this process",
                record.topic, record.partition, record.offset
            )))
        }
        Err(e) => {
            tracing::error!(process = name, topic = %record.topic, partition = record.partition,
                offset = record.offset, error = %e, "skipping a malformed record");
            Ok(None)
        }
    }
}

fn db(e: impl std::fmt::Display) -> ProcessError {
    ProcessError::Other(format!("process state: {e}"))
}

async fn load_offsets(state: &Pool, manager: &dyn ProcessManager) -> Result<Offsets, ProcessError> {
    let client = state.get().await.map_err(db)?;
    let rows = client
        .query_prepared(
            "SELECT topic, partition, next_offset FROM process_offsets WHERE process = $1",
            &[(&manager.name(), Type::TEXT)],
        )
        .await
        .map_err(db)?;
    let mut offsets = Offsets::new();
    for &topic in manager.topics() {
        for partition in 0..topic.partitions() {
            offsets.insert((topic, partition), 0);
        }
    }
    for row in rows {
        if let Some(topic) = Topic::from_base_name(row.get(0)) {
            offsets.insert((topic, row.get(1)), row.get(2));
        }
    }
    Ok(offsets)
}

/// Advances the stored offsets to `reached`, guarded by the offsets stored
/// last (`next`): a manager that lost its lease unnoticed cannot move them.
async fn store_offsets(
    state: &Pool,
    name: &'static str,
    reached: &Offsets,
    next: &mut Offsets,
) -> Result<(), ProcessError> {
    let advanced: Offsets = reached
        .iter()
        .filter(|(key, &offset)| next.get(key).copied().unwrap_or(0) < offset)
        .map(|(&key, &offset)| (key, offset))
        .collect();
    if advanced.is_empty() {
        return Ok(());
    }
    let mut client = state.get().await.map_err(db)?;
    let tx = client.transaction().await.map_err(db)?;
    // Not waiting for the disk: steps are appended (durably) before their
    // offsets move, so losing this commit in a crash only makes the manager
    // react to the same events again, which its steps are made to bear.
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .map_err(db)?;
    for (&(topic, partition), &new_next) in &advanced {
        let expected = next.get(&(topic, partition)).copied().unwrap_or(0);
        let updated = tx
            .query_prepared(
                "INSERT INTO process_offsets (process, topic, partition, next_offset)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (process, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset
                 WHERE process_offsets.next_offset = $5
                 RETURNING 1",
                &[
                    (&name, Type::TEXT),
                    (&topic.base_name(), Type::TEXT),
                    (&partition, Type::INT4),
                    (&new_next, Type::INT8),
                    (&expected, Type::INT8),
                ],
            )
            .await
            .map_err(db)?
            .len();
        if updated != 1 {
            return Err(ProcessError::Other(format!(
                "another instance advanced process {name} concurrently"
            )));
        }
    }
    tx.commit().await.map_err(db)?;
    next.extend(advanced);
    Ok(())
}
