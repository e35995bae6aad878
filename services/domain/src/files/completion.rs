//! The completion process: the ack that makes an upload's chunks whole →
//! assemble them into the object → verify the whole SHA-256 →
//! `upload.completed` (or `upload.failed` with the digest found). And the
//! clean-up after an upload ends: staged chunks deleted, a failed upload's
//! multipart upload aborted.
//!
//! Exactly once: the files projection records which ack made the set whole
//! (a chunk acked twice, or acks racing, never make two), and only that
//! ack's reaction assembles; re-run after a crash, assembling finds the
//! object already there and verifies it again, and the completion event
//! is the same step (the projection keeps the first end of an upload).

use super::{object_key, parts_of, FilesError};
use crate::journal::{StoreError, Writes};
use crate::processes::{failpoint, ProcessError, ProcessManager, Trigger};
use crate::Journal;
use async_trait::async_trait;
use imlog_events::{Event, Topic, UploadCompleted, UploadFailed, UploadFailure};
use imlog_objects::{Assembled, Objects, Parts};
use imlog_projections::files::{UploadRow, UploadState};

/// Tries at deleting an ended upload's chunks (over about 4 s).
const DISCARD_ATTEMPTS: u32 = 3;

pub struct UploadCompletion {
    pub objects: Objects,
}

#[async_trait]
impl ProcessManager for UploadCompletion {
    fn name(&self) -> &'static str {
        "upload_completion"
    }

    fn topics(&self) -> &'static [Topic] {
        &[Topic::Files]
    }

    async fn react(&self, journal: &Journal, trigger: &Trigger<'_>) -> Result<(), ProcessError> {
        let upload_id = match &trigger.envelope.event {
            Event::UploadChunkAcked(e) => e.upload_id,
            Event::UploadCompleted(e) => e.upload_id,
            Event::UploadFailed(e) => e.upload_id,
            _ => return Ok(()),
        };
        let mut writes = Writes::default();
        writes.record(Topic::Files, trigger.record.position());
        journal.settle(&mut writes, &[Topic::Files]).await?;
        let Some(upload) = journal
            .read()
            .upload(upload_id)
            .await
            .map_err(StoreError::from)?
        else {
            return Ok(());
        };
        match &trigger.envelope.event {
            Event::UploadChunkAcked(_) => {
                let decisive = upload.state == UploadState::Uploading
                    && upload.completing_offset == Some(trigger.record.offset);
                if decisive {
                    self.complete(journal, &mut writes, trigger, upload).await?;
                }
            }
            Event::UploadCompleted(_) => {
                // The object is whole: staged chunks are no longer needed.
                if let Parts::Staged(_) = parts_of(&upload) {
                    self.discard(&upload).await?;
                }
            }
            Event::UploadFailed(failed) => {
                // A checksum mismatch or lost parts ended a multipart upload
                // that was completed (then deleted) or is gone already:
                // there is nothing to abort.
                let completed_or_gone = matches!(
                    failed.reason,
                    UploadFailure::ChecksumMismatch | UploadFailure::PartsLost
                );
                if !(completed_or_gone && matches!(parts_of(&upload), Parts::Multipart(_))) {
                    self.discard(&upload).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl UploadCompletion {
    async fn complete(
        &self,
        journal: &Journal,
        writes: &mut Writes,
        trigger: &Trigger<'_>,
        upload: UploadRow,
    ) -> Result<(), ProcessError> {
        let upload_id = upload.upload_id;
        let chunks = journal
            .read()
            .upload_chunks(upload_id)
            .await
            .map_err(StoreError::from)?;
        let whole = chunks.len() == upload.chunks as usize
            && chunks
                .iter()
                .enumerate()
                .all(|(i, c)| c.index as usize == i);
        if !whole {
            return Err(ProcessError::Other(format!(
                "upload {upload_id} was recorded whole but has {} of {} chunks",
                chunks.len(),
                upload.chunks
            )));
        }
        let key = object_key(&upload).map_err(other)?;
        let parts = chunks.into_iter().map(|c| c.part).collect();
        let assembled = self
            .objects
            .assemble(
                &key,
                &parts_of(&upload),
                parts,
                upload.size,
                &upload.sha256,
                upload.received_sha256.as_deref(),
            )
            .await;
        let end: Event = match assembled {
            Ok(Assembled::Verified) => UploadCompleted {
                upload_id,
                object_key: upload.object_key.clone(),
                size: upload.size,
                sha256: upload.sha256.clone(),
            }
            .into(),
            Ok(Assembled::Mismatch { sha256, size }) => UploadFailed {
                upload_id,
                reason: UploadFailure::ChecksumMismatch,
                detail: format!(
                    "the {size} bytes received hash to {sha256}, not the declared {}",
                    upload.sha256
                ),
            }
            .into(),
            Err(e) if parts_lost(&e) => UploadFailed {
                upload_id,
                reason: UploadFailure::PartsLost,
                detail: format!("the object store no longer has the chunks: {e}"),
            }
            .into(),
            Err(e) => return Err(other(FilesError::Objects(e.to_string()))),
        };
        let step = trigger.step("end", end);
        for result in journal.append_all(writes, &[step]).await {
            result?;
        }
        failpoint("upload_completion.ended");
        tracing::info!(%upload_id, size = upload.size, "upload ended");
        Ok(())
    }

    /// Deletes what an ended upload stored. Retried a few times; then it
    /// is logged and counted rather than holding up every other upload.
    async fn discard(&self, upload: &UploadRow) -> Result<(), ProcessError> {
        let key = object_key(upload).map_err(other)?;
        let parts = parts_of(upload);
        let mut delay = std::time::Duration::from_millis(200);
        for attempt in 1..=DISCARD_ATTEMPTS {
            match self
                .objects
                .discard_parts(&key, &parts, upload.chunks)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if attempt == DISCARD_ATTEMPTS => {
                    tracing::error!(upload_id = %upload.upload_id, error = %e,
                        "cannot delete an ended upload's chunks; they are left in the store");
                    metrics::counter!("imlog_upload_cleanup_failures_total").increment(1);
                }
                Err(e) => {
                    tracing::warn!(upload_id = %upload.upload_id, error = %e, attempt,
                        "deleting an ended upload's chunks failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
            }
        }
        Ok(())
    }
}

fn other(e: FilesError) -> ProcessError {
    ProcessError::Other(e.to_string())
}

/// Whether assembling failed because the chunks are gone for good (rather
/// than the store being unreachable for a while).
fn parts_lost(e: &object_store::Error) -> bool {
    imlog_objects::upload_gone(e)
        || matches!(e, object_store::Error::NotSupported { .. })
        || e.to_string().contains("InvalidPart")
}
