//! Publishes this gateway's load (connection count) and public WebSocket
//! URL every heartbeat, so that `GET /v1/gateway` anywhere can point new
//! logins at the least-loaded live gateway; a clean stop withdraws it. A
//! task of its own ends the presence that dead gateways left behind, so
//! that reaping can never delay a heartbeat.

use crate::Gateway;
use imlog_domain::gateways::{GatewayLoad, HEARTBEAT, LIVE_FOR};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(gateway: Arc<Gateway>, shutdown: CancellationToken) {
    let reaper = tokio::spawn(reap(gateway.clone(), shutdown.clone()));
    let registry = &gateway.domain.gateways;
    let id = gateway.settings.instance_id.clone();
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Forget addresses whose allowance has refilled.
        gateway.auth_limits.retain_recent();
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
    let _ = reaper.await;
}

/// Every half of the reap delay (at most every 30 s), ends the presence of
/// users on gateways silent for that long. Only while this gateway's own
/// heartbeat is current: a gateway cut off from the registry would
/// otherwise take every other gateway for dead.
async fn reap(gateway: Arc<Gateway>, shutdown: CancellationToken) {
    let after = gateway.settings.presence_reap_after;
    let mut tick = tokio::time::interval((after / 2).min(Duration::from_secs(30)));
    // The first round waits a full period: not before this gateway's own
    // first heartbeat.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let registry = &gateway.domain.gateways;
        match registry.heard_within(LIVE_FOR).await {
            Ok(live) if live.contains(&gateway.settings.instance_id) => {}
            Ok(_) => {
                tracing::warn!("this gateway's heartbeat is not current; not reaping others");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the gateway registry; not reaping");
                continue;
            }
        }
        if let Err(e) = registry.forget_gone().await {
            tracing::warn!(error = %e, "cannot forget gone gateways");
        }
        match gateway.domain.profiles.reap_dead_gateways(after).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(ended = n, "ended the presence dead gateways left"),
            Err(e) => tracing::warn!(error = %e, "cannot end dead gateways' presence"),
        }
    }
}
