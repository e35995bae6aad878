//! Read-your-writes: wait until the projections have applied a log position.

use crate::runner::PROJECTED_CHANNEL;
use crate::{projection_of, ProjectionError};
use imlog_events::{LogPosition, Topic};
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

    /// Whether every position has been applied by the projection of its topic.
    pub async fn reached(
        &self,
        positions: &[(Topic, LogPosition)],
    ) -> Result<bool, ProjectionError> {
        let client = self.pool.get().await?;
        for &(topic, pos) in positions {
            let Some(projection) = projection_of(topic) else {
                continue;
            };
            let next: i64 = client
                .query_typed_opt(
                    "SELECT next_offset FROM projection_offsets WHERE projection = $1 AND topic = $2 AND partition = $3",
                    &[
                        (&projection, Type::TEXT),
                        (&topic.base_name(), Type::TEXT),
                        (&pos.partition, Type::INT4),
                    ],
                )
                .await?
                .map(|r| r.get(0))
                .unwrap_or(0);
            if next <= pos.offset {
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
