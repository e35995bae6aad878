//! Process managers: multi-step commands driven by the log.
//!
//! A step that spans topics (friend acceptance: friend rows, a private
//! thread, the first messages; upload completion: the object, then the
//! message) cannot be one append. A [`ProcessManager`] reads the log from its
//! own stored offsets, and for each event that starts or advances a process
//! it issues the next steps through the [`Journal`]. Its offset is stored
//! only after those steps were appended, so a crash in between makes it
//! react to the same event again: every step must therefore be recognisable
//! as the same step — [`Trigger::step`] gives it a deterministic event id,
//! the trigger's time and causation — and be idempotent where it lands
//! (a projection keeps the first of two equal steps). That is how each
//! process completes exactly once whichever process dies between steps.
//!
//! Kafka transactions would be the other way; the broker CI has has no
//! EndTxn (docs/KNOWN-LIMITS.md), and this one works on either log.

mod runner;

pub use runner::{run_all, MIGRATIONS, SCHEMA};

use crate::journal::{Journal, StoreError};
use async_trait::async_trait;
use imlog_events::{Envelope, Event, EventMeta, Topic};
use imlog_log::Record;
use uuid::Uuid;

/// The event a process manager reacts to, where it sits in the log.
pub struct Trigger<'a> {
    pub record: &'a Record,
    pub envelope: &'a Envelope,
}

/// The namespace of step event ids (UUID v5 of the trigger's id and the step's name).
const STEP_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b0e_9d4a_4c7e_8a51_3e2f_0b9d_7c11);

impl Trigger<'_> {
    /// The envelope of the step called `name` caused by this trigger: the
    /// same every time it is issued again, so downstream can tell a repeat.
    pub fn step(&self, name: &str, event: impl Into<Event>) -> Envelope {
        let cause = &self.envelope.meta;
        let mut seed = cause.event_id.as_bytes().to_vec();
        seed.extend_from_slice(name.as_bytes());
        Envelope::new(
            EventMeta {
                event_id: Uuid::new_v5(&STEP_NAMESPACE, &seed),
                occurred_at: cause.occurred_at,
                actor: cause.actor,
                correlation_id: cause.correlation_id,
                causation_id: Some(cause.event_id),
            },
            event,
        )
    }
}

/// A test hook: with `IMLOG_FAILPOINT=<name>` in its environment, the
/// process aborts when a process manager reaches the point called `name` —
/// how the tests kill a process between two of its steps. Unset, it costs a
/// comparison.
pub fn failpoint(name: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("IMLOG_FAILPOINT").ok());
    if point.as_deref() == Some(name) {
        tracing::error!(failpoint = name, "failpoint reached; aborting");
        std::process::abort();
    }
}

/// Every process manager; the projector role runs them.
pub fn all(objects: &imlog_objects::Objects) -> Vec<std::sync::Arc<dyn ProcessManager>> {
    use std::sync::Arc;
    vec![
        Arc::new(crate::friends::acceptance::FriendAcceptance),
        Arc::new(crate::groups::lines::GroupLines),
        Arc::new(crate::files::completion::UploadCompletion {
            objects: objects.clone(),
        }),
        Arc::new(crate::messages::media::MediaDelivery),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

#[async_trait]
pub trait ProcessManager: Send + Sync + 'static {
    /// Stable name: the key of its offsets and its lease.
    fn name(&self) -> &'static str;
    /// The topics whose events it reacts to.
    fn topics(&self) -> &'static [Topic];
    /// Issues the steps `trigger` calls for (most events call for none).
    /// May be called again for the same trigger after a crash; see the
    /// module docs.
    async fn react(&self, journal: &Journal, trigger: &Trigger<'_>) -> Result<(), ProcessError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use imlog_events::{SessionEndReason, SessionEnded, SessionId, UserId};

    #[test]
    fn a_step_is_the_same_every_time_it_is_issued() {
        let trigger = Envelope::new(
            EventMeta::new(Some(UserId::new(3)), Uuid::now_v7()),
            SessionEnded {
                user_id: UserId::new(3),
                session_id: SessionId::random(),
                reason: SessionEndReason::Logout,
            },
        );
        let record = Record {
            topic: Topic::Sessions,
            partition: 0,
            offset: 7,
            key: "3".into(),
            payload: trigger.encode(),
            appended_at: chrono::Utc::now(),
        };
        let t = Trigger {
            record: &record,
            envelope: &trigger,
        };
        let event = |_: ()| trigger.event.clone();
        let (a, b, other) = (
            t.step("one", event(())),
            t.step("one", event(())),
            t.step("two", event(())),
        );
        assert_eq!(a.meta, b.meta);
        assert_ne!(a.meta.event_id, other.meta.event_id);
        assert_eq!(a.meta.causation_id, Some(trigger.meta.event_id));
        assert_eq!(a.meta.occurred_at, trigger.meta.occurred_at);
    }
}
