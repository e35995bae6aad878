//! Read-your-writes: wait until the projections have applied a log position.

use crate::runner::PROJECTED_CHANNEL;
use crate::{projections_of, ProjectionError};
use imlog_events::{LogPosition, Topic};
use imlog_postgres::Prepared;
use imlog_postgres::{spawn_listener, Pool};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::types::Type;

/// Fallback re-check while waiting, should a notification be lost.
const RECHECK: Duration = Duration::from_millis(200);

pub struct Progress {
    pool: Pool,
    changed: watch::Receiver<u64>,
    listener: JoinHandle<()>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Progress {
    /// `pool` must point at the read model; `url` is the same database, for
    /// the LISTEN connection.
    pub fn start(pool: Pool, url: &str) -> Progress {
        let (bump, changed) = watch::channel(0);
        let listener = spawn_listener(url.to_owned(), PROJECTED_CHANNEL, Arc::new(bump));
        Progress {
            pool,
            changed,
            listener,
        }
    }

    /// Whether every position has been applied by **every** projection of
    /// its topic (a projection that never applied anything has no row yet,
    /// and counts as behind).
    pub async fn reached(
        &self,
        positions: &[(Topic, LogPosition)],
    ) -> Result<bool, ProjectionError> {
        let client = self.pool.get().await?;
        for &(topic, pos) in positions {
            let projections = projections_of(topic);
            if projections.is_empty() {
                continue;
            }
            let past: i64 = client
                .query_prepared_one(
                    "SELECT count(*) FROM projection_offsets
                     WHERE projection = ANY($1) AND topic = $2 AND partition = $3 AND next_offset > $4",
                    &[
                        (&projections, Type::TEXT_ARRAY),
                        (&topic.base_name(), Type::TEXT),
                        (&pos.partition, Type::INT4),
                        (&pos.offset, Type::INT8),
                    ],
                )
                .await?
                .get(0);
            if past < projections.len() as i64 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Waits until every position is projected; `false` if `timeout` passed.
    pub async fn wait_for(
        &self,
        positions: &[(Topic, LogPosition)],
        timeout: Duration,
    ) -> Result<bool, ProjectionError> {
        if positions.is_empty() {
            return Ok(true);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            if self.reached(positions).await? {
                return Ok(true);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let nap = deadline.min(now + RECHECK);
            tokio::select! {
                // A closed channel (listener gone) must not turn this into a spin.
                r = changed.changed() => if r.is_err() { tokio::time::sleep_until(nap).await },
                _ = tokio::time::sleep_until(nap) => {}
            }
        }
    }
}
