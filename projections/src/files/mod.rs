//! Uploads: declared, chunks acknowledged, completed or failed. The chunk
//! rows are the progress a client resumes from and what completion
//! assembles; they go once the upload has ended.

mod queries;

use crate::{Feature, Projection, ProjectionError};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use imlog_events::{Envelope, Event, Topic};
use imlog_log::Record;
use imlog_postgres::Migration;

pub use queries::{ChunkRow, TransferRow, UploadRow, UploadState};

pub(crate) const FEATURE: Feature = Feature {
    projection: &Files,
    tables: &["uploads", "upload_chunks", "transfers"],
    migrations: &[
        Migration {
            version: 7,
            name: "uploads",
            sql: include_str!("schema.sql"),
        },
        Migration {
            version: 9,
            name: "file transfers",
            sql: include_str!("transfers.sql"),
        },
    ],
};

pub struct Files;

#[async_trait]
impl Projection for Files {
    fn name(&self) -> &'static str {
        "files"
    }

    fn topics(&self) -> &'static [Topic] {
        &[Topic::Files]
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        record: &Record,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        let at = envelope.meta.occurred_at;
        match &envelope.event {
            Event::UploadDeclared(e) => {
                tx.execute(
                    "INSERT INTO uploads (upload_id, owner, name, size, content_type, sha256, kind,
                        object_key, chunk_size, chunks, multipart_id, state, declared_at, active_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'uploading', $12, $12)
                     ON CONFLICT (upload_id) DO NOTHING",
                    &[
                        &e.upload_id.get(),
                        &e.owner.get(),
                        &e.name,
                        &(e.size as i64),
                        &e.content_type,
                        &e.sha256,
                        &e.kind.as_str(),
                        &e.object_key,
                        &(e.chunk_size as i64),
                        &(e.chunks as i32),
                        &e.multipart_id,
                        &at,
                    ],
                )
                .await?;
            }
            Event::UploadChunkAcked(e) => {
                // The first ack of an index counts; acks of an ended upload
                // (a chunk racing its expiry) change nothing.
                let fresh = tx
                    .execute(
                        "INSERT INTO upload_chunks (upload_id, index, size, part)
                         SELECT $1::uuid, $2::integer, $3::bigint, $4::text FROM uploads
                         WHERE upload_id = $1 AND state = 'uploading' AND $2 < chunks
                         ON CONFLICT DO NOTHING",
                        &[
                            &e.upload_id.get(),
                            &(e.index as i32),
                            &(e.size as i64),
                            &e.part,
                        ],
                    )
                    .await?;
                if fresh == 0 {
                    // Stored twice: the digest hashed on arrival may not be
                    // of the copy the store kept.
                    tx.execute(
                        "UPDATE uploads SET received_sha256 = NULL, digest_blocked = true WHERE upload_id = $1",
                        &[&e.upload_id.get()],
                    )
                    .await?;
                } else if let Some(digest) = &e.received_sha256 {
                    tx.execute(
                        "UPDATE uploads SET received_sha256 = $2
                         WHERE upload_id = $1 AND state = 'uploading' AND NOT digest_blocked",
                        &[&e.upload_id.get(), digest],
                    )
                    .await?;
                }
                if fresh == 1 {
                    tx.execute(
                        "UPDATE uploads SET acked_chunks = acked_chunks + 1, acked_bytes = acked_bytes + $2,
                             active_at = $3,
                             completing_offset = CASE WHEN acked_chunks + 1 = chunks THEN $4::bigint END
                         WHERE upload_id = $1",
                        &[&e.upload_id.get(), &(e.size as i64), &at, &record.offset],
                    )
                    .await?;
                }
            }
            Event::UploadCompleted(e) => {
                tx.execute(
                    "UPDATE uploads SET state = 'completed', ended_at = $2
                     WHERE upload_id = $1 AND state = 'uploading'",
                    &[&e.upload_id.get(), &at],
                )
                .await?;
                tx.execute(
                    "DELETE FROM upload_chunks WHERE upload_id = $1",
                    &[&e.upload_id.get()],
                )
                .await?;
            }
            Event::UploadFailed(e) => {
                tx.execute(
                    "UPDATE uploads SET state = 'failed', failure = $2, failure_detail = $3, ended_at = $4
                     WHERE upload_id = $1 AND state = 'uploading'",
                    &[&e.upload_id.get(), &e.reason.as_str(), &e.detail, &at],
                )
                .await?;
                tx.execute(
                    "DELETE FROM upload_chunks WHERE upload_id = $1",
                    &[&e.upload_id.get()],
                )
                .await?;
            }
            Event::TransferOffered(e) => {
                tx.execute(
                    "INSERT INTO transfers (task_id, from_id, to_id, name, size, mode, relay, relay_url,
                        upload_id, state, offered_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'ready', $10, $10)
                     ON CONFLICT (task_id) DO NOTHING",
                    &[
                        &e.task_id.get(),
                        &e.from.get(),
                        &e.to.get(),
                        &e.name,
                        &(e.size as i64),
                        &e.mode.as_str(),
                        &e.relay,
                        &e.relay_url,
                        &e.upload_id.map(|u| u.get()),
                        &at,
                    ],
                )
                .await?;
            }
            Event::TransferStateChanged(e) => {
                // Nothing follows a final state: the first one counts.
                tx.execute(
                    "UPDATE transfers SET state = $2, reason = $3, updated_at = $4
                     WHERE task_id = $1 AND state NOT IN ('done', 'refused', 'cancelled', 'error')",
                    &[&e.task_id.get(), &e.state.as_str(), &e.reason, &at],
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}
