//! Gateway load and liveness: each gateway publishes its connection count
//! and public WebSocket URL every couple of seconds to a table every
//! instance reads, and new logins are pointed at the least-loaded live one
//! (the old "status server" role). A gateway that stops publishing drops
//! out within [`LIVE_FOR`].
//!
//! This is the one piece of shared state that is not derived from the log:
//! a heartbeat is not history, and dies with its process. It lives in its
//! own schema ([`SCHEMA`]), outside the read model.

use imlog_postgres::Prepared;
use imlog_postgres::{Migration, Pool};
use std::collections::HashSet;
use std::time::Duration;
use tokio_postgres::types::Type;

pub const SCHEMA: &str = "imlog_ops";

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "gateway heartbeats",
    sql: "CREATE TABLE gateways (
              gateway_id text PRIMARY KEY,
              ws_url text NOT NULL,
              connections integer NOT NULL,
              heartbeat_at timestamptz NOT NULL
          );",
}];

/// How often a gateway publishes its load.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A gateway not heard from for this long counts as dead.
pub const LIVE_FOR: Duration = Duration::from_secs(6);
/// Registry rows of gateways gone this long are deleted.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayLoad {
    pub gateway_id: String,
    pub ws_url: String,
    pub connections: i32,
}

#[derive(Debug, thiserror::Error)]
#[error("gateway registry: {0}")]
pub struct GatewaysError(String);

fn db(e: impl std::fmt::Display) -> GatewaysError {
    GatewaysError(e.to_string())
}

/// The gateway registry. `pool`'s search path is [`SCHEMA`].
#[derive(Clone)]
pub struct Gateways {
    pool: Pool,
}

impl Gateways {
    pub fn new(pool: Pool) -> Gateways {
        Gateways { pool }
    }

    /// Records that `load.gateway_id` is alive with this many connections.
    pub async fn publish(&self, load: &GatewayLoad) -> Result<(), GatewaysError> {
        self.pool
            .get()
            .await
            .map_err(db)?
            .execute_prepared(
                "INSERT INTO gateways (gateway_id, ws_url, connections, heartbeat_at)
                 VALUES ($1, $2, $3, now())
                 ON CONFLICT (gateway_id) DO UPDATE
                 SET ws_url = EXCLUDED.ws_url, connections = EXCLUDED.connections, heartbeat_at = now()",
                &[
                    (&load.gateway_id, Type::TEXT),
                    (&load.ws_url, Type::TEXT),
                    (&load.connections, Type::INT4),
                ],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Deletes the rows of gateways gone an hour: each start of a gateway is
    /// a new instance, so dead ones would otherwise pile up.
    pub async fn forget_gone(&self) -> Result<(), GatewaysError> {
        let forget = FORGET_AFTER.as_secs_f64();
        self.pool
            .get()
            .await
            .map_err(db)?
            .execute_prepared(
                "DELETE FROM gateways WHERE heartbeat_at < now() - make_interval(secs => $1)",
                &[(&forget, Type::FLOAT8)],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// A gateway stopping cleanly leaves at once.
    pub async fn retire(&self, gateway_id: &str) -> Result<(), GatewaysError> {
        self.pool
            .get()
            .await
            .map_err(db)?
            .execute_prepared(
                "DELETE FROM gateways WHERE gateway_id = $1",
                &[(&gateway_id, Type::TEXT)],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// The live gateway with the fewest connections (ties: the one heard
    /// from last).
    pub async fn least_loaded(&self) -> Result<Option<GatewayLoad>, GatewaysError> {
        let live = LIVE_FOR.as_secs_f64();
        Ok(self
            .pool
            .get()
            .await
            .map_err(db)?
            .query_prepared_opt(
                "SELECT gateway_id, ws_url, connections FROM gateways
                 WHERE heartbeat_at > now() - make_interval(secs => $1)
                 ORDER BY connections, heartbeat_at DESC LIMIT 1",
                &[(&live, Type::FLOAT8)],
            )
            .await
            .map_err(db)?
            .map(|r| GatewayLoad {
                gateway_id: r.get(0),
                ws_url: r.get(1),
                connections: r.get(2),
            }))
    }

    /// The ids of the gateways alive now.
    pub async fn live(&self) -> Result<HashSet<String>, GatewaysError> {
        self.heard_within(LIVE_FOR).await
    }

    /// The ids of the gateways heard from within `within`.
    pub async fn heard_within(&self, within: Duration) -> Result<HashSet<String>, GatewaysError> {
        let live = within.as_secs_f64();
        Ok(self
            .pool
            .get()
            .await
            .map_err(db)?
            .query_prepared(
                "SELECT gateway_id FROM gateways WHERE heartbeat_at > now() - make_interval(secs => $1)",
                &[(&live, Type::FLOAT8)],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }
}
