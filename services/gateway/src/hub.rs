//! The connections this gateway instance holds, by user: where pushes go.

use imlog_events::{SessionId, UserId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::{mpsc, watch};

/// Pushes queued per connection; a client that lets more pile up is
/// disconnected (it catches up by sync when it returns).
pub const OUTBOX: usize = 1024;

/// Why the hub wants a connection closed: a WebSocket close code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closing {
    pub code: u16,
    pub reason: &'static str,
}

/// The hub's handles on one connection task.
pub struct Mailbox {
    /// Push frames, bounded.
    pub frames: mpsc::Receiver<String>,
    /// Set once when the connection must close; outside the bounded queue so
    /// that it gets through even when the queue is full.
    pub closing: watch::Receiver<Option<Closing>>,
}

pub mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;
    pub const KICKED: u16 = 4001;
    pub const SESSION_ENDED: u16 = 4002;
    pub const SLOW_CONSUMER: u16 = 4008;
}

struct Member {
    conn_id: u64,
    session_id: SessionId,
    start_offset: i64,
    frames: mpsc::Sender<String>,
    closing: watch::Sender<Option<Closing>>,
}

impl Member {
    fn close(&self, code: u16, reason: &'static str) {
        self.closing.send_if_modified(|c| {
            let first = c.is_none();
            if first {
                *c = Some(Closing { code, reason });
            }
            first
        });
    }
}

#[derive(Default)]
pub struct Hub {
    next_conn: AtomicU64,
    users: Mutex<HashMap<UserId, Vec<Member>>>,
}

impl Hub {
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Vec<Member>>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every operation is a single insert or retain), so poisoning is ignored.
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(
        &self,
        conn_id: u64,
        user_id: UserId,
        session_id: SessionId,
        start_offset: i64,
    ) -> Mailbox {
        let (frames_tx, frames) = mpsc::channel(OUTBOX);
        let (closing_tx, closing) = watch::channel(None);
        self.users().entry(user_id).or_default().push(Member {
            conn_id,
            session_id,
            start_offset,
            frames: frames_tx,
            closing: closing_tx,
        });
        metrics::gauge!("imlog_gateway_online_connections").increment(1.0);
        Mailbox { frames, closing }
    }

    pub fn unregister(&self, conn_id: u64, user_id: UserId) {
        let mut users = self.users();
        if let Some(members) = users.get_mut(&user_id) {
            let before = members.len();
            members.retain(|m| m.conn_id != conn_id);
            if members.len() < before {
                metrics::gauge!("imlog_gateway_online_connections").decrement(1.0);
            }
            if members.is_empty() {
                users.remove(&user_id);
            }
        }
    }

    /// Queues a frame for every connection of `user_id` here.
    pub fn deliver(&self, user_id: UserId, frame: &str) {
        let users = self.users();
        for member in users.get(&user_id).into_iter().flatten() {
            match member.frames.try_send(frame.to_owned()) {
                Ok(()) => metrics::counter!("imlog_gateway_pushes_total").increment(1),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!("imlog_gateway_slow_consumers_total").increment(1);
                    member.close(
                        close_code::SLOW_CONSUMER,
                        "too many undelivered pushes; reconnect and sync",
                    );
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    /// A session of `user_id` started at `offset`: every connection here of
    /// an older session of that user is kicked.
    pub fn session_started(&self, user_id: UserId, session_id: SessionId, offset: i64) {
        let older = |m: &Member| m.session_id != session_id && m.start_offset < offset;
        self.close_where(user_id, older, close_code::KICKED, "logged in elsewhere");
    }

    /// A session ended (logout elsewhere, or expiry): its connections close.
    pub fn session_ended(&self, user_id: UserId, session_id: SessionId) {
        let this = |m: &Member| m.session_id == session_id;
        self.close_where(user_id, this, close_code::SESSION_ENDED, "session ended");
    }

    fn close_where(
        &self,
        user_id: UserId,
        which: impl Fn(&Member) -> bool,
        code: u16,
        reason: &'static str,
    ) {
        let users = self.users();
        for member in users
            .get(&user_id)
            .into_iter()
            .flatten()
            .filter(|m| which(m))
        {
            member.close(code, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(n: u128) -> SessionId {
        SessionId(uuid::Uuid::from_u128(n))
    }

    #[tokio::test]
    async fn a_new_session_kicks_only_older_sessions_of_the_same_user() {
        let hub = Hub::default();
        let alice = UserId(1);
        let mut old = hub.register(1, alice, session(1), 10);
        let mut new = hub.register(2, alice, session(2), 20);
        let mut bob = hub.register(3, UserId(2), session(3), 5);

        // A late-arriving start of the *old* session must not kick the new one.
        hub.session_started(alice, session(1), 10);
        assert!(new.closing.borrow_and_update().is_none());

        hub.session_started(alice, session(2), 20);
        assert_eq!(
            old.closing.borrow_and_update().map(|c| c.code),
            Some(close_code::KICKED)
        );
        assert!(new.closing.borrow_and_update().is_none());
        assert!(bob.closing.borrow_and_update().is_none());

        hub.deliver(UserId(2), "hello");
        assert_eq!(bob.frames.recv().await.as_deref(), Some("hello"));
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_is_closed_not_buffered_without_bound() {
        let hub = Hub::default();
        let mut slow = hub.register(1, UserId(1), session(1), 0);
        for _ in 0..OUTBOX + 10 {
            hub.deliver(UserId(1), "x");
        }
        assert_eq!(
            slow.closing.borrow_and_update().map(|c| c.code),
            Some(close_code::SLOW_CONSUMER)
        );
        hub.unregister(1, UserId(1));
        hub.deliver(UserId(1), "nobody");
    }
}
