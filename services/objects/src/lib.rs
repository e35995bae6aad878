//! Object storage: a local directory by default, S3 (MinIO) when configured,
//! both through `object_store`. The domain gets an [`Objects`] handle: the
//! store, its native multipart API where it has one (S3 does, the local
//! filesystem does not), and [`ObjectKey`]s that only the server makes —
//! a client string never becomes an object path.

mod uploads;

pub use uploads::{upload_gone, Assembled, Parts, Read, StoreResult};

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where objects live.
#[derive(Clone)]
pub enum Location {
    /// A directory on this machine (created if missing).
    Local(PathBuf),
    S3(S3Location),
}

#[derive(Clone)]
pub struct S3Location {
    /// `None`: AWS itself; MinIO and other servers give their URL.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Plain `http://` endpoints (a local MinIO).
    pub allow_http: bool,
    /// Send parts without signing their bytes (`UNSIGNED-PAYLOAD`): saves
    /// hashing every byte once more; use it over TLS, where the transport
    /// protects them (imlog checks every file's SHA-256 itself).
    pub unsigned_payload: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("cannot use {path} for objects: {source}")]
    LocalDir {
        path: String,
        source: std::io::Error,
    },
    #[error("object store configuration: {0}")]
    Config(object_store::Error),
    #[error("object store probe ({step}) failed: {source}")]
    Probe {
        step: &'static str,
        source: object_store::Error,
    },
    #[error("object store probe read back different bytes")]
    ProbeMismatch,
}

/// The object store of a deployment.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    multipart: Option<Arc<dyn MultipartStore>>,
    /// The directory of a local store: uploads write chunks in place there.
    local_root: Option<PathBuf>,
    backend: &'static str,
}

impl fmt::Debug for Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Objects")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Objects {
    pub fn open(location: &Location) -> Result<Objects, ObjectsError> {
        match location {
            Location::Local(dir) => {
                let local_err = |source| ObjectsError::LocalDir {
                    path: dir.display().to_string(),
                    source,
                };
                std::fs::create_dir_all(dir).map_err(local_err)?;
                let store = LocalFileSystem::new_with_prefix(dir).map_err(ObjectsError::Config)?;
                let root = std::fs::canonicalize(dir).map_err(local_err)?;
                Ok(Objects {
                    store: Arc::new(store),
                    multipart: None,
                    local_root: Some(root),
                    backend: "local",
                })
            }
            Location::S3(s3) => {
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_access_key_id(&s3.access_key_id)
                    .with_secret_access_key(&s3.secret_access_key)
                    .with_allow_http(s3.allow_http)
                    .with_unsigned_payload(s3.unsigned_payload)
                    // Path-style (`endpoint/bucket/key`): what MinIO and s3s expect.
                    .with_virtual_hosted_style_request(false);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                let store = Arc::new(builder.build().map_err(ObjectsError::Config)?);
                Ok(Objects {
                    store: store.clone(),
                    multipart: Some(store),
                    local_root: None,
                    backend: "s3",
                })
            }
        }
    }

    /// Any `object_store` implementation (tests use `InMemory`).
    pub fn from_store(
        store: Arc<dyn ObjectStore>,
        multipart: Option<Arc<dyn MultipartStore>>,
    ) -> Objects {
        Objects {
            store,
            multipart,
            local_root: None,
            backend: "custom",
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The store's native multipart API, where it has one; without it,
    /// resumable uploads stage each part as an object of its own.
    pub fn multipart(&self) -> Option<&Arc<dyn MultipartStore>> {
        self.multipart.as_ref()
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Writes, reads back and deletes a small object, so a misconfigured
    /// store fails at start rather than at the first upload.
    pub async fn probe(&self) -> Result<(), ObjectsError> {
        let key = ObjectKey::generate(Namespace::Probe);
        let path = key.path();
        let body = Bytes::from_static(b"imlog object store probe");
        let step = |step| move |source| ObjectsError::Probe { step, source };
        self.store
            .put(&path, PutPayload::from_bytes(body.clone()))
            .await
            .map_err(step("put"))?;
        let read = self
            .store
            .get(&path)
            .await
            .map_err(step("get"))?
            .bytes()
            .await
            .map_err(step("read"))?;
        if read != body {
            return Err(ObjectsError::ProbeMismatch);
        }
        self.store.delete(&path).await.map_err(step("delete"))?;
        Ok(())
    }
}

/// What an object is for: the first segment of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// The start-up probe.
    Probe,
    /// Completed uploads (media, files, avatars).
    Uploads,
    /// Parts staged on stores without native multipart.
    Staging,
}

impl Namespace {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Namespace::Probe => "_imlog/probe",
            Namespace::Uploads => "uploads",
            Namespace::Staging => "staging",
        }
    }
}

/// An object's key, made by the server: a namespace and a random UUID.
/// There is deliberately no way to build one from a client's string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn generate(namespace: Namespace) -> ObjectKey {
        ObjectKey(format!(
            "{}/{}",
            namespace.as_str(),
            uuid::Uuid::new_v4().simple()
        ))
    }

    /// A key recorded earlier by the server (in an event); `None` if it is
    /// not of the form the server makes.
    pub fn from_recorded(raw: &str) -> Option<ObjectKey> {
        let (namespace, id) = raw.rsplit_once('/')?;
        let known = [Namespace::Uploads, Namespace::Staging, Namespace::Probe]
            .iter()
            .any(|n| n.as_str() == namespace);
        let uuid_like = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
        (known && uuid_like).then(|| ObjectKey(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn path(&self) -> ObjectPath {
        ObjectPath::from(self.0.as_str())
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_store_passes_the_probe_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::open(&Location::Local(dir.path().join("objects"))).unwrap();
        assert!(objects.multipart().is_none());
        objects.probe().await.unwrap();
        let left: Vec<_> = walk(&dir.path().join("objects"));
        assert!(left.is_empty(), "probe left {left:?}");
    }

    fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.path().is_dir() {
                files.extend(walk(&entry.path()));
            } else {
                files.push(entry.path());
            }
        }
        files
    }

    #[test]
    fn keys_are_server_made_and_recorded_keys_are_checked() {
        let key = ObjectKey::generate(Namespace::Uploads);
        assert!(key.as_str().starts_with("uploads/"));
        assert_eq!(ObjectKey::from_recorded(key.as_str()), Some(key.clone()));
        assert_ne!(key, ObjectKey::generate(Namespace::Uploads));
        for bad in [
            "../../etc/passwd",
            "uploads/../../x",
            "uploads/evil",
            "/abs",
            "",
        ] {
            assert_eq!(ObjectKey::from_recorded(bad), None, "{bad}");
        }
    }
}
