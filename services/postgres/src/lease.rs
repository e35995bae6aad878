//! Leases: the right of one process at a time to run a piece of work (a
//! projection, a process manager) — a session-level advisory lock held on a
//! connection of its own, so it is released the moment the holder dies.
//! [`run_leased`] is the loop every such worker shares: take the lease and
//! work, or stand by; after a failure, pause and start again.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a standing-by process tries to take over.
const STANDBY_RETRY: Duration = Duration::from_secs(2);
/// The pause after a failed run.
const RESTART_AFTER: Duration = Duration::from_secs(1);

pub struct Lease {
    _client: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<()>,
}

/// The work ran while the lease was lost; it was dropped mid-way.
#[derive(Debug, thiserror::Error)]
#[error("lost the lease")]
pub struct LeaseLost;

impl Lease {
    /// Takes the lease called `key` if no live process holds it.
    pub async fn acquire(url: &str, key: &str) -> Result<Option<Lease>, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        let taken: bool = client
            .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&key])
            .await?
            .get(0);
        Ok(taken.then_some(Lease {
            _client: client,
            connection,
        }))
    }

    /// Runs `work` while the lease holds; if its connection (and so the lock)
    /// is lost, `work` is dropped, rolling back any transaction in flight.
    pub async fn hold<T>(mut self, work: impl Future<Output = T>) -> Result<T, LeaseLost> {
        tokio::select! {
            result = work => Ok(result),
            _ = &mut self.connection => Err(LeaseLost),
        }
    }
}

/// What [`run_leased`] reports: the worker's kind (the metric label and
/// log field) and name.
#[derive(Debug, Clone, Copy)]
pub struct Worker {
    /// `projection` or `process`: metrics are `imlog_{kind}_active` and
    /// `imlog_{kind}_restarts_total`, labelled `{kind}=name`.
    pub kind: &'static str,
    pub name: &'static str,
}

/// Runs `work` whenever this process holds the lease `key`, until
/// `shutdown` or until `work` returns `Ok`. Other processes running the same
/// worker stand by and take over when this one dies.
pub async fn run_leased<F, Fut, E>(
    url: &str,
    key: &str,
    worker: Worker,
    shutdown: &CancellationToken,
    mut work: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let active = format!("imlog_{}_active", worker.kind);
    let restarts = format!("imlog_{}_restarts_total", worker.kind);
    let gauge = || metrics::gauge!(active.clone(), worker.kind => worker.name);
    while !shutdown.is_cancelled() {
        let failure = match Lease::acquire(url, key).await {
            Ok(Some(lease)) => {
                tracing::info!(
                    kind = worker.kind,
                    name = worker.name,
                    "lease taken; working"
                );
                gauge().set(1.0);
                let result = lease.hold(work()).await;
                gauge().set(0.0);
                match result {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => e.to_string(),
                    Err(lost) => lost.to_string(),
                }
            }
            Ok(None) => {
                gauge().set(0.0);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(STANDBY_RETRY) => continue,
                }
            }
            Err(e) => e.to_string(),
        };
        metrics::counter!(restarts.clone(), worker.kind => worker.name).increment(1);
        tracing::warn!(kind = worker.kind, name = worker.name, error = %failure, "failed; restarting");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESTART_AFTER) => {}
        }
    }
}
