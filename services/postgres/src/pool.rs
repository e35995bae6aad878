//! Connection pools. The schema of the read model is chosen per pool through
//! `search_path`, so the same unqualified SQL serves the live read model and a
//! rebuild in a fresh schema.

use crate::PgError;
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use std::str::FromStr;
use tokio_postgres::NoTls;

pub use deadpool_postgres::Pool;

/// How long a caller waits for a free connection before it gets an error
/// (answered `unavailable`), rather than queueing without bound behind a
/// flood.
pub const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A pool of up to `size` connections to `url`; with `search_path`, unqualified
/// table names resolve in that schema first.
pub fn connect_pool(url: &str, size: usize, search_path: Option<&str>) -> Result<Pool, PgError> {
    let mut config =
        tokio_postgres::Config::from_str(url).map_err(|e| PgError::Url(e.to_string()))?;
    if let Some(schema) = search_path {
        crate::validate_schema_name(schema)?;
        config.options(format!("-c search_path={schema}"));
    }
    if config.get_application_name().is_none() {
        config.application_name("imlog");
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(POOL_WAIT))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| PgError::Url(e.to_string()))
}
