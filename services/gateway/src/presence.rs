//! Presence of the users connected here: the first connection of a user on
//! this gateway records them online, the last one to close records them
//! offline (with why). One user's attach and detach are serialised, so the
//! events of one user from one gateway are appended in the order they
//! happened.

use crate::hub::{close_code, Closing, Hub, Mailbox};
use imlog_domain::profiles::Profiles;
use imlog_events::{PresenceReason, SessionId, UserId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct PresenceGate {
    locks: Mutex<HashMap<UserId, Arc<tokio::sync::Mutex<()>>>>,
}

impl PresenceGate {
    fn lock_of(&self, user: UserId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(user).or_default().clone()
    }

    fn forget(&self, user: UserId, lock: &Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Ours and the map's: nobody else waits on it.
        if Arc::strong_count(lock) == 2 {
            locks.remove(&user);
        }
    }

    /// Registers a connection with the hub; the user's first here is
    /// recorded online.
    pub async fn attach(
        &self,
        hub: &Hub,
        profiles: &Profiles,
        gateway_id: &str,
        conn_id: u64,
        user: UserId,
        session: (SessionId, i64),
    ) -> Mailbox {
        let lock = self.lock_of(user);
        let _serialised = lock.lock().await;
        let mailbox = hub.register(conn_id, user, session.0, session.1);
        if mailbox.first {
            record(profiles, user, gateway_id, true, PresenceReason::Connected).await;
        }
        mailbox
    }

    /// Unregisters a connection; the user's last here is recorded offline.
    pub async fn detach(
        &self,
        hub: &Hub,
        profiles: &Profiles,
        gateway_id: &str,
        conn_id: u64,
        user: UserId,
        closing: Option<Closing>,
    ) {
        let lock = self.lock_of(user);
        {
            let _serialised = lock.lock().await;
            if hub.unregister(conn_id, user) {
                record(profiles, user, gateway_id, false, reason(closing)).await;
            }
        }
        self.forget(user, &lock);
    }
}

fn reason(closing: Option<Closing>) -> PresenceReason {
    match closing.map(|c| c.code) {
        Some(close_code::HEARTBEAT_TIMEOUT) => PresenceReason::Timeout,
        Some(close_code::KICKED) => PresenceReason::Kicked,
        Some(close_code::SESSION_ENDED) => PresenceReason::Logout,
        _ => PresenceReason::Closed,
    }
}

/// Presence is best effort: a failed append is logged, and the user's
/// presence corrects itself at their next connection (or when this gateway
/// stops heartbeating).
async fn record(
    profiles: &Profiles,
    user: UserId,
    gateway_id: &str,
    online: bool,
    why: PresenceReason,
) {
    if let Err(e) = profiles
        .presence_changed(user, gateway_id, online, why)
        .await
    {
        tracing::warn!(error = %e, %user, online, "cannot record presence");
    }
}
