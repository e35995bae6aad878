//! Postgres plumbing shared by every imlog role: a private cluster for
//! `imlog serve` without configuration, connection pools, and versioned
//! migrations that can target any schema (so `imlog replay` can build a fresh
//! read model beside the live one).

mod embedded;
mod lease;
mod migrate;
mod notify;
mod pausepoint;
mod pool;
mod prepared;

pub use embedded::PrivateCluster;
pub use lease::{run_leased, Lease, LeaseLost, Worker};
pub use migrate::{migrate, validate_schema_name, Migration};
pub use notify::{spawn_listener, spawn_payload_listener, Heard};
pub use pausepoint::pausepoint;
pub use pool::{connect_pool, Pool};
pub use prepared::{Prepared, TypedParam};

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "no Postgres server binaries (initdb, pg_ctl) found in IMLOG_PG_BIN, /usr/lib/postgresql/*/bin or PATH; \
         install them (Debian/Ubuntu: `apt-get install postgresql`) or configure postgres.url"
    )]
    NoBinaries,
    #[error("running as root, the private Postgres cluster must run as the `postgres` system user, which does not exist: create it (`apt-get install postgresql` does) or run imlog as another user")]
    NoPostgresUser,
    #[error(
        "running as root, the private Postgres cluster runs as the `postgres` user, who cannot enter {dir} \
         (mode {mode:o}); choose a data dir it can reach, e.g. --data-dir /var/lib/imlog"
    )]
    Unreachable { dir: String, mode: u32 },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error(
        "data dir {dir} is in use by another imlog process (its private Postgres belongs to it); \
         stop that one first, or give this one another --data-dir"
    )]
    InUse { dir: String },
    #[error("invalid schema name {0:?}: use lower-case letters, digits and _")]
    SchemaName(String),
    #[error("invalid Postgres URL: {0}")]
    Url(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
}
