//! The store side of resumable uploads: begin, store a chunk, assemble and
//! verify, discard, and ranged reads. Native multipart where the store has
//! it (S3). On the local filesystem each chunk is written at its offset
//! into one staging file, created at its full size when the upload begins,
//! and synced before it is acknowledged; assembling reads it once to verify
//! it and renames it (no copy). Other stores without multipart stage each
//! chunk as an object of its own and assembling streams them, in order,
//! into the final object.
//!
//! On S3, when the caller knows the digest of the bytes it stored (it
//! hashed the chunks in order as they came), assembling trusts it instead
//! of reading the object back: completing the multipart upload with the
//! acknowledged parts' ETags (their MD5s) fails if a part was overwritten
//! since.
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
    /// The one file a local upload's chunks are written into.
    pub fn staging_file(upload: uuid::Uuid) -> ObjectKey {
        ObjectKey(format!(
            "{}/{}",
            Namespace::Staging.as_str(),
            upload.simple()
        ))
    }

    /// Where chunk `index` of `upload` is staged (stores without multipart).
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
    /// Starts an upload of `size` bytes into `target`.
    pub async fn begin_upload(
        &self,
        target: &ObjectKey,
        upload: uuid::Uuid,
        size: u64,
    ) -> StoreResult<Parts> {
        if let Some(root) = &self.local_root {
            let path = root.join(ObjectKey::staging_file(upload).as_str());
            local_io(move || create_staging(&path, size)).await?;
            return Ok(Parts::Staged(upload));
        }
        match &self.multipart {
            Some(multipart) => Ok(Parts::Multipart(
                multipart.create_multipart(&target.path()).await?,
            )),
            None => Ok(Parts::Staged(upload)),
        }
    }

    /// Stores chunk `index` (0-based), which starts at byte `offset`;
    /// returns what assembling needs of it.
    pub async fn put_chunk(
        &self,
        target: &ObjectKey,
        parts: &Parts,
        index: u32,
        offset: u64,
        bytes: Bytes,
    ) -> StoreResult<String> {
        if let (Parts::Staged(upload), Some(root)) = (parts, &self.local_root) {
            let staging = ObjectKey::staging_file(*upload);
            let path = root.join(staging.as_str());
            local_io(move || write_at(&path, offset, &bytes)).await?;
            return Ok(staging.0);
        }
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
    /// into `target` and checks the whole against `sha256` (lower-case hex):
    /// against `received`, the digest of the chunks as they were stored,
    /// when the caller has it, otherwise by reading the bytes. On a
    /// mismatch nothing is left at `target`.
    pub async fn assemble(
        &self,
        target: &ObjectKey,
        parts: &Parts,
        chunk_parts: Vec<String>,
        size: u64,
        sha256: &str,
        received: Option<&str>,
    ) -> StoreResult<Assembled> {
        if let (Parts::Staged(upload), Some(root)) = (parts, &self.local_root) {
            // Read back whatever the caller knows: the staging file is what
            // a chunk written twice left, not what was hashed on arrival.
            let staging = root.join(ObjectKey::staging_file(*upload).as_str());
            let final_path = root.join(target.as_str());
            let expected = sha256.to_owned();
            return local_io(move || assemble_file(&staging, &final_path, size, &expected)).await;
        }
        if let Some(found) = received.filter(|found| *found != sha256) {
            // Known bad: assemble nothing.
            self.discard_parts(target, parts, chunk_parts.len() as u32)
                .await?;
            return Ok(Assembled::Mismatch {
                sha256: found.to_owned(),
                size,
            });
        }
        let trusted = received.is_some();
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
                if trusted {
                    let stored = self.store.head(&path).await?.size;
                    if stored == size {
                        return Ok(Assembled::Verified);
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
        if let (Parts::Staged(upload), Some(root)) = (parts, &self.local_root) {
            let path = root.join(ObjectKey::staging_file(*upload).as_str());
            return local_io(move || match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            })
            .await;
        }
        match (parts, &self.multipart) {
            (Parts::Multipart(id), Some(multipart)) => {
                match multipart.abort_multipart(&target.path(), id).await {
                    // Aborted or completed already: that is what we wanted.
                    Err(e) if !upload_gone(&e) => Err(e),
                    _ => Ok(()),
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

/// Whether `e` says the store no longer has the upload's parts: a staging
/// file gone (cancelled, expired, assembled), or a multipart upload S3 no
/// longer knows (`NoSuchUpload`: aborted or completed).
pub fn upload_gone(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. }) || e.to_string().contains("NoSuchUpload")
}

/// Runs blocking file work off the async threads.
async fn local_io<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> StoreResult<T> {
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => object_store::Error::NotFound {
            path: "staging".into(),
            source: Box::new(source),
        },
        _ => object_store::Error::Generic {
            store: "local",
            source: Box::new(source),
        },
    };
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| io(std::io::Error::other(e)))?
        .map_err(io)
}

/// Creates a staging file of `size` bytes, durably (the file and its
/// directory entry), so that an acknowledged chunk written into it later
/// survives a power loss.
fn create_staging(path: &std::path::Path, size: u64) -> std::io::Result<()> {
    let dir = path.parent().expect("a key has a namespace");
    std::fs::create_dir_all(dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    file.set_len(size)?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` at `offset` of the staging file, durably: the chunk is
/// acknowledged after this returns. A staging file that is gone (the upload
/// ended, or was assembled and renamed away) is `NotFound`: nothing is
/// written, and never into an assembled object.
fn write_at(path: &std::path::Path, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    // Assembling takes the lock exclusively before it renames the file.
    file.lock_shared()?;
    let opened = file.metadata()?;
    let still_staging = std::fs::metadata(path)
        .is_ok_and(|now| now.dev() == opened.dev() && now.ino() == opened.ino());
    if !still_staging {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the upload was assembled or ended",
        ));
    }
    file.write_all_at(bytes, offset)?;
    file.sync_data()
}

/// The SHA-256 (hex) and size of a file, read whole.
fn file_digest(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), read));
        }
        hasher.update(&buf[..n]);
        read += n as u64;
    }
}

/// Verifies the whole staging file by reading it (with no chunk write in
/// progress or to come) and moves it to its final place; a mismatch leaves
/// it for the upload's clean-up. A final file already in place (assembled
/// before a crash) is checked likewise; neither being there is `NotFound`.
fn assemble_file(
    staging: &std::path::Path,
    final_path: &std::path::Path,
    size: u64,
    sha256: &str,
) -> std::io::Result<Assembled> {
    let file = match std::fs::File::open(staging) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match std::fs::metadata(final_path) {
                Ok(meta) if meta.len() == size && file_digest(final_path)?.0 == sha256 => {
                    Ok(Assembled::Verified)
                }
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the staged chunks are gone",
                )),
            };
        }
        Err(e) => return Err(e),
    };
    // Waits for chunk writes in progress; later ones find it renamed.
    file.lock()?;
    let (found, read) = file_digest(staging)?;
    if found != sha256 || read != size {
        return Ok(Assembled::Mismatch {
            sha256: found,
            size: read,
        });
    }
    let dir = final_path.parent().expect("a key has a namespace");
    std::fs::create_dir_all(dir)?;
    std::fs::rename(staging, final_path)?;
    // The rename is durable once the directory is.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(Assembled::Verified)
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

    async fn put_all(
        objects: &Objects,
        target: &ObjectKey,
        parts: &Parts,
        data: &[u8],
        order: &[u32],
    ) -> Vec<String> {
        let chunk = 5 * 1024 * 1024;
        let mut ids = vec![String::new(); 3];
        for &index in order {
            let start = index as usize * chunk;
            let end = (start + chunk).min(data.len());
            let bytes = Bytes::copy_from_slice(&data[start..end]);
            ids[index as usize] = objects
                .put_chunk(target, parts, index, start as u64, bytes)
                .await
                .unwrap();
        }
        ids
    }

    async fn round_trip(objects: Objects) {
        let data: Vec<u8> = (0..(11 * 1024 * 1024u32))
            .map(|i| (i % 251) as u8)
            .collect();
        let size = data.len() as u64;
        let target = ObjectKey::generate(Namespace::Uploads);
        let upload = uuid::Uuid::new_v4();
        let parts = objects.begin_upload(&target, upload, size).await.unwrap();
        // Out of order, and one twice.
        let ids = put_all(&objects, &target, &parts, &data, &[2, 0, 1, 0]).await;
        let wrong = objects
            .assemble(&target, &parts, ids, size, &sha(b"other"), None)
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
        let ids = put_all(&objects, &target, &parts, &data, &[1, 2, 0]).await;
        let done = objects
            .assemble(&target, &parts, ids.clone(), size, &sha(&data), None)
            .await
            .unwrap();
        assert_eq!(done, Assembled::Verified);
        // Again, as after a crash: still verified.
        let again = objects
            .assemble(&target, &parts, ids, size, &sha(&data), Some(&sha(&data)))
            .await
            .unwrap();
        assert_eq!(again, Assembled::Verified);
        let read = objects.read(&target, Some(100..200)).await.unwrap();
        assert_eq!(read.range, 100..200);
        assert_eq!(read.size, size);
        let body: Vec<Bytes> = read.body.map(|b| b.unwrap()).collect().await;
        assert_eq!(body.concat(), &data[100..200]);
        objects.discard_parts(&target, &parts, 3).await.unwrap();
        objects.discard_parts(&target, &parts, 3).await.unwrap();
        if objects.local_root.is_some() {
            // Assembled: a late chunk write is refused, not written into it.
            let late = objects
                .put_chunk(&target, &parts, 0, 0, Bytes::from_static(b"late"))
                .await;
            assert!(
                matches!(late, Err(object_store::Error::NotFound { .. })),
                "{late:?}"
            );
            let read = objects.read(&target, Some(0..4)).await.unwrap();
            let body: Vec<Bytes> = read.body.map(|b| b.unwrap()).collect().await;
            assert_eq!(body.concat(), &data[..4]);
            return; // the local store always reads the file back to verify
        }
        // A digest known to be wrong assembles nothing.
        let other = ObjectKey::generate(Namespace::Uploads);
        let parts = objects
            .begin_upload(&other, uuid::Uuid::new_v4(), size)
            .await
            .unwrap();
        let ids = put_all(&objects, &other, &parts, &data, &[0, 1, 2]).await;
        let known = objects
            .assemble(&other, &parts, ids, size, &sha(&data), Some(&sha(b"x")))
            .await
            .unwrap();
        assert!(matches!(known, Assembled::Mismatch { .. }));
        assert!(objects.read(&other, None).await.is_err());
    }

    #[tokio::test]
    async fn local_chunks_assemble_by_rename_verify_and_go() {
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
