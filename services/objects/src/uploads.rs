//! The store side of resumable uploads: begin, store a chunk, assemble and
//! verify, discard, and ranged reads. Native multipart where the store has
//! it (S3); elsewhere (the local filesystem) each chunk is staged as an
//! object of its own under a key derived from the upload and the index,
//! and assembling streams them, in order, into the final object.
//!
//! Every operation here may be repeated after a crash: storing a chunk
//! again overwrites it with the same bytes, assembling an upload already
//! assembled finds the object and verifies it, discarding one already gone
//! is not an error.

use crate::{Namespace, ObjectKey, Objects};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::multipart::PartId;
use object_store::{GetOptions, GetRange, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use std::ops::Range;

pub type StoreResult<T> = Result<T, object_store::Error>;

/// How an upload's chunks are kept until it is assembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parts {
    /// A native multipart upload with this id.
    Multipart(String),
    /// Staged objects, one per chunk, named after this upload id.
    Staged(uuid::Uuid),
}

/// What assembling found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    /// The object is in place and its bytes have the declared SHA-256.
    Verified,
    /// The bytes had another digest (given): no object is left.
    Mismatch { sha256: String, size: u64 },
}

impl ObjectKey {
    /// Where chunk `index` of `upload` is staged.
    pub fn staged_chunk(upload: uuid::Uuid, index: u32) -> ObjectKey {
        ObjectKey(format!(
            "{}/{}/{index:05}",
            Namespace::Staging.as_str(),
            upload.simple()
        ))
    }
}

impl Objects {
    /// Starts an upload into `target`: a native multipart upload where the
    /// store has one, staging otherwise.
    pub async fn begin_upload(&self, target: &ObjectKey, upload: uuid::Uuid) -> StoreResult<Parts> {
        match &self.multipart {
            Some(multipart) => Ok(Parts::Multipart(
                multipart.create_multipart(&target.path()).await?,
            )),
            None => Ok(Parts::Staged(upload)),
        }
    }

    /// Stores chunk `index` (0-based); returns what assembling needs of it.
    pub async fn put_chunk(
        &self,
        target: &ObjectKey,
        parts: &Parts,
        index: u32,
        bytes: Bytes,
    ) -> StoreResult<String> {
        match (parts, &self.multipart) {
            (Parts::Multipart(id), Some(multipart)) => {
                let part = multipart
                    .put_part(
                        &target.path(),
                        id,
                        index as usize,
                        PutPayload::from_bytes(bytes),
                    )
                    .await?;
                Ok(part.content_id)
            }
            (Parts::Staged(upload), _) => {
                let key = ObjectKey::staged_chunk(*upload, index);
                self.store
                    .put(&key.path(), PutPayload::from_bytes(bytes))
                    .await?;
                Ok(key.0)
            }
            (Parts::Multipart(_), None) => Err(no_multipart()),
        }
    }

    /// Joins the chunks (`parts[i]` as `put_chunk` returned for chunk `i`)
    /// into `target` and checks the whole against `sha256` (lower-case hex).
    /// On a mismatch nothing is left at `target`.
    pub async fn assemble(
        &self,
        target: &ObjectKey,
        parts: &Parts,
        chunk_parts: Vec<String>,
        size: u64,
        sha256: &str,
    ) -> StoreResult<Assembled> {
        match (parts, &self.multipart) {
            (Parts::Multipart(id), Some(multipart)) => {
                let path = target.path();
                let ids = chunk_parts
                    .into_iter()
                    .map(|content_id| PartId { content_id })
                    .collect();
                if let Err(e) = multipart.complete_multipart(&path, id, ids).await {
                    // Completed already, before a crash? Then the object is there.
                    match self.store.head(&path).await {
                        Ok(meta) if meta.size == size => {}
                        _ => return Err(e),
                    }
                }
                let (found, found_size) = self.digest(target).await?;
                if found == sha256 && found_size == size {
                    return Ok(Assembled::Verified);
                }
                self.store.delete(&path).await?;
                Ok(Assembled::Mismatch {
                    sha256: found,
                    size: found_size,
                })
            }
            (Parts::Staged(upload), _) => {
                let path = target.path();
                if let Ok(meta) = self.store.head(&path).await {
                    // Assembled before a crash (the rename is atomic).
                    if meta.size == size && self.digest(target).await?.0 == sha256 {
                        return Ok(Assembled::Verified);
                    }
                }
                let mut hasher = Sha256::new();
                let mut written = 0u64;
                let mut out = self.store.put_multipart(&path).await?;
                for index in 0..chunk_parts.len() as u32 {
                    let chunk = ObjectKey::staged_chunk(*upload, index);
                    let bytes = match self.store.get(&chunk.path()).await {
                        Ok(got) => got.bytes().await,
                        Err(e) => Err(e),
                    };
                    let bytes = match bytes {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            let _ = out.abort().await;
                            return Err(e);
                        }
                    };
                    hasher.update(&bytes);
                    written += bytes.len() as u64;
                    if let Err(e) = out.put_part(PutPayload::from_bytes(bytes)).await {
                        let _ = out.abort().await;
                        return Err(e);
                    }
                }
                let found = hex::encode(hasher.finalize());
                if found != sha256 || written != size {
                    out.abort().await?;
                    return Ok(Assembled::Mismatch {
                        sha256: found,
                        size: written,
                    });
                }
                out.complete().await?;
                Ok(Assembled::Verified)
            }
            (Parts::Multipart(_), None) => Err(no_multipart()),
        }
    }

    /// Drops whatever an upload stored before its end: the multipart upload
    /// (aborted) or the staged chunks (`chunks` of them at most).
    pub async fn discard_parts(
        &self,
        target: &ObjectKey,
        parts: &Parts,
        chunks: u32,
    ) -> StoreResult<()> {
        match (parts, &self.multipart) {
            (Parts::Multipart(id), Some(multipart)) => {
                match multipart.abort_multipart(&target.path(), id).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => {
                        // S3 answers NoSuchUpload for one aborted or
                        // completed already: that is what we wanted.
                        if e.to_string().contains("NoSuchUpload") {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    }
                }
            }
            (Parts::Staged(upload), _) => {
                for index in 0..chunks {
                    let chunk = ObjectKey::staged_chunk(*upload, index);
                    match self.store.delete(&chunk.path()).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            (Parts::Multipart(_), None) => Err(no_multipart()),
        }
    }

    /// Deletes an object; one already gone is not an error.
    pub async fn delete(&self, key: &ObjectKey) -> StoreResult<()> {
        match self.store.delete(&key.path()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The bytes `range` of an object (all of it with `None`), as a stream.
    pub async fn read(&self, key: &ObjectKey, range: Option<Range<u64>>) -> StoreResult<Read> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let got = self.store.get_opts(&key.path(), options).await?;
        Ok(Read {
            range: got.range.clone(),
            size: got.meta.size,
            body: got.into_stream(),
        })
    }

    /// The SHA-256 (hex) and size of a stored object, read whole.
    async fn digest(&self, key: &ObjectKey) -> StoreResult<(String, u64)> {
        let mut stream = self.store.get(&key.path()).await?.into_stream();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(bytes) = stream.next().await {
            let bytes = bytes?;
            size += bytes.len() as u64;
            hasher.update(&bytes);
        }
        Ok((hex::encode(hasher.finalize()), size))
    }
}

/// A ranged read of an object.
pub struct Read {
    pub range: Range<u64>,
    /// The whole object's size.
    pub size: u64,
    pub body: BoxStream<'static, StoreResult<Bytes>>,
}

fn no_multipart() -> object_store::Error {
    object_store::Error::NotSupported {
        source:
            "this upload was begun on a store with native multipart; configure that store again"
                .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Location;
    use object_store::memory::InMemory;
    use std::sync::Arc;

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    async fn round_trip(objects: Objects) {
        let data: Vec<u8> = (0..(11 * 1024 * 1024u32))
            .map(|i| (i % 251) as u8)
            .collect();
        let chunk = 5 * 1024 * 1024;
        let target = ObjectKey::generate(Namespace::Uploads);
        let upload = uuid::Uuid::new_v4();
        let parts = objects.begin_upload(&target, upload).await.unwrap();
        let mut ids = vec![String::new(); 3];
        // Out of order, and one twice.
        for index in [2u32, 0, 1, 0] {
            let start = index as usize * chunk;
            let end = (start + chunk).min(data.len());
            let bytes = Bytes::copy_from_slice(&data[start..end]);
            ids[index as usize] = objects
                .put_chunk(&target, &parts, index, bytes)
                .await
                .unwrap();
        }
        let wrong = objects
            .assemble(
                &target,
                &parts,
                ids.clone(),
                data.len() as u64,
                &sha(b"other"),
            )
            .await
            .unwrap();
        assert!(matches!(wrong, Assembled::Mismatch { .. }), "{wrong:?}");
        assert!(
            objects.read(&target, None).await.is_err(),
            "nothing left on a mismatch"
        );
        if let Parts::Multipart(_) = parts {
            return; // a completed multipart upload cannot be completed again
        }
        let done = objects
            .assemble(&target, &parts, ids.clone(), data.len() as u64, &sha(&data))
            .await
            .unwrap();
        assert_eq!(done, Assembled::Verified);
        // Again, as after a crash: still verified.
        let again = objects
            .assemble(&target, &parts, ids, data.len() as u64, &sha(&data))
            .await
            .unwrap();
        assert_eq!(again, Assembled::Verified);
        let read = objects.read(&target, Some(100..200)).await.unwrap();
        assert_eq!(read.range, 100..200);
        assert_eq!(read.size, data.len() as u64);
        let body: Vec<Bytes> = read.body.map(|b| b.unwrap()).collect().await;
        assert_eq!(body.concat(), &data[100..200]);
        objects.discard_parts(&target, &parts, 3).await.unwrap();
        objects.discard_parts(&target, &parts, 3).await.unwrap();
    }

    #[tokio::test]
    async fn staged_chunks_assemble_verify_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::open(&Location::Local(dir.path().join("objects"))).unwrap();
        round_trip(objects).await;
        let staged = dir.path().join("objects/staging");
        let left: Vec<_> = std::fs::read_dir(&staged)
            .map(|d| {
                d.flatten()
                    .flat_map(|e| std::fs::read_dir(e.path()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "staged chunks left: {left:?}");
    }

    #[tokio::test]
    async fn native_multipart_verifies_and_leaves_nothing_on_a_mismatch() {
        let store = Arc::new(InMemory::new());
        round_trip(Objects::from_store(store.clone(), Some(store))).await;
    }
}
