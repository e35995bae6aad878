//! The connections this gateway instance holds, by user: where pushes go.

use imlog_events::{SessionId, UserId};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Pushes queued per connection; a client that lets more pile up, or more
/// than [`OUTBOX_BYTES`] of them, is disconnected (it catches up by sync
/// when it returns).
pub const OUTBOX: usize = 1024;
/// Bytes of pushes queued per connection at most.
pub const OUTBOX_BYTES: usize = 1024 * 1024;

/// A connection's queue of push frames, counted in frames and bytes.
pub struct Frames {
    rx: mpsc::Receiver<String>,
    queued: Arc<AtomicUsize>,
}

impl Frames {
    pub async fn recv(&mut self) -> Option<String> {
        let frame = self.rx.recv().await?;
        self.queued.fetch_sub(frame.len(), Ordering::Relaxed);
        Some(frame)
    }
}

/// Why the hub wants a connection closed: a WebSocket close code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closing {
    pub code: u16,
    pub reason: &'static str,
}

/// The hub's handles on one connection task.
pub struct Mailbox {
    /// Push frames, bounded.
    pub frames: Frames,
    /// Set once when the connection must close; outside the bounded queue so
    /// that it gets through even when the queue is full.
    pub closing: watch::Receiver<Option<Closing>>,
    /// This is the user's only connection here (they just came online on
    /// this gateway).
    pub first: bool,
}

pub mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;
    pub const KICKED: u16 = 4001;
    pub const SESSION_ENDED: u16 = 4002;
    pub const LOGIN_TIMEOUT: u16 = 4003;
    pub const SLOW_CONSUMER: u16 = 4008;
}

struct Member {
    conn_id: u64,
    session_id: SessionId,
    start_offset: i64,
    frames: mpsc::Sender<String>,
    /// Bytes in `frames`.
    queued: Arc<AtomicUsize>,
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

/// How many recent session starts and ends the hub remembers: enough to
/// cover the moment between a login's append and its connection
/// registering, bounded so memory does not grow with the user base.
const REMEMBERED: usize = 100_000;

#[derive(Default)]
pub struct Hub {
    next_conn: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    users: HashMap<UserId, Vec<Member>>,
    /// The newest session start seen in the log per user: a connection of an
    /// older session that registers after it (the fan-out can be faster than
    /// the login's reply) is kicked at once.
    newest_start: Recent<UserId, (SessionId, i64)>,
    /// Sessions seen ending in the log, for the same race with `auth`.
    ended: Recent<SessionId, ()>,
}

/// A map that forgets its oldest keys past `REMEMBERED`.
struct Recent<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K, V> Default for Recent<K, V> {
    fn default() -> Self {
        Recent {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy, V> Recent<K, V> {
    fn insert(&mut self, key: K, value: V) {
        if self.map.insert(key, value).is_none() {
            self.order.push_back(key);
            while self.order.len() > REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }
}

impl Hub {
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent
        // (every operation is a single insert or retain), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(
        &self,
        conn_id: u64,
        user_id: UserId,
        session_id: SessionId,
        start_offset: i64,
    ) -> Mailbox {
        let (frames_tx, rx) = mpsc::channel(OUTBOX);
        let queued = Arc::new(AtomicUsize::new(0));
        let frames = Frames {
            rx,
            queued: queued.clone(),
        };
        let (closing_tx, closing) = watch::channel(None);
        let member = Member {
            conn_id,
            session_id,
            start_offset,
            frames: frames_tx,
            queued,
            closing: closing_tx,
        };
        let mut state = self.state();
        // The log may already have said this session is over.
        if let Some(&(newest, offset)) = state.newest_start.get(&user_id) {
            if newest != session_id && offset > start_offset {
                member.close(close_code::KICKED, KICKED_REASON);
            }
        }
        if state.ended.get(&session_id).is_some() {
            member.close(close_code::SESSION_ENDED, ENDED_REASON);
        }
        let members = state.users.entry(user_id).or_default();
        members.push(member);
        let first = members.len() == 1;
        metrics::gauge!("imlog_gateway_online_connections").increment(1.0);
        Mailbox {
            frames,
            closing,
            first,
        }
    }

    /// Forgets a connection; true when it was the user's last one here.
    pub fn unregister(&self, conn_id: u64, user_id: UserId) -> bool {
        let mut state = self.state();
        let Some(members) = state.users.get_mut(&user_id) else {
            return false;
        };
        let before = members.len();
        members.retain(|m| m.conn_id != conn_id);
        if members.len() < before {
            metrics::gauge!("imlog_gateway_online_connections").decrement(1.0);
        }
        if members.is_empty() {
            state.users.remove(&user_id);
            before > 0
        } else {
            false
        }
    }

    /// Whether any of `users` is connected here.
    pub fn holds_any(&self, users: impl IntoIterator<Item = UserId>) -> bool {
        let state = self.state();
        users.into_iter().any(|u| state.users.contains_key(&u))
    }

    /// Queues a frame for every connection of `user_id` here.
    pub fn deliver(&self, user_id: UserId, frame: &str) {
        self.deliver_all([user_id], frame);
    }

    /// Queues a frame for every connection here of each of `users` (a
    /// group's members: one lock for all of them).
    pub fn deliver_all(&self, users: impl IntoIterator<Item = UserId>, frame: &str) {
        let state = self.state();
        if state.users.is_empty() {
            return;
        }
        for user_id in users {
            for member in state.users.get(&user_id).into_iter().flatten() {
                let over = member.queued.load(Ordering::Relaxed) + frame.len() > OUTBOX_BYTES;
                let sent = if over {
                    Err(mpsc::error::TrySendError::Full(String::new()))
                } else {
                    member.frames.try_send(frame.to_owned())
                };
                match sent {
                    Ok(()) => {
                        member.queued.fetch_add(frame.len(), Ordering::Relaxed);
                        metrics::counter!("imlog_gateway_pushes_total").increment(1);
                    }
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
    }

    /// A session of `user_id` started at `offset`: every connection here of
    /// an older session of that user is kicked, now or when it registers.
    pub fn session_started(&self, user_id: UserId, session_id: SessionId, offset: i64) {
        let mut state = self.state();
        let newer = state
            .newest_start
            .get(&user_id)
            .is_none_or(|&(_, seen)| offset > seen);
        if newer {
            state.newest_start.insert(user_id, (session_id, offset));
        }
        let older = |m: &&Member| m.session_id != session_id && m.start_offset < offset;
        for member in state
            .users
            .get(&user_id)
            .into_iter()
            .flatten()
            .filter(older)
        {
            member.close(close_code::KICKED, KICKED_REASON);
        }
    }

    /// A session ended (logout elsewhere): its connections close, now or
    /// when they register.
    pub fn session_ended(&self, user_id: UserId, session_id: SessionId) {
        let mut state = self.state();
        state.ended.insert(session_id, ());
        let this = |m: &&Member| m.session_id == session_id;
        for member in state.users.get(&user_id).into_iter().flatten().filter(this) {
            member.close(close_code::SESSION_ENDED, ENDED_REASON);
        }
    }
}

const KICKED_REASON: &str = "logged in elsewhere";
const ENDED_REASON: &str = "session ended";

#[cfg(test)]
mod tests {
    use super::*;

    fn session(n: u128) -> SessionId {
        SessionId::new(uuid::Uuid::from_u128(n))
    }

    #[tokio::test]
    async fn a_new_session_kicks_only_older_sessions_of_the_same_user() {
        let hub = Hub::default();
        let alice = UserId::new(1);
        let mut old = hub.register(1, alice, session(1), 10);
        let mut new = hub.register(2, alice, session(2), 20);
        let mut bob = hub.register(3, UserId::new(2), session(3), 5);

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

        hub.deliver(UserId::new(2), "hello");
        assert_eq!(bob.frames.recv().await.as_deref(), Some("hello"));
    }

    #[tokio::test]
    async fn a_connection_registering_after_its_kick_or_end_is_closed_at_once() {
        let hub = Hub::default();
        let alice = UserId::new(1);
        // The fan-out saw the newer login (offset 11) before the older one's
        // connection (offset 10) registered.
        hub.session_started(alice, session(2), 11);
        let mut late = hub.register(1, alice, session(1), 10);
        assert_eq!(
            late.closing.borrow_and_update().map(|c| c.code),
            Some(close_code::KICKED)
        );
        let mut newest = hub.register(2, alice, session(2), 11);
        assert!(newest.closing.borrow_and_update().is_none());

        // A logout the fan-out saw before an `auth` with that session's token.
        hub.session_ended(UserId::new(3), session(3));
        let mut resumed = hub.register(3, UserId::new(3), session(3), 0);
        assert_eq!(
            resumed.closing.borrow_and_update().map(|c| c.code),
            Some(close_code::SESSION_ENDED)
        );
    }

    #[tokio::test]
    async fn queued_pushes_are_bounded_in_bytes_too() {
        let hub = Hub::default();
        let mut slow = hub.register(1, UserId::new(1), session(1), 0);
        let big = "x".repeat(100 * 1024);
        for _ in 0..10 {
            hub.deliver(UserId::new(1), &big);
        }
        assert!(slow.closing.borrow_and_update().is_none(), "1000 KiB fit");
        // Reading frees room.
        assert_eq!(slow.frames.recv().await.map(|f| f.len()), Some(big.len()));
        hub.deliver(UserId::new(1), &big);
        assert!(slow.closing.borrow_and_update().is_none());
        hub.deliver(UserId::new(1), &big);
        assert_eq!(
            slow.closing.borrow_and_update().map(|c| c.code),
            Some(close_code::SLOW_CONSUMER),
            "past 1 MiB"
        );
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_is_closed_not_buffered_without_bound() {
        let hub = Hub::default();
        let mut slow = hub.register(1, UserId::new(1), session(1), 0);
        for _ in 0..OUTBOX + 10 {
            hub.deliver(UserId::new(1), "x");
        }
        assert_eq!(
            slow.closing.borrow_and_update().map(|c| c.code),
            Some(close_code::SLOW_CONSUMER)
        );
        hub.unregister(1, UserId::new(1));
        hub.deliver(UserId::new(1), "nobody");
    }
}
