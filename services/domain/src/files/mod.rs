//! Files: resumable uploads into object storage. A client declares an
//! upload; the server picks the object key and the chunk size; chunks
//! arrive over HTTP in any order, each stored and then recorded by a
//! chunk-ack event, so progress lives in the log and survives any restart.
//! The [`completion`] process assembles and verifies the whole once every
//! chunk is acked; [`expiry`] ends uploads nobody finishes. Downloads are
//! ranged reads, authorised on every request.

pub mod completion;
mod digest;
pub mod expiry;
pub mod transfers;

use crate::accounts::Session;
use crate::journal::{Journal, StoreError, Writes};
use bytes::Bytes;
use imlog_events::{
    upload_key, MediaAttachment, MediaState, Topic, UploadChunkAcked, UploadDeclared, UploadFailed,
    UploadFailure, UploadId, UserId,
};
use imlog_objects::{ObjectKey, Objects, Parts, Read};
use imlog_projections::files::{UploadRow, UploadState};
use imlog_protocol::{
    ChunkAckView, ChunkChecksum, DeclareUpload, OutgoingMedia, UploadStateView, UploadView,
};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// S3's rules: every part but the last at least 5 MiB, at most 10,000 parts.
pub const MIN_CHUNK: u64 = 5 * 1024 * 1024;
pub const MAX_CHUNKS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct FilesSettings {
    /// The chunk size uploads are cut into (at least [`MIN_CHUNK`]; larger
    /// for files that would otherwise need more than [`MAX_CHUNKS`]).
    pub chunk_size: u64,
    /// The largest file one may upload.
    pub max_file_size: u64,
    /// Bytes one user may have declared and not yet completed.
    pub max_bytes_in_flight: u64,
    /// An upload with no chunk for this long is ended and its parts deleted.
    pub expire_after: Duration,
    /// How long file transfer tasks may wait.
    pub transfers: transfers::TransferTimeouts,
}

impl Default for FilesSettings {
    fn default() -> Self {
        FilesSettings {
            chunk_size: 8 * 1024 * 1024,
            max_file_size: 4 << 30,
            max_bytes_in_flight: 8 << 30,
            expire_after: Duration::from_secs(24 * 3600),
            transfers: transfers::TransferTimeouts {
                online_idle: Duration::from_secs(600),
                online_transferring: Duration::from_secs(24 * 3600),
                offline: Duration::from_secs(7 * 24 * 3600),
            },
        }
    }
}

impl FilesSettings {
    /// The chunk size for a file of `size` bytes.
    pub fn chunk_size_for(&self, size: u64) -> u64 {
        const MIB: u64 = 1024 * 1024;
        let needed = size.div_ceil(MAX_CHUNKS).div_ceil(MIB) * MIB;
        self.chunk_size.max(MIN_CHUNK).max(needed)
    }

    /// The largest chunk body any upload can have (the HTTP body limit).
    pub fn max_chunk_size(&self) -> u64 {
        self.chunk_size_for(self.max_file_size)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum FilesError {
    #[error("empty files cannot be uploaded")]
    Empty,
    #[error("files may be at most {max} bytes")]
    TooLarge { max: u64 },
    #[error("you have {in_flight} bytes of uploads in progress; at most {max} may be")]
    TooMuchInFlight { in_flight: u64, max: u64 },
    #[error("no upload {0}")]
    NoSuchUpload(UploadId),
    #[error("upload {0} is someone else's")]
    NotYours(UploadId),
    #[error("upload {0} has ended ({1})")]
    Ended(UploadId, &'static str),
    #[error("upload {upload_id} has chunks 0..{chunks}; there is no chunk {index}")]
    NoSuchChunk {
        upload_id: UploadId,
        index: u32,
        chunks: u32,
    },
    #[error("chunk {index} must be {expected} bytes, not {got}")]
    ChunkSize { index: u32, expected: u64, got: u64 },
    #[error(
        "chunk {index} does not match its SHA-256 (its bytes hash to {found}); nothing was stored"
    )]
    ChunkChecksum { index: u32, found: String },
    #[error("upload {0} is not complete yet")]
    NotUploaded(UploadId),
    #[error("upload {upload_id} was declared a {declared}; send it as one")]
    KindMismatch {
        upload_id: UploadId,
        declared: &'static str,
    },
    #[error("you may not read upload {0}")]
    NotAllowed(UploadId),
    #[error("object store: {0}")]
    Objects(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn objects_error(e: object_store::Error) -> FilesError {
    FilesError::Objects(e.to_string())
}

pub struct Files {
    journal: Arc<Journal>,
    objects: Objects,
    settings: FilesSettings,
    /// Whole-file digests of the uploads whose chunks come here in order.
    digests: digest::Digests,
}

impl Files {
    pub fn new(journal: Arc<Journal>, objects: Objects, settings: FilesSettings) -> Files {
        Files {
            journal,
            objects,
            settings,
            digests: Default::default(),
        }
    }

    pub fn settings(&self) -> &FilesSettings {
        &self.settings
    }

    /// Starts an upload: checks the quotas, names the object, begins the
    /// store's multipart upload and records the declaration.
    #[tracing::instrument(skip_all, fields(user_id = %session.user_id, size = declared.size))]
    pub async fn declare(
        &self,
        writes: &mut Writes,
        session: &Session,
        declared: DeclareUpload,
    ) -> Result<UploadView, FilesError> {
        let me = session.user_id;
        let size = declared.size;
        if size == 0 {
            return Err(FilesError::Empty);
        }
        let max = self.settings.max_file_size;
        if size > max {
            return Err(FilesError::TooLarge { max });
        }
        // Every upload declared so far counts, also those declared a
        // moment ago by other requests (HTTP requests carry no writes).
        self.journal.settle(writes, &[Topic::Files]).await?;
        self.journal.settle_topic(Topic::Files).await?;
        let in_flight = self
            .journal
            .read()
            .bytes_in_flight(me)
            .await
            .map_err(StoreError::from)?;
        let max = self.settings.max_bytes_in_flight;
        if in_flight.saturating_add(size) > max {
            return Err(FilesError::TooMuchInFlight { in_flight, max });
        }
        let upload_id = UploadId::random();
        let object_key = ObjectKey::generate(imlog_objects::Namespace::Uploads);
        let parts = self
            .objects
            .begin_upload(&object_key, upload_id.get(), size)
            .await
            .map_err(objects_error)?;
        let chunk_size = self.settings.chunk_size_for(size);
        let event = UploadDeclared {
            upload_id,
            owner: me,
            name: declared.name.as_str().to_owned(),
            size,
            content_type: declared.content_type.as_str().to_owned(),
            sha256: declared.sha256.as_str().to_owned(),
            kind: declared.kind,
            object_key: object_key.as_str().to_owned(),
            chunk_size,
            chunks: size.div_ceil(chunk_size) as u32,
            multipart_id: match parts {
                Parts::Multipart(id) => Some(id),
                Parts::Staged(_) => None,
            },
        };
        let view = UploadView {
            upload_id,
            name: event.name.clone(),
            size,
            content_type: event.content_type.clone(),
            sha256: event.sha256.clone(),
            kind: event.kind,
            chunk_size,
            chunks: event.chunks,
            state: UploadStateView::Uploading,
            failure: None,
            acked: vec![],
            acked_bytes: 0,
        };
        self.journal.append(writes, Some(me), event).await?;
        tracing::info!(%upload_id, chunks = view.chunks, "upload declared");
        Ok(view)
    }

    /// Stores chunk `index` if its bytes match `sha256`, then records it.
    /// A chunk stored already is acknowledged again without storing.
    #[tracing::instrument(skip_all, fields(user_id = %session.user_id, %upload_id, index))]
    pub async fn put_chunk(
        &self,
        writes: &mut Writes,
        session: &Session,
        upload_id: UploadId,
        index: u32,
        checksum: &ChunkChecksum,
        bytes: Bytes,
    ) -> Result<ChunkAckView, FilesError> {
        let upload = self.own_upload(writes, session, upload_id).await?;
        match upload.state {
            UploadState::Uploading => {}
            UploadState::Completed => return Err(FilesError::Ended(upload_id, "completed")),
            UploadState::Failed(why) => return Err(FilesError::Ended(upload_id, why.as_str())),
        }
        if index >= upload.chunks {
            return Err(FilesError::NoSuchChunk {
                upload_id,
                index,
                chunks: upload.chunks,
            });
        }
        let expected = upload.chunk_len(index);
        let got = bytes.len() as u64;
        if got != expected {
            return Err(FilesError::ChunkSize {
                index,
                expected,
                got,
            });
        }
        let (claimed, chunk) = (checksum.clone(), bytes.clone());
        let found = tokio::task::spawn_blocking(move || claimed.of(&chunk))
            .await
            .map_err(|e| FilesError::Objects(format!("checksum task: {e}")))?;
        if found != *checksum {
            return Err(FilesError::ChunkChecksum {
                index,
                found: found.to_string(),
            });
        }
        let read = self.journal.read();
        if read
            .upload_chunk(upload_id, index)
            .await
            .map_err(StoreError::from)?
            .is_some()
        {
            return Ok(ChunkAckView {
                upload_id,
                index,
                size: got,
                acked_chunks: upload.acked_chunks,
            });
        }
        let key = object_key(&upload)?;
        let offset = u64::from(index) * upload.chunk_size;
        let part = self
            .objects
            .put_chunk(&key, &parts_of(&upload), index, offset, bytes.clone())
            .await
            .map_err(|e| match e {
                e if imlog_objects::upload_gone(&e) => FilesError::Ended(upload_id, "ended"),
                e => objects_error(e),
            })?;
        let fresh = upload.acked_chunks == 0;
        let received_sha256 = self
            .digests
            .feed(upload_id, upload.chunks, index, &bytes, fresh)
            .await;
        let ack = UploadChunkAcked {
            upload_id,
            index,
            size: got,
            part,
            received_sha256,
        };
        let digested = ack.received_sha256.is_some();
        self.journal
            .append(writes, Some(session.user_id), ack)
            .await?;
        if digested {
            self.digests.forget(upload_id);
        }
        metrics::counter!("imlog_upload_chunks_total").increment(1);
        metrics::counter!("imlog_upload_bytes_total").increment(got);
        Ok(ChunkAckView {
            upload_id,
            index,
            size: got,
            acked_chunks: upload.acked_chunks + 1,
        })
    }

    /// An upload with the chunks stored so far: what a client resumes from.
    /// Everything appended for it is projected first, so the answer holds
    /// after any restart.
    pub async fn progress(
        &self,
        writes: &mut Writes,
        session: &Session,
        upload_id: UploadId,
    ) -> Result<UploadView, FilesError> {
        self.journal
            .settle_partition(Topic::Files, &upload_key(upload_id))
            .await?;
        let upload = self.own_upload(writes, session, upload_id).await?;
        let acked = match upload.state {
            UploadState::Uploading => self
                .journal
                .read()
                .upload_chunks(upload_id)
                .await
                .map_err(StoreError::from)?
                .into_iter()
                .map(|c| c.index)
                .collect(),
            UploadState::Completed => (0..upload.chunks).collect(),
            UploadState::Failed(_) => vec![],
        };
        Ok(upload_view(upload, acked))
    }

    /// Gives up an upload in flight: it fails as cancelled and its parts go.
    pub async fn cancel(
        &self,
        writes: &mut Writes,
        session: &Session,
        upload_id: UploadId,
    ) -> Result<(), FilesError> {
        let upload = self.own_upload(writes, session, upload_id).await?;
        match upload.state {
            UploadState::Uploading => {}
            UploadState::Failed(UploadFailure::Cancelled) => return Ok(()),
            UploadState::Completed => return Err(FilesError::Ended(upload_id, "completed")),
            UploadState::Failed(why) => return Err(FilesError::Ended(upload_id, why.as_str())),
        }
        let failed = UploadFailed {
            upload_id,
            reason: UploadFailure::Cancelled,
            detail: "cancelled by the uploader".into(),
        };
        self.journal
            .append(writes, Some(session.user_id), failed)
            .await?;
        self.journal.settle(writes, &[Topic::Files]).await?;
        Ok(())
    }

    /// A completed upload `session` may read: its owner's, or one sent to
    /// a thread they are in, or someone's current avatar. Checked on every
    /// request (every range).
    pub async fn readable(
        &self,
        writes: &mut Writes,
        session: &Session,
        upload_id: UploadId,
    ) -> Result<UploadRow, FilesError> {
        let upload = self.find(writes, upload_id).await?;
        let read = self.journal.read();
        let may = || read.may_download(upload_id, session.user_id);
        let mut allowed =
            upload.owner == session.user_id || may().await.map_err(StoreError::from)?;
        if !allowed {
            // Sent a moment ago (its push can come before its projection)?
            self.journal.settle_topic(Topic::Messages).await?;
            self.journal.settle_topic(Topic::Files).await?;
            allowed = may().await.map_err(StoreError::from)?;
        }
        if !allowed {
            return Err(FilesError::NotAllowed(upload_id));
        }
        if upload.state != UploadState::Completed {
            return Err(FilesError::NotUploaded(upload_id));
        }
        Ok(upload)
    }

    /// Streams `range` of a [`readable`](Self::readable) upload (all of it
    /// with `None`).
    pub async fn read(
        &self,
        upload: &UploadRow,
        range: Option<Range<u64>>,
    ) -> Result<Read, FilesError> {
        let key = object_key(upload)?;
        self.objects.read(&key, range).await.map_err(objects_error)
    }

    async fn find(
        &self,
        writes: &mut Writes,
        upload_id: UploadId,
    ) -> Result<UploadRow, FilesError> {
        find_upload(&self.journal, writes, upload_id).await
    }

    async fn own_upload(
        &self,
        writes: &mut Writes,
        session: &Session,
        upload_id: UploadId,
    ) -> Result<UploadRow, FilesError> {
        let upload = self.find(writes, upload_id).await?;
        if upload.owner != session.user_id {
            return Err(FilesError::NotYours(upload_id));
        }
        Ok(upload)
    }
}

/// The upload, once its declaration is projected (it may have been
/// declared a moment ago on another instance).
pub(crate) async fn find_upload(
    journal: &Journal,
    writes: &mut Writes,
    upload_id: UploadId,
) -> Result<UploadRow, FilesError> {
    journal.settle(writes, &[Topic::Files]).await?;
    let read = journal.read();
    if let Some(upload) = read.upload(upload_id).await.map_err(StoreError::from)? {
        return Ok(upload);
    }
    journal
        .settle_partition(Topic::Files, &upload_key(upload_id))
        .await?;
    read.upload(upload_id)
        .await
        .map_err(StoreError::from)?
        .ok_or(FilesError::NoSuchUpload(upload_id))
}

/// What a media message of `sender` carries of `media`'s upload: it must
/// be the sender's, of the message's kind, and not failed.
pub(crate) async fn attachment(
    journal: &Journal,
    writes: &mut Writes,
    sender: UserId,
    media: OutgoingMedia,
) -> Result<MediaAttachment, FilesError> {
    let upload = find_upload(journal, writes, media.upload_id).await?;
    if upload.owner != sender {
        return Err(FilesError::NotYours(upload.upload_id));
    }
    if upload.kind != media.kind {
        return Err(FilesError::KindMismatch {
            upload_id: upload.upload_id,
            declared: upload.kind.as_str(),
        });
    }
    let state = match upload.state {
        UploadState::Uploading => MediaState::Uploading,
        UploadState::Completed => MediaState::Uploaded,
        UploadState::Failed(why) => return Err(FilesError::Ended(upload.upload_id, why.as_str())),
    };
    Ok(MediaAttachment {
        upload_id: upload.upload_id,
        name: upload.name,
        size: upload.size,
        content_type: upload.content_type,
        sha256: upload.sha256,
        preview: media.preview.into_string(),
        state,
    })
}

/// Checks that `upload_id` can be `owner`'s avatar: their own, a completed
/// image.
pub(crate) async fn avatar(
    journal: &Journal,
    writes: &mut Writes,
    owner: UserId,
    upload_id: UploadId,
) -> Result<(), FilesError> {
    let upload = find_upload(journal, writes, upload_id).await?;
    if upload.owner != owner {
        return Err(FilesError::NotYours(upload_id));
    }
    if upload.kind != imlog_events::UploadKind::Image || !upload.content_type.starts_with("image/")
    {
        return Err(FilesError::KindMismatch {
            upload_id,
            declared: upload.kind.as_str(),
        });
    }
    if upload.state != UploadState::Completed {
        return Err(FilesError::NotUploaded(upload_id));
    }
    Ok(())
}

/// How an upload's chunks are kept, as its declaration recorded.
pub(crate) fn parts_of(upload: &UploadRow) -> Parts {
    match &upload.multipart_id {
        Some(id) => Parts::Multipart(id.clone()),
        None => Parts::Staged(upload.upload_id.get()),
    }
}

/// The object key the declaration recorded.
pub(crate) fn object_key(upload: &UploadRow) -> Result<ObjectKey, FilesError> {
    ObjectKey::from_recorded(&upload.object_key).ok_or_else(|| {
        FilesError::Objects(format!(
            "upload {} records an object key this server does not make",
            upload.upload_id
        ))
    })
}

pub fn upload_view(upload: UploadRow, acked: Vec<u32>) -> UploadView {
    let (state, failure) = match upload.state {
        UploadState::Uploading => (UploadStateView::Uploading, None),
        UploadState::Completed => (UploadStateView::Completed, None),
        UploadState::Failed(why) => (
            UploadStateView::Failed,
            Some(match upload.failure_detail {
                Some(detail) if !detail.is_empty() => format!("{}: {detail}", why.as_str()),
                _ => why.as_str().to_owned(),
            }),
        ),
    };
    UploadView {
        upload_id: upload.upload_id,
        name: upload.name,
        size: upload.size,
        content_type: upload.content_type,
        sha256: upload.sha256,
        kind: upload.kind,
        chunk_size: upload.chunk_size,
        chunks: upload.chunks,
        state,
        failure,
        acked,
        acked_bytes: upload.acked_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_at_least_5_mib_and_at_most_10000() {
        let s = FilesSettings {
            chunk_size: 1,
            ..Default::default()
        };
        assert_eq!(s.chunk_size_for(1), MIN_CHUNK);
        let huge = 100 * 1024 * 1024 * 1024u64;
        let chunk = s.chunk_size_for(huge);
        assert!(huge.div_ceil(chunk) <= MAX_CHUNKS);
        assert_eq!(chunk % (1024 * 1024), 0);
        assert_eq!(FilesSettings::default().chunk_size_for(10), 8 * 1024 * 1024);
    }
}
