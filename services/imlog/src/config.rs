//! Settings: built-in defaults, then an optional TOML file, then `IMLOG_`
//! environment variables (`__` separates levels: `IMLOG_LOG__BACKEND=kafka`).

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// A string that never shows in logs or debug output.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Private Postgres cluster and local object store live here.
    pub data_dir: PathBuf,
    /// Address of the HTTP/WebSocket listener.
    pub listen: String,
    pub postgres: PostgresSettings,
    pub log: LogSettings,
    pub storage: StorageSettings,
    pub gateway: GatewayConfig,
    pub files: FilesConfig,
}

/// Uploads: how they are cut, how large they may be, when they expire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FilesConfig {
    /// The chunk size uploads are cut into; at least 5 MiB (S3's minimum
    /// part), and larger for files that would need over 10,000 chunks.
    pub chunk_bytes: u64,
    /// The largest file a user may upload.
    pub max_file_bytes: u64,
    /// Bytes one user may have in uploads not yet completed.
    pub max_bytes_in_flight: u64,
    /// An upload with no new chunk for this long is ended and its stored
    /// chunks deleted.
    pub expire_after_secs: u64,
    /// An online transfer nobody started within this long ends (`error`).
    pub transfer_timeout_secs: u64,
    /// An offline file nobody fetched within this long expires.
    pub offline_expire_secs: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        let d = imlog_domain::files::FilesSettings::default();
        FilesConfig {
            chunk_bytes: d.chunk_size,
            max_file_bytes: d.max_file_size,
            max_bytes_in_flight: d.max_bytes_in_flight,
            expire_after_secs: d.expire_after.as_secs(),
            transfer_timeout_secs: d.transfers.online_idle.as_secs(),
            offline_expire_secs: d.transfers.offline.as_secs(),
        }
    }
}

impl FilesConfig {
    pub fn settings(&self) -> imlog_domain::files::FilesSettings {
        imlog_domain::files::FilesSettings {
            chunk_size: self.chunk_bytes.max(imlog_domain::files::MIN_CHUNK),
            max_file_size: self.max_file_bytes,
            max_bytes_in_flight: self.max_bytes_in_flight,
            // At least a second: 0 would end every upload at once.
            expire_after: std::time::Duration::from_secs(self.expire_after_secs.max(1)),
            transfers: imlog_domain::files::transfers::TransferTimeouts {
                online_idle: std::time::Duration::from_secs(self.transfer_timeout_secs.max(1)),
                online_transferring: std::time::Duration::from_secs(24 * 3600),
                offline: std::time::Duration::from_secs(self.offline_expire_secs.max(1)),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/db`; unset: a private cluster under data_dir.
    pub url: Option<Secret>,
    pub pool_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogBackend {
    Postgres,
    Kafka,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    pub backend: LogBackend,
    /// Prefix of every topic name (Kafka) / topic key (Postgres log).
    pub topic_prefix: String,
    pub kafka: KafkaConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    pub brokers: String,
    /// For topics imlog creates; use 3 on a real cluster.
    pub replication_factor: i32,
    pub linger_ms: u32,
    /// Whether the broker honours idempotent producers (Apache Kafka,
    /// Redpanda: leave `true`). tansu 0.6.0 does not: set `false`.
    pub idempotent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Local,
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageSettings {
    pub backend: StorageBackend,
    /// For `local`: the directory (default: data_dir/objects).
    pub local_dir: Option<PathBuf>,
    pub s3: S3Settings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct S3Settings {
    /// e.g. `http://127.0.0.1:9000` for MinIO; unset: AWS.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    /// Plain http endpoints (MinIO on localhost).
    pub allow_http: bool,
    /// Send parts as `UNSIGNED-PAYLOAD` (no SHA-256 of every part for the
    /// signature); meant for https endpoints.
    pub unsigned_payload: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    /// Name of this instance in sessions; default: a random one per start.
    pub id: Option<String>,
    /// The WebSocket URL clients reach this gateway at, handed out by
    /// `GET /v1/gateway`; default `ws://<listen address>/ws`.
    pub public_url: Option<String>,
    pub heartbeat_timeout_secs: u64,
    /// WebSocket connections one gateway accepts at most.
    pub max_connections: usize,
    pub session_ttl_hours: u64,
    pub projection_wait_ms: u64,
    /// Whether users who are not friends may open a private thread.
    pub strangers_may_chat: bool,
    /// How long after sending a message its sender may recall it.
    pub recall_window_secs: u64,
    /// How long a connection may stay without logging in.
    pub login_timeout_secs: u64,
    /// A gateway silent this long (killed) has its users' presence ended
    /// by the live gateways; at least 10.
    pub presence_reap_secs: u64,
    /// Registrations and logins allowed per client address per minute...
    pub auth_rate_per_minute: u32,
    /// ...and at once.
    pub auth_burst: u32,
}

impl Settings {
    /// Where objects live: `storage.local_dir` (default `data_dir/objects`)
    /// or the S3 bucket.
    pub fn object_location(&self) -> imlog_objects::Location {
        let storage = &self.storage;
        match storage.backend {
            StorageBackend::Local => imlog_objects::Location::Local(
                storage
                    .local_dir
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("objects")),
            ),
            StorageBackend::S3 => {
                let s3 = &storage.s3;
                imlog_objects::Location::S3(imlog_objects::S3Location {
                    endpoint: s3.endpoint.clone(),
                    bucket: s3.bucket.clone(),
                    region: s3.region.clone(),
                    access_key_id: s3.access_key_id.expose().to_owned(),
                    secret_access_key: s3.secret_access_key.expose().to_owned(),
                    allow_http: s3.allow_http,
                    unsigned_payload: s3.unsigned_payload,
                })
            }
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("imlog-data"),
            listen: "127.0.0.1:8080".into(),
            postgres: PostgresSettings::default(),
            log: LogSettings::default(),
            storage: StorageSettings::default(),
            gateway: GatewayConfig::default(),
            files: FilesConfig::default(),
        }
    }
}

impl Default for PostgresSettings {
    fn default() -> Self {
        PostgresSettings {
            url: None,
            pool_size: 16,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            backend: LogBackend::Postgres,
            topic_prefix: "imlog.".into(),
            kafka: KafkaConfig::default(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            replication_factor: 1,
            linger_ms: 5,
            idempotent: true,
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            backend: StorageBackend::Local,
            local_dir: None,
            s3: S3Settings::default(),
        }
    }
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: None,
            bucket: "imlog".into(),
            region: "us-east-1".into(),
            access_key_id: Secret::default(),
            secret_access_key: Secret::default(),
            allow_http: false,
            unsigned_payload: false,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            id: None,
            public_url: None,
            heartbeat_timeout_secs: 30,
            max_connections: 10_000,
            session_ttl_hours: 24 * 30,
            projection_wait_ms: 5000,
            strangers_may_chat: false,
            recall_window_secs: 120,
            login_timeout_secs: 10,
            presence_reap_secs: 60,
            auth_rate_per_minute: 60,
            auth_burst: 20,
        }
    }
}

impl Settings {
    /// Defaults, then `file` (if given; `imlog.toml` in the working directory
    /// if present), then `IMLOG_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => figment = figment.merge(Toml::file("imlog.toml")),
        }
        figment
            .merge(Env::prefixed("IMLOG_").split("__"))
            .extract()
            .map_err(Box::new)
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("IMLOG_LOG__BACKEND", "kafka");
            jail.set_env("IMLOG_LOG__KAFKA__BROKERS", "k1:9092,k2:9092");
            jail.set_env("IMLOG_STORAGE__S3__ALLOW_HTTP", "true");
            let s = Settings::load(None).unwrap();
            assert_eq!(s.log.backend, LogBackend::Kafka);
            assert_eq!(s.log.kafka.brokers, "k1:9092,k2:9092");
            assert!(s.storage.s3.allow_http);
            assert_eq!(s.listen, "127.0.0.1:8080");
            Ok(())
        });
    }

    #[test]
    fn a_file_sets_what_the_environment_does_not() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                r#"
                    listen = "0.0.0.0:9000"
                    [log]
                    backend = "kafka"
                    kafka.brokers = "from-file:9092"
                    [storage]
                    backend = "s3"
                    s3 = { endpoint = "http://127.0.0.1:9000", bucket = "b", allow_http = true }
                "#,
            )?;
            jail.set_env("IMLOG_LOG__KAFKA__BROKERS", "from-env:9092");
            let s = Settings::load(Some(Path::new("custom.toml"))).unwrap();
            assert_eq!(s.listen, "0.0.0.0:9000");
            assert_eq!(s.log.backend, LogBackend::Kafka);
            assert_eq!(s.log.kafka.brokers, "from-env:9092", "the environment wins");
            assert_eq!(s.storage.backend, StorageBackend::S3);
            assert_eq!(s.storage.s3.bucket, "b");
            assert!(
                Settings::load(Some(Path::new("missing.toml"))).is_err(),
                "a named file must exist"
            );
            Ok(())
        });
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "\"***\"");
    }
}
