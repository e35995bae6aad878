//! Builds and runs the roles of one process. `serve` is every role at once.

use crate::config::{LogBackend, Settings};
use anyhow::Context;
use axum::serve::ListenerExt;
use imlog_domain::accounts::AccountsSettings;
use imlog_domain::gateways::{self, Gateways};
use imlog_domain::messages::MessagesSettings;
use imlog_domain::threads::ThreadsSettings;
use imlog_domain::{processes, Domain, Journal};
use imlog_gateway::http::{self, Surface};
use imlog_gateway::{fanout, load, Gateway, GatewaySettings};
use imlog_log::{KafkaLog, KafkaSettings, PgLog, SharedLog};
use imlog_objects::Objects;
use imlog_postgres::{connect_pool, migrate, PrivateCluster};
use imlog_projections::progress::Progress;
use imlog_projections::{migrations, runner, ReadModel, LIVE_SCHEMA};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Which roles this process runs.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    /// WebSocket chat sessions, command handling and pushes.
    pub gateway: bool,
    /// The read-only HTTP query API.
    pub queries: bool,
    /// The projections that build the read model.
    pub projector: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        gateway: true,
        queries: true,
        projector: true,
    };
}

/// Postgres, private or configured, plus the log: what every role and every
/// operational command needs.
pub struct Backbone {
    pub postgres_url: String,
    pub log: SharedLog,
    /// Present when we started a private cluster (and so must stop it).
    pub cluster: Option<Arc<PrivateCluster>>,
}

impl Backbone {
    /// `shared`: a private cluster owned by a running `imlog serve` on the
    /// same data dir may be used (by `replay`, `log copy`), never stopped;
    /// otherwise such a data dir is refused.
    pub async fn open(settings: &Settings, shared: bool) -> anyhow::Result<Backbone> {
        let (postgres_url, cluster) = match &settings.postgres.url {
            Some(url) => (url.expose().to_owned(), None),
            None => {
                std::fs::create_dir_all(&settings.data_dir).with_context(|| {
                    format!("creating data dir {}", settings.data_dir.display())
                })?;
                let cluster = if shared {
                    PrivateCluster::start_shared(&settings.data_dir).await
                } else {
                    PrivateCluster::start(&settings.data_dir).await
                }
                .context("starting the private Postgres cluster")?;
                (cluster.url(), Some(Arc::new(cluster)))
            }
        };
        let prepared = async {
            let mut client = connect_pool(&postgres_url, 1, None)?
                .get()
                .await
                .context("connecting to Postgres")?;
            require_utf8(&client).await?;
            let log = open_log(settings, settings.log.backend, &postgres_url).await?;
            migrate(&mut client, LIVE_SCHEMA, &migrations())
                .await
                .context("migrating the read model")?;
            migrate(&mut client, processes::SCHEMA, processes::MIGRATIONS)
                .await
                .context("migrating the process managers' state")?;
            migrate(&mut client, gateways::SCHEMA, gateways::MIGRATIONS)
                .await
                .context("migrating the gateway registry")?;
            anyhow::Ok(log)
        };
        let log = match prepared.await {
            Ok(log) => log,
            Err(e) => {
                // Started here, stopped here: a failed start leaves no
                // cluster running.
                if let Some(cluster) = cluster {
                    let _ = cluster.stop();
                }
                return Err(e);
            }
        };
        Ok(Backbone {
            postgres_url,
            log,
            cluster,
        })
    }

    pub fn stop(self) {
        drop(self.log);
        if let Some(cluster) = self.cluster {
            if let Err(e) = cluster.stop() {
                tracing::warn!(error = %e, "stopping the private Postgres cluster");
            }
        }
    }
}

/// Postgres text in any other encoding would turn some messages into rows
/// the projection cannot write (skipped as poison, lost to readers): refuse
/// to start instead.
async fn require_utf8(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    let row = client
        .query_one(
            "SELECT current_setting('server_encoding'), current_database()",
            &[],
        )
        .await
        .context("reading the database's encoding")?;
    let (encoding, database): (String, String) = (row.get(0), row.get(1));
    if encoding != "UTF8" {
        anyhow::bail!(
            "database {database:?} stores text as {encoding}; imlog needs UTF8: \
             create the database with ENCODING 'UTF8' (e.g. CREATE DATABASE imlog ENCODING 'UTF8' TEMPLATE template0)"
        );
    }
    Ok(())
}

/// Opens the log on `backend` (the Postgres log lives in `postgres_url`'s
/// database) and makes sure its topics exist.
pub async fn open_log(
    settings: &Settings,
    backend: LogBackend,
    postgres_url: &str,
) -> anyhow::Result<SharedLog> {
    let log: SharedLog = match backend {
        LogBackend::Postgres => Arc::new(
            PgLog::connect(postgres_url, &settings.log.topic_prefix)
                .await
                .context("opening the Postgres log")?,
        ),
        LogBackend::Kafka => Arc::new(
            KafkaLog::connect(KafkaSettings {
                brokers: settings.log.kafka.brokers.clone(),
                topic_prefix: settings.log.topic_prefix.clone(),
                replication_factor: settings.log.kafka.replication_factor,
                linger_ms: settings.log.kafka.linger_ms,
                idempotent: settings.log.kafka.idempotent,
            })
            .context("configuring Kafka")?,
        ),
    };
    log.ensure_topics()
        .await
        .context("creating the log's topics")?;
    Ok(log)
}

/// The object store; probed (a write, a read, a delete) where this process
/// will serve files, so that a misconfigured store fails at start.
async fn open_objects(settings: &Settings, probe: bool) -> anyhow::Result<Objects> {
    let objects = Objects::open(&settings.object_location()).context("opening the object store")?;
    if probe {
        objects.probe().await.context("probing the object store")?;
    }
    Ok(objects)
}

/// Ends abandoned uploads, in one projector at a time.
async fn expire_uploads(
    journal: Arc<Journal>,
    files: imlog_domain::files::FilesSettings,
    lease_url: String,
    shutdown: CancellationToken,
) {
    let worker = imlog_postgres::Worker {
        kind: "process",
        name: "upload_expiry",
    };
    imlog_postgres::run_leased(
        &lease_url,
        "imlog.process.upload_expiry",
        worker,
        &shutdown,
        || imlog_domain::files::expiry::run(&journal, &files, &shutdown),
    )
    .await;
}

/// One metrics recorder per process (tests start several applications).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (embedding); then
            // ours only renders what it records, which is nothing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub struct Application {
    addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    backbone: Backbone,
}

impl Application {
    pub async fn build(settings: Settings, roles: Roles) -> anyhow::Result<Application> {
        let metrics = metrics_handle();
        // Bind first: a port in use fails before anything is started.
        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("listening on {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let backbone = Backbone::open(&settings, false).await?;
        let objects = match open_objects(&settings, roles.gateway).await {
            Ok(objects) => objects,
            Err(e) => {
                backbone.stop();
                return Err(e);
            }
        };
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        if let Some(cluster) = backbone.cluster.clone() {
            // Our private Postgres is restarted if it dies under us.
            let stop = shutdown.clone();
            tasks.spawn(async move { cluster.supervise(stop.cancelled_owned()).await });
        }
        let url = backbone.postgres_url.clone();
        let read_model = connect_pool(&url, settings.postgres.pool_size, Some(LIVE_SCHEMA))?;
        let g = &settings.gateway;
        let journal = Arc::new(Journal::new(
            backbone.log.clone(),
            ReadModel::new(read_model.clone()),
            Progress::start(read_model.clone(), &url),
            Duration::from_millis(g.projection_wait_ms),
        ));
        if roles.projector {
            // Projections have connections of their own: a flood of
            // requests on the shared pool never holds them up.
            // One per projection runner (a shard is one), and spares.
            let runners = runner::Shard::runners(imlog_projections::all()).count();
            let pool = connect_pool(&url, runners + 2, Some(LIVE_SCHEMA))?;
            let (log, stop) = (backbone.log.clone(), shutdown.clone());
            tasks.spawn(runner::run_all(
                pool,
                url.clone(),
                LIVE_SCHEMA.to_owned(),
                log,
                imlog_projections::all(),
                stop,
            ));
            let state = connect_pool(&url, 2, Some(processes::SCHEMA))?;
            tasks.spawn(processes::run_all(
                journal.clone(),
                state,
                url.clone(),
                processes::all(&objects),
                shutdown.clone(),
            ));
            tasks.spawn(expire_uploads(
                journal.clone(),
                settings.files.settings(),
                url.clone(),
                shutdown.clone(),
            ));
        }
        let router = if roles.gateway || roles.queries {
            let gateway_id = g.id.clone().unwrap_or_else(|| {
                format!("gw-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
            });
            let accounts = AccountsSettings {
                gateway_id: gateway_id.clone(),
                session_ttl: Duration::from_secs(g.session_ttl_hours * 3600),
            };
            let gateway = Arc::new(Gateway {
                domain: Domain::new(
                    journal.clone(),
                    accounts,
                    ThreadsSettings {
                        strangers_may_chat: g.strangers_may_chat,
                    },
                    MessagesSettings {
                        recall_window: Duration::from_secs(g.recall_window_secs),
                    },
                    Gateways::new(connect_pool(&url, 2, Some(gateways::SCHEMA))?),
                    objects,
                    settings.files.settings(),
                ),
                hub: Default::default(),
                settings: GatewaySettings {
                    instance_id: format!(
                        "{}.{}",
                        gateway_id,
                        &uuid::Uuid::new_v4().simple().to_string()[..8]
                    ),
                    heartbeat_timeout: Duration::from_secs(g.heartbeat_timeout_secs),
                    // At least a second: 0 would close every connection.
                    login_timeout: Duration::from_secs(g.login_timeout_secs.max(1)),
                    // Well past the 6 s liveness window in any case.
                    presence_reap_after: Duration::from_secs(g.presence_reap_secs.max(10)),
                    public_ws_url: g
                        .public_url
                        .clone()
                        .unwrap_or_else(|| format!("ws://{addr}/ws")),
                    max_connections: g.max_connections,
                },
                presence: Default::default(),
                relays: Default::default(),
                auth_limits: imlog_gateway::auth_limits(g.auth_rate_per_minute, g.auth_burst),
                connections: Arc::new(tokio::sync::Semaphore::new(g.max_connections)),
                shutdown: shutdown.clone(),
            });
            if roles.gateway {
                let fanout = fanout::Fanout::new(
                    gateway.hub.clone(),
                    journal.clone(),
                    gateway.domain.profiles.clone(),
                    gateway.relays.clone(),
                );
                tasks.spawn(fanout::run(Arc::new(fanout), shutdown.clone()));
                tasks.spawn(load::run(gateway.clone(), shutdown.clone()));
            }
            http::router(
                gateway,
                Surface {
                    chat: roles.gateway,
                    queries: roles.queries,
                },
                metrics,
            )
        } else {
            http::ops_router(read_model.clone(), backbone.log.clone(), metrics)
        };
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            // A WebSocket frame is a whole reply or push, written at once:
            // none should wait for the previous one's acknowledgement
            // (Nagle). Plain HTTP answers lose nothing by it either.
            let listener = listener.tap_io(|tcp: &mut tokio::net::TcpStream| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
                }
            });
            let server =
                axum::serve(listener, service).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = server.await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        tracing::info!(%addr, backend = backbone.log.backend(), ?roles, "imlog is ready");
        Ok(Application {
            addr,
            shutdown,
            tasks,
            backbone,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn log(&self) -> SharedLog {
        self.backbone.log.clone()
    }

    pub fn postgres_url(&self) -> &str {
        &self.backbone.postgres_url
    }

    /// Stops every role, waits for them, then stops a private cluster.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not stop within 10s; aborting them");
            self.tasks.abort_all();
        }
        self.backbone.stop();
    }
}
