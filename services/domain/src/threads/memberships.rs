//! The private-thread memberships a gateway keeps, so that a private send
//! asks the read model nothing before its append.
//!
//! A private thread's membership never changes: its two users are members
//! from its creation on, with no role, mute or leaving. So a membership read
//! once stays true and needs no invalidation. A group's membership changes
//! (members leave, are removed or muted), so group sends read it every time.

use imlog_events::{ThreadId, UserId};
use imlog_projections::threads::{Membership, ThreadKind};
use std::collections::HashMap;
use std::sync::Mutex;

/// Memberships kept; past it the cache starts afresh (~100 bytes each).
const CAPACITY: usize = 100_000;

#[derive(Default)]
pub struct Memberships {
    private: Mutex<HashMap<(ThreadId, UserId), Membership>>,
}

impl Memberships {
    fn private(&self) -> std::sync::MutexGuard<'_, HashMap<(ThreadId, UserId), Membership>> {
        self.private.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `user`'s membership of `thread_id`, if kept.
    pub fn get(&self, thread_id: ThreadId, user: UserId) -> Option<Membership> {
        self.private().get(&(thread_id, user)).cloned()
    }

    /// Keeps a membership read from the read model if it cannot change.
    pub fn keep(&self, thread_id: ThreadId, user: UserId, membership: &Membership) {
        if membership.kind != ThreadKind::Private {
            return;
        }
        let mut private = self.private();
        if private.len() >= CAPACITY {
            private.clear();
        }
        private.insert((thread_id, user), membership.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imlog_events::GroupRole;

    fn membership(kind: ThreadKind) -> Membership {
        Membership {
            kind,
            role: GroupRole::Member,
            muted_until: None,
            peer: (kind == ThreadKind::Private).then(|| UserId::new(3)),
            members: 2,
            as_of: 10,
        }
    }

    #[test]
    fn only_private_memberships_are_kept() {
        let m = Memberships::default();
        let (t, u) = (ThreadId::new(7), UserId::new(2));
        assert!(m.get(t, u).is_none());
        m.keep(t, u, &membership(ThreadKind::Group));
        assert!(m.get(t, u).is_none(), "a group's membership changes");
        m.keep(t, u, &membership(ThreadKind::Private));
        assert_eq!(m.get(t, u).and_then(|m| m.peer), Some(UserId::new(3)));
        assert!(m.get(t, UserId::new(4)).is_none());
    }
}
