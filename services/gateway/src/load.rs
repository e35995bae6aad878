//! Publishes this gateway's load (connection count) and public WebSocket
//! URL every heartbeat, so that `GET /v1/gateway` anywhere can point new
//! logins at the least-loaded live gateway; a clean stop withdraws it.

use crate::Gateway;
use imlog_domain::gateways::{GatewayLoad, HEARTBEAT};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(gateway: Arc<Gateway>, shutdown: CancellationToken) {
    let registry = &gateway.domain.gateways;
    let id = gateway.settings.instance_id.clone();
    let mut tick = tokio::time::interval(HEARTBEAT);
    // Dead gateways' presence is ended at most half the reap delay late.
    let reap_after = gateway.settings.presence_reap_after;
    let mut reap = tokio::time::interval((reap_after / 2).min(Duration::from_secs(30)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            _ = reap.tick() => {
                match gateway.domain.profiles.reap_dead_gateways(reap_after).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(ended = n, "ended the presence dead gateways left"),
                    Err(e) => tracing::warn!(error = %e, "cannot end dead gateways' presence"),
                }
                continue;
            }
        }
        let load = GatewayLoad {
            gateway_id: id.clone(),
            ws_url: gateway.settings.public_ws_url.clone(),
            connections: gateway.connection_count() as i32,
        };
        if let Err(e) = registry.publish(&load).await {
            tracing::warn!(error = %e, "cannot publish this gateway's load");
        }
    }
    if let Err(e) = registry.retire(&id).await {
        tracing::warn!(error = %e, "cannot withdraw this gateway");
    }
}
