//! Reads of uploads and their chunks.

use crate::{ReadError, ReadModel};
use chrono::{DateTime, Utc};
use imlog_events::{
    TaskId, TransferMode, TransferState, UploadFailure, UploadId, UploadKind, UserId,
};
use imlog_postgres::Prepared;
use tokio_postgres::types::Type;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    Uploading,
    Completed,
    Failed(UploadFailure),
}

#[derive(Debug, Clone)]
pub struct UploadRow {
    pub upload_id: UploadId,
    pub owner: UserId,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub sha256: String,
    pub kind: UploadKind,
    pub object_key: String,
    pub chunk_size: u64,
    pub chunks: u32,
    pub multipart_id: Option<String>,
    pub state: UploadState,
    pub failure_detail: Option<String>,
    pub acked_chunks: u32,
    pub acked_bytes: u64,
    /// The offset of the ack that made the chunks whole, once one did.
    pub completing_offset: Option<i64>,
    /// The digest of all chunks as stored, if a gateway hashed them in order.
    pub received_sha256: Option<String>,
    pub declared_at: DateTime<Utc>,
    pub active_at: DateTime<Utc>,
}

impl UploadRow {
    /// The size chunk `index` must have.
    pub fn chunk_len(&self, index: u32) -> u64 {
        let start = u64::from(index) * self.chunk_size;
        self.chunk_size.min(self.size.saturating_sub(start))
    }
}

/// A file transfer task.
#[derive(Debug, Clone)]
pub struct TransferRow {
    pub task_id: TaskId,
    pub from: UserId,
    pub to: UserId,
    pub name: String,
    pub size: u64,
    pub mode: TransferMode,
    pub relay: Option<String>,
    pub relay_url: Option<String>,
    pub upload_id: Option<UploadId>,
    pub state: TransferState,
    pub reason: String,
    pub offered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const TRANSFER_COLUMNS: &str =
    "task_id, from_id, to_id, name, size, mode, relay, relay_url, upload_id,
    state, reason, offered_at, updated_at";

fn transfer_row(r: &tokio_postgres::Row) -> TransferRow {
    TransferRow {
        task_id: TaskId::new(r.get(0)),
        from: UserId::new(r.get(1)),
        to: UserId::new(r.get(2)),
        name: r.get(3),
        size: r.get::<_, i64>(4) as u64,
        mode: TransferMode::from_name(r.get(5)).unwrap_or(TransferMode::Online),
        relay: r.get(6),
        relay_url: r.get(7),
        upload_id: r.get::<_, Option<uuid::Uuid>>(8).map(UploadId::new),
        state: TransferState::from_name(r.get(9)).unwrap_or(TransferState::Error),
        reason: r.get(10),
        offered_at: r.get(11),
        updated_at: r.get(12),
    }
}

#[derive(Debug, Clone)]
pub struct ChunkRow {
    pub index: u32,
    pub size: u64,
    pub part: String,
}

const COLUMNS: &str = "upload_id, owner, name, size, content_type, sha256, kind, object_key, chunk_size,
    chunks, multipart_id, state, failure, failure_detail, acked_chunks, acked_bytes, completing_offset,
    declared_at, active_at, received_sha256";

fn chunk_row(r: &tokio_postgres::Row) -> ChunkRow {
    ChunkRow {
        index: r.get::<_, i32>(0) as u32,
        size: r.get::<_, i64>(1) as u64,
        part: r.get(2),
    }
}

fn upload_row(r: &tokio_postgres::Row) -> UploadRow {
    let failure = r
        .get::<_, Option<&str>>(12)
        .and_then(UploadFailure::from_name);
    UploadRow {
        upload_id: UploadId::new(r.get(0)),
        owner: UserId::new(r.get(1)),
        name: r.get(2),
        size: r.get::<_, i64>(3) as u64,
        content_type: r.get(4),
        sha256: r.get(5),
        kind: UploadKind::from_name(r.get(6)).unwrap_or(UploadKind::File),
        object_key: r.get(7),
        chunk_size: r.get::<_, i64>(8) as u64,
        chunks: r.get::<_, i32>(9) as u32,
        multipart_id: r.get(10),
        state: match r.get::<_, &str>(11) {
            "completed" => UploadState::Completed,
            "failed" => UploadState::Failed(failure.unwrap_or(UploadFailure::Cancelled)),
            _ => UploadState::Uploading,
        },
        failure_detail: r.get(13),
        acked_chunks: r.get::<_, i32>(14) as u32,
        acked_bytes: r.get::<_, i64>(15) as u64,
        completing_offset: r.get(16),
        declared_at: r.get(17),
        active_at: r.get(18),
        received_sha256: r.get(19),
    }
}

impl ReadModel {
    pub async fn upload(&self, upload_id: UploadId) -> Result<Option<UploadRow>, ReadError> {
        let client = self.client().await?;
        let row = client
            .query_prepared(
                &format!("SELECT {COLUMNS} FROM uploads WHERE upload_id = $1"),
                &[(&upload_id.get(), Type::UUID)],
            )
            .await?;
        Ok(row.first().map(upload_row))
    }

    /// The acknowledged chunks of an upload in flight, by index.
    pub async fn upload_chunks(&self, upload_id: UploadId) -> Result<Vec<ChunkRow>, ReadError> {
        let client = self.client().await?;
        let rows = client
            .query_prepared(
                "SELECT index, size, part FROM upload_chunks WHERE upload_id = $1 ORDER BY index",
                &[(&upload_id.get(), Type::UUID)],
            )
            .await?;
        Ok(rows.iter().map(chunk_row).collect())
    }

    /// Whether chunk `index` of an upload is acknowledged.
    pub async fn upload_chunk(
        &self,
        upload_id: UploadId,
        index: u32,
    ) -> Result<Option<ChunkRow>, ReadError> {
        let client = self.client().await?;
        let rows = client
            .query_prepared(
                "SELECT index, size, part FROM upload_chunks WHERE upload_id = $1 AND index = $2",
                &[
                    (&upload_id.get(), Type::UUID),
                    (&(index as i32), Type::INT4),
                ],
            )
            .await?;
        Ok(rows.first().map(chunk_row))
    }

    /// The bytes a user has declared and not yet completed (or failed).
    pub async fn bytes_in_flight(&self, owner: UserId) -> Result<u64, ReadError> {
        let client = self.client().await?;
        let rows = client
            .query_prepared(
                "SELECT coalesce(sum(size), 0)::bigint FROM uploads WHERE owner = $1 AND state = 'uploading'",
                &[(&owner.get(), Type::INT8)],
            )
            .await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as u64)
    }

    /// Uploads in flight with no chunk acknowledged since `idle_since`, and
    /// not yet whole (a whole one is the completion process's), oldest first.
    pub async fn idle_uploads(
        &self,
        idle_since: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<UploadRow>, ReadError> {
        let client = self.client().await?;
        let rows = client
            .query_prepared(
                &format!(
                    "SELECT {COLUMNS} FROM uploads
                     WHERE state = 'uploading' AND active_at < $1 AND completing_offset IS NULL
                     ORDER BY active_at LIMIT $2"
                ),
                &[(&idle_since, Type::TIMESTAMPTZ), (&limit, Type::INT8)],
            )
            .await?;
        Ok(rows.iter().map(upload_row).collect())
    }

    /// Whether `user`, not the owner, may read an upload: it was sent to a
    /// thread `user` is in (and not recalled), it is its owner's current
    /// avatar, or it is an offline file offered to `user` and not yet fetched.
    pub async fn may_download(&self, upload_id: UploadId, user: UserId) -> Result<bool, ReadError> {
        let client = self.client().await?;
        let rows = client
            .query_prepared(
                "SELECT EXISTS (SELECT 1 FROM messages m
                                JOIN thread_members tm ON tm.thread_id = m.thread_id AND tm.user_id = $3
                                WHERE m.media IS NOT NULL AND m.media->>'upload_id' = $2)
                     OR EXISTS (SELECT 1 FROM uploads u JOIN users p ON p.user_id = u.owner
                                WHERE u.upload_id = $1 AND p.avatar = $2)
                     OR EXISTS (SELECT 1 FROM transfers t
                                WHERE t.upload_id = $1 AND t.to_id = $3 AND t.mode = 'offline'
                                  AND t.state NOT IN ('done', 'refused', 'cancelled', 'error'))",
                &[
                    (&upload_id.get(), Type::UUID),
                    (&upload_id.to_string(), Type::TEXT),
                    (&user.get(), Type::INT8),
                ],
            )
            .await?;
        Ok(rows.first().is_some_and(|r| r.get(0)))
    }

    pub async fn transfer(&self, task_id: TaskId) -> Result<Option<TransferRow>, ReadError> {
        let client = self.client().await?;
        let rows = client
            .query_prepared(
                &format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE task_id = $1"),
                &[(&task_id.get(), Type::UUID)],
            )
            .await?;
        Ok(rows.first().map(transfer_row))
    }

    /// Offline files offered to `user` and not yet fetched, oldest first.
    pub async fn pending_offline_files(
        &self,
        user: UserId,
        limit: i64,
    ) -> Result<Vec<TransferRow>, ReadError> {
        let client = self.client().await?;
        let rows = client
            .query_prepared(
                &format!(
                    "SELECT {TRANSFER_COLUMNS} FROM transfers
                     WHERE to_id = $1 AND mode = 'offline'
                       AND state NOT IN ('done', 'refused', 'cancelled', 'error')
                     ORDER BY offered_at, task_id LIMIT $2"
                ),
                &[(&user.get(), Type::INT8), (&limit, Type::INT8)],
            )
            .await?;
        Ok(rows.iter().map(transfer_row).collect())
    }

    /// Open transfers of `mode` not changed since `before`.
    pub async fn stale_transfers(
        &self,
        mode: TransferMode,
        states: &[TransferState],
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<TransferRow>, ReadError> {
        let client = self.client().await?;
        let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        let rows = client
            .query_prepared(
                &format!(
                    "SELECT {TRANSFER_COLUMNS} FROM transfers
                     WHERE state = ANY($1) AND mode = $2 AND updated_at < $3
                     ORDER BY updated_at LIMIT $4"
                ),
                &[
                    (&states, Type::TEXT_ARRAY),
                    (&mode.as_str(), Type::TEXT),
                    (&before, Type::TIMESTAMPTZ),
                    (&limit, Type::INT8),
                ],
            )
            .await?;
        Ok(rows.iter().map(transfer_row).collect())
    }
}
