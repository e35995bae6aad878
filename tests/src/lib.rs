//! Shared helpers for the integration tests: a real Postgres (the one the
//! test script started, or a private cluster of our own), a real
//! Kafka-protocol broker when configured, and the real application on
//! port 0.
//!
//! Environment (set by `infra/test.sh`):
//! - `IMLOG_TEST_POSTGRES_URL`: a superuser URL; each test creates its own database.
//! - `IMLOG_TEST_KAFKA_BROKERS`: a Kafka-protocol broker. Without it Kafka
//!   tests skip, unless `IMLOG_TEST_REQUIRE_KAFKA=1` (CI), where they fail.
//! - `IMLOG_TEST_S3_ENDPOINT`, `..._ACCESS_KEY`, `..._SECRET_KEY`, `..._BUCKET`: an S3 server;
//!   `IMLOG_TEST_S3_DIR`: where that server (s3s-fs) keeps its files, if local.

pub mod bench;
pub mod chaos;
pub mod idle;

use imlog::app::{Application, Roles};
use imlog::config::{LogBackend, Secret, Settings, StorageBackend};
use imlog_log::{KafkaLog, KafkaSettings, PgLog, SharedLog};
use std::sync::Arc;
use tokio::sync::OnceCell;

pub use imlog_client::Client;
pub use imlog_protocol::{MessageId, Push, ThreadId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Kafka,
}

/// The Kafka brokers to test against, or `None` to skip (panics instead
/// when Kafka is required).
pub fn kafka_brokers() -> Option<String> {
    match std::env::var("IMLOG_TEST_KAFKA_BROKERS") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            if std::env::var("IMLOG_TEST_REQUIRE_KAFKA").is_ok_and(|v| v == "1") {
                panic!("IMLOG_TEST_REQUIRE_KAFKA=1 but IMLOG_TEST_KAFKA_BROKERS is not set");
            }
            eprintln!(
                "SKIP: IMLOG_TEST_KAFKA_BROKERS is not set (run infra/test.sh for the full suite)"
            );
            None
        }
    }
}

/// Whether a test for `backend` can run here.
pub fn available(backend: Backend) -> bool {
    backend == Backend::Postgres || kafka_brokers().is_some()
}

/// The superuser URL of the test Postgres (without a database path).
async fn admin_url() -> String {
    static URL: OnceCell<String> = OnceCell::const_new();
    URL.get_or_init(|| async {
        if let Ok(url) = std::env::var("IMLOG_TEST_POSTGRES_URL") {
            return url;
        }
        // No server given: a private cluster of our own, kept between runs.
        let dir = std::env::temp_dir().join("imlog-test-postgres");
        std::fs::create_dir_all(&dir).expect("creating the test cluster directory");
        let cluster = imlog_postgres::PrivateCluster::start_shared(&dir)
            .await
            .expect("starting a private Postgres for tests");
        cluster.url_for("postgres")
    })
    .await
    .clone()
}

fn with_database(url: &str, database: &str) -> String {
    // The admin URL ends in /<db>; replace that path.
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
    format!("{base}/{database}")
}

/// A fresh, empty database; returns its URL.
pub async fn fresh_database() -> String {
    fresh_database_with("").await
}

/// A fresh database created with `options` (e.g. an `ENCODING`).
pub async fn fresh_database_with(options: &str) -> String {
    let admin = admin_url().await;
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("connecting to the test Postgres");
    tokio::spawn(connection);
    let name = format!("imlog_test_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name} {options}"))
        .await
        .expect("creating a test database");
    with_database(&admin, &name)
}

/// A unique topic prefix, so tests sharing one broker never meet.
pub fn topic_prefix() -> String {
    format!("t{}.", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Whether the test broker honours idempotent producers: only when
/// `IMLOG_TEST_KAFKA_IDEMPOTENT=1` (a real Kafka); tansu, which the suite
/// starts, keeps both copies of a retried produce.
pub fn kafka_idempotent() -> bool {
    std::env::var("IMLOG_TEST_KAFKA_IDEMPOTENT").is_ok_and(|v| v == "1")
}

/// A log backend over `postgres_url` (for the Postgres log) or the test broker.
pub async fn open_log(backend: Backend, postgres_url: &str, prefix: &str) -> SharedLog {
    let log: SharedLog = match backend {
        Backend::Postgres => Arc::new(
            PgLog::connect(postgres_url, prefix)
                .await
                .expect("opening the Postgres log"),
        ),
        Backend::Kafka => Arc::new(
            KafkaLog::connect(KafkaSettings {
                brokers: kafka_brokers().expect("Kafka configured"),
                topic_prefix: prefix.to_owned(),
                replication_factor: 1,
                linger_ms: 1,
                idempotent: kafka_idempotent(),
            })
            .expect("configuring Kafka"),
        ),
    };
    log.ensure_topics().await.expect("creating topics");
    log
}

/// Settings for an application on port 0 over `postgres_url` and `backend`.
pub fn settings(
    backend: Backend,
    postgres_url: &str,
    prefix: &str,
    data_dir: &std::path::Path,
) -> Settings {
    let mut s = Settings {
        data_dir: data_dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        ..Default::default()
    };
    s.postgres.url = Some(Secret::from(postgres_url.to_owned()));
    s.postgres.pool_size = 8;
    // Most tests chat between strangers; the friends tests turn it off.
    s.gateway.strangers_may_chat = true;
    // Every test client comes from 127.0.0.1: no per-address login limit
    // unless a test sets one.
    s.gateway.auth_rate_per_minute = 1_000_000;
    s.gateway.auth_burst = 1_000_000;
    s.log.topic_prefix = prefix.to_owned();
    match backend {
        Backend::Postgres => s.log.backend = LogBackend::Postgres,
        Backend::Kafka => {
            s.log.backend = LogBackend::Kafka;
            s.log.kafka.brokers = kafka_brokers().expect("Kafka configured");
            s.log.kafka.linger_ms = 1;
            s.log.kafka.idempotent = kafka_idempotent();
        }
    }
    s
}

/// Settings over a fresh database, fresh topics and a fresh data directory
/// (which lives as long as the returned guard).
pub async fn fresh_settings(backend: Backend) -> (Settings, tempfile::TempDir) {
    let url = fresh_database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(backend, &url, &topic_prefix(), dir.path());
    (s, dir)
}

/// The environment variables that give a child `imlog` process these settings.
pub fn settings_env(s: &Settings) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "IMLOG_POSTGRES__URL".into(),
            s.postgres
                .url
                .as_ref()
                .map(|u| u.expose().to_owned())
                .unwrap_or_default(),
        ),
        ("IMLOG_LOG__TOPIC_PREFIX".into(), s.log.topic_prefix.clone()),
        (
            "IMLOG_LOG__BACKEND".into(),
            match s.log.backend {
                LogBackend::Postgres => "postgres".into(),
                LogBackend::Kafka => "kafka".into(),
            },
        ),
        (
            "IMLOG_LOG__KAFKA__BROKERS".into(),
            s.log.kafka.brokers.clone(),
        ),
        (
            "IMLOG_LOG__KAFKA__LINGER_MS".into(),
            s.log.kafka.linger_ms.to_string(),
        ),
        (
            "IMLOG_LOG__KAFKA__IDEMPOTENT".into(),
            s.log.kafka.idempotent.to_string(),
        ),
        (
            "IMLOG_GATEWAY__STRANGERS_MAY_CHAT".into(),
            s.gateway.strangers_may_chat.to_string(),
        ),
        (
            "IMLOG_GATEWAY__AUTH_RATE_PER_MINUTE".into(),
            s.gateway.auth_rate_per_minute.to_string(),
        ),
        (
            "IMLOG_GATEWAY__AUTH_BURST".into(),
            s.gateway.auth_burst.to_string(),
        ),
    ];
    match s.storage.backend {
        StorageBackend::Local => {
            env.push(("IMLOG_STORAGE__BACKEND".into(), "local".into()));
            let dir = s.object_location();
            if let imlog::ObjectLocation::Local(dir) = dir {
                env.push(("IMLOG_STORAGE__LOCAL_DIR".into(), dir.display().to_string()));
            }
        }
        StorageBackend::S3 => {
            let s3 = &s.storage.s3;
            env.extend([
                ("IMLOG_STORAGE__BACKEND".into(), "s3".into()),
                (
                    "IMLOG_STORAGE__S3__ENDPOINT".into(),
                    s3.endpoint.clone().unwrap_or_default(),
                ),
                ("IMLOG_STORAGE__S3__BUCKET".into(), s3.bucket.clone()),
                (
                    "IMLOG_STORAGE__S3__ALLOW_HTTP".into(),
                    s3.allow_http.to_string(),
                ),
                (
                    "IMLOG_STORAGE__S3__ACCESS_KEY_ID".into(),
                    s3.access_key_id.expose().to_owned(),
                ),
                (
                    "IMLOG_STORAGE__S3__SECRET_ACCESS_KEY".into(),
                    s3.secret_access_key.expose().to_owned(),
                ),
            ]);
        }
    }
    let f = &s.files;
    env.extend([
        ("IMLOG_FILES__CHUNK_BYTES".into(), f.chunk_bytes.to_string()),
        (
            "IMLOG_FILES__MAX_FILE_BYTES".into(),
            f.max_file_bytes.to_string(),
        ),
        (
            "IMLOG_FILES__MAX_BYTES_IN_FLIGHT".into(),
            f.max_bytes_in_flight.to_string(),
        ),
        (
            "IMLOG_FILES__EXPIRE_AFTER_SECS".into(),
            f.expire_after_secs.to_string(),
        ),
        (
            "IMLOG_FILES__TRANSFER_TIMEOUT_SECS".into(),
            f.transfer_timeout_secs.to_string(),
        ),
        (
            "IMLOG_FILES__OFFLINE_EXPIRE_SECS".into(),
            f.offline_expire_secs.to_string(),
        ),
    ]);
    env.retain(|(_, v)| !v.is_empty());
    env
}

/// The S3 server to test against, or `None` to skip (panics instead when
/// S3 is required).
#[derive(Debug, Clone)]
pub struct S3Env {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// Where s3s-fs keeps its files (multipart parts at the top).
    pub dir: Option<std::path::PathBuf>,
}

pub fn s3_env() -> Option<S3Env> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        get("IMLOG_TEST_S3_ENDPOINT"),
        get("IMLOG_TEST_S3_BUCKET"),
        get("IMLOG_TEST_S3_ACCESS_KEY"),
        get("IMLOG_TEST_S3_SECRET_KEY"),
    ) {
        (Some(endpoint), Some(bucket), Some(access_key), Some(secret_key)) => Some(S3Env {
            endpoint,
            bucket,
            access_key,
            secret_key,
            dir: get("IMLOG_TEST_S3_DIR").map(Into::into),
        }),
        _ => {
            assert!(
                std::env::var("IMLOG_TEST_REQUIRE_S3").as_deref() != Ok("1"),
                "IMLOG_TEST_REQUIRE_S3=1 but no IMLOG_TEST_S3_* configured"
            );
            eprintln!("SKIP: no IMLOG_TEST_S3_ENDPOINT (run infra/test.sh)");
            None
        }
    }
}

/// Points `s` at the S3 server.
pub fn use_s3(s: &mut Settings, s3: &S3Env) {
    s.storage.backend = StorageBackend::S3;
    s.storage.s3.endpoint = Some(s3.endpoint.clone());
    s.storage.s3.bucket = s3.bucket.clone();
    s.storage.s3.allow_http = true;
    s.storage.s3.access_key_id = Secret::from(s3.access_key.clone());
    s.storage.s3.secret_access_key = Secret::from(s3.secret_key.clone());
}

/// A data dir for an `imlog serve` with a private cluster (inside a
/// temporary directory that lives as long as the guard): reachable by the
/// `postgres` user the cluster runs as when the tests run as root.
/// A free TCP port on 127.0.0.1, for a process that must get the same
/// address back when it is restarted.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A free port below the kernel's ephemeral range, for a process that is
/// killed and started again on the same port: while it is down, a port of
/// the ephemeral range can become the local end of any outgoing
/// connection (a pool reconnecting to Postgres) and stay taken.
pub fn restartable_tcp_port() -> u16 {
    let first_ephemeral: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let low = 10_000u16.min(first_ephemeral / 2);
    let span = u32::from(first_ephemeral - low);
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    for i in 0..span {
        let port = low + ((seed.wrapping_add(i.wrapping_mul(7919))) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_tcp_port()
}

/// Rebuilds the read model from `log` into the fresh schema `rebuilt` and
/// compares it with the live one table by table, again every 200 ms until
/// they are equal or `within` has passed (live projectors may still be
/// applying the last records): the differences left, empty when equal.
pub async fn replay_differences(
    url: &str,
    log: &SharedLog,
    rebuilt: &str,
    within: std::time::Duration,
) -> Vec<String> {
    use imlog_projections::replay;
    replay::rebuild(url, log, rebuilt).await.expect("rebuild");
    let (db, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let differences = replay::differences(&db, imlog_projections::LIVE_SCHEMA, rebuilt)
            .await
            .expect("compare");
        if differences.is_empty() || tokio::time::Instant::now() >= deadline {
            return differences;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub fn serve_data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod 755");
    let data = dir.path().join("data");
    (dir, data)
}

/// A running application and what tests need to reach it.
pub struct TestApp {
    pub app: Application,
    pub settings: Settings,
    pub ws_url: String,
    pub http_url: String,
    _data_dir: Option<tempfile::TempDir>,
}

impl TestApp {
    /// A fresh database, fresh topics, every role.
    pub async fn spawn(backend: Backend) -> TestApp {
        let (s, dir) = fresh_settings(backend).await;
        let mut app = TestApp::spawn_with(s, Roles::ALL).await;
        app._data_dir = Some(dir);
        app
    }

    /// Another process's worth of roles with the given settings (e.g. a
    /// second gateway over the same database and log).
    pub async fn spawn_with(settings: Settings, roles: Roles) -> TestApp {
        let app = Application::build(settings.clone(), roles)
            .await
            .expect("building the application");
        let addr = app.addr();
        TestApp {
            app,
            settings,
            ws_url: format!("ws://{addr}/ws"),
            http_url: format!("http://{addr}"),
            _data_dir: None,
        }
    }

    /// Another gateway instance (no projector) over the same log and database.
    pub async fn second_gateway(&self) -> TestApp {
        let roles = Roles {
            gateway: true,
            queries: true,
            projector: false,
        };
        TestApp::spawn_with(self.settings.clone(), roles).await
    }

    pub fn postgres_url(&self) -> String {
        self.settings
            .postgres
            .url
            .as_ref()
            .expect("tests always set a URL")
            .expose()
            .to_owned()
    }

    /// Alice and Bob, logged in, and their private thread (opened by Alice).
    pub async fn alice_and_bob(&self) -> (Client, Client, UserId, ThreadId) {
        let (mut alice, _, _) = self.user("alice").await;
        let (bob, bob_id, _) = self.user("bob").await;
        let thread = alice
            .open_private_thread(bob_id)
            .await
            .expect("open thread");
        (alice, bob, bob_id, thread)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url)
            .await
            .expect("connecting a client")
    }

    /// A client registered and logged in as a fresh user; returns it, its user id and token.
    pub async fn user(&self, name: &str) -> (Client, UserId, String) {
        let mut c = self.client().await;
        let user_id = c.register(name, "password-123").await.expect("register");
        let login = c.login(name, "password-123").await.expect("login");
        assert_eq!(login.user_id, user_id);
        (c, user_id, login.token)
    }

    pub async fn stop(self) {
        self.app.stop().await;
    }
}

/// The next push that `want` accepts, skipping others; panics after 15 s.
pub async fn push_matching(
    client: &mut Client,
    want: impl Fn(&imlog_protocol::Push) -> bool,
) -> imlog_protocol::Push {
    let wait = std::time::Duration::from_secs(15);
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match client.next_push(left).await.expect("push") {
            Some(p) if want(&p) => return p,
            Some(_) => continue,
            None => panic!("no matching push within {wait:?}"),
        }
    }
}

/// Sends `n` texts one by one (`{prefix}-{i}`) and waits until the sender's
/// own sync sees them; returns their message ids.
pub async fn send_numbered(
    client: &mut Client,
    thread: ThreadId,
    prefix: &str,
    n: usize,
) -> Vec<MessageId> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = client
            .send_text(thread, &format!("{prefix}-{i}"), &format!("{prefix} {i}"))
            .await
            .expect("send");
        ids.push(id);
    }
    client
        .sync_messages(thread, MessageId::default(), 1)
        .await
        .expect("projected");
    ids
}

/// Runs a test body for a backend, or skips it when that backend is not available.
#[macro_export]
macro_rules! on_backends {
    ($($name:ident => $body:ident;)*) => {
        mod postgres_log {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$body($crate::Backend::Postgres).await }
            )*
        }
        mod kafka_log {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::available($crate::Backend::Kafka) {
                        super::$body($crate::Backend::Kafka).await
                    }
                }
            )*
        }
    };
}

/// A child `imlog` process (the tests' build of the real command line).
pub struct Proc {
    child: tokio::process::Child,
    /// The address it printed it listens on.
    pub addr: std::net::SocketAddr,
}

impl Proc {
    /// Starts `bin args...` with `env` and waits for its "listening" line.
    pub async fn spawn(bin: &str, args: &[&str], env: &[(String, String)]) -> Proc {
        match Self::try_spawn(bin, args, env).await {
            Some(proc) => proc,
            None => panic!("imlog exited before listening"),
        }
    }

    /// As [`spawn`](Self::spawn), but `None` when the process exits before
    /// it listens (e.g. it cannot reach its database yet).
    pub async fn try_spawn(bin: &str, args: &[&str], env: &[(String, String)]) -> Option<Proc> {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(bin)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("IMLOG_LOG_LEVEL", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting imlog");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let find = async {
            while let Some(line) = lines.next_line().await.expect("reading imlog's output") {
                if let Some(rest) = line.strip_prefix("imlog listening on http://") {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    return Some(addr.parse().expect("a socket address"));
                }
            }
            None
        };
        let addr = tokio::time::timeout(std::time::Duration::from_secs(120), find)
            .await
            .expect("imlog did not start within 120s")?;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Some(Proc { child, addr })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Its resident memory, from `/proc` (Linux), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        idle::rss_bytes(self.pid())
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Waits for the process to exit by itself (e.g. at a failpoint).
    pub async fn wait_exit(mut self, within: std::time::Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the process did not exit in time")
            .expect("waiting for imlog")
    }

    /// SIGKILL: no cleanup of any kind.
    pub async fn kill9(mut self) {
        self.child.kill().await.expect("kill -9");
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running") as i32;
        // SAFETY-free: plain kill(2) through the shell-less std API is not
        // available, so use the `kill` command.
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
        tokio::time::timeout(std::time::Duration::from_secs(60), self.child.wait())
            .await
            .expect("imlog did not stop within 60s after SIGTERM")
            .expect("waiting for imlog")
    }
}

/// A plain HTTP/1.1 GET; returns the status and the body parsed as JSON (or
/// as a JSON string when it is not JSON).
pub async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json =
        serde_json::from_str(body).unwrap_or_else(|_| serde_json::Value::String(body.to_owned()));
    (status, json)
}
