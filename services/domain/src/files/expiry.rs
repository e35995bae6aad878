//! Expiry: an upload that received no chunk for `files.expire_after` (and
//! is not whole: a whole one is the completion process's) is recorded as
//! failed; the completion process then deletes what it had stored. Stale
//! file transfers end too. Runs in the projector role, in one process at a
//! time (a lease).

use super::FilesSettings;
use crate::journal::{Journal, StoreError, Writes};
use imlog_events::{Envelope, EventMeta, UploadFailed, UploadFailure};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many idle uploads one sweep ends at most.
const SWEEP: i64 = 500;

/// Sweeps until `shutdown`; an error ends the sweep (its lease is retried).
pub async fn run(
    journal: &Journal,
    settings: &FilesSettings,
    shutdown: &CancellationToken,
) -> Result<(), StoreError> {
    // Often enough that an upload outlives its limit by at most a tenth.
    let shortest = [
        settings.expire_after,
        settings.transfers.online_idle,
        settings.transfers.offline,
    ]
    .into_iter()
    .min()
    .unwrap_or(settings.expire_after);
    let every = (shortest / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        expire_idle(journal, settings.expire_after).await?;
        super::transfers::expire_stale(journal, &settings.transfers).await?;
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Ends every upload idle for longer than `after`; returns how many.
pub async fn expire_idle(journal: &Journal, after: Duration) -> Result<usize, StoreError> {
    let idle_since = chrono::Utc::now() - chrono::Duration::from_std(after).unwrap_or_default();
    let idle = journal.read().idle_uploads(idle_since, SWEEP).await?;
    if idle.is_empty() {
        return Ok(0);
    }
    let correlation_id = uuid::Uuid::now_v7();
    let envelopes: Vec<Envelope> = idle
        .iter()
        .map(|u| {
            Envelope::new(
                EventMeta::new(None, correlation_id),
                UploadFailed {
                    upload_id: u.upload_id,
                    reason: UploadFailure::Expired,
                    detail: format!("no chunk arrived for {} s", after.as_secs()),
                },
            )
        })
        .collect();
    let mut writes = Writes::default();
    for result in journal.append_all(&mut writes, &envelopes).await {
        result?;
    }
    tracing::info!(count = idle.len(), "expired idle uploads");
    metrics::counter!("imlog_uploads_expired_total").increment(idle.len() as u64);
    // Wait for them to be projected, so the next sweep does not see them.
    journal
        .settle(&mut writes, &[imlog_events::Topic::Files])
        .await?;
    Ok(idle.len())
}
