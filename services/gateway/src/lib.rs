//! The client-facing roles of imlog: the WebSocket gateway (commands and
//! pushes), the HTTP query API, health and metrics.
//!
//! Route handlers are thin: [`connection`] parses frames into
//! [`imlog_protocol::Request`]s and calls the domain services
//! ([`imlog_domain`]), which hold the rules; [`error`] maps their errors to
//! wire codes; [`fanout`] delivers events from the log to the connections in
//! the [`hub::Hub`], by a table of routes.

pub mod connection;
pub mod error;
pub mod fanout;
pub mod files;
pub mod http;
pub mod hub;
pub mod load;
pub mod presence;
pub mod transfers;
mod webapp;
mod writer;

use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// A connection with no frame for this long is closed.
    pub heartbeat_timeout: Duration,
    /// A gateway silent this long has the presence of its users ended by
    /// the live ones (it died without saying goodbye).
    pub presence_reap_after: Duration,
    /// A connection that has not logged in (or resumed with `auth`) this
    /// long after connecting is closed.
    pub login_timeout: Duration,
    /// This run of this gateway: its configured id and a suffix new at each
    /// start, so that a restarted gateway with a fixed id does not revive the
    /// presence its previous run left behind.
    pub instance_id: String,
    /// The WebSocket URL clients reach this gateway at (what
    /// `GET /v1/gateway` hands out).
    pub public_ws_url: String,
    /// At most this many connections (see `connections`).
    pub max_connections: usize,
}

/// Caps the WebSocket connections one gateway holds; a client past the cap
/// is answered 503 before the upgrade.
pub type ConnectionLimit = std::sync::Arc<tokio::sync::Semaphore>;

/// A rate limit per client address.
pub type AuthLimits = governor::DefaultKeyedRateLimiter<std::net::IpAddr>;

/// `per_minute` password checks per address, `burst` at once.
pub fn auth_limits(per_minute: u32, burst: u32) -> AuthLimits {
    let per_minute =
        std::num::NonZeroU32::new(per_minute.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    let burst = std::num::NonZeroU32::new(burst.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute).allow_burst(burst))
}

/// Everything a connection needs, shared by all of them.
pub struct Gateway {
    pub domain: imlog_domain::Domain,
    pub hub: std::sync::Arc<hub::Hub>,
    pub presence: presence::PresenceGate,
    /// Password checks (`register`, `login`) per client address.
    pub auth_limits: AuthLimits,
    /// The online transfers this gateway relays.
    pub relays: std::sync::Arc<transfers::Relays>,
    pub settings: GatewaySettings,
    pub connections: ConnectionLimit,
    pub shutdown: CancellationToken,
}

impl Gateway {
    /// Where this gateway run relays the online transfers it offers.
    pub fn relay(&self) -> imlog_domain::files::transfers::Relay {
        let ws = &self.settings.public_ws_url;
        imlog_domain::files::transfers::Relay {
            instance_id: self.settings.instance_id.clone(),
            ws_base: ws.strip_suffix("/ws").unwrap_or(ws).to_owned(),
        }
    }

    /// The WebSocket connections open here now.
    pub fn connection_count(&self) -> usize {
        self.settings
            .max_connections
            .saturating_sub(self.connections.available_permits())
    }
}
