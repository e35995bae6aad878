//! The acceptance process: `friend.accepted` → the pair's private thread →
//! the requester's greeting (if any) and a system line as its first
//! messages, each pushed to both. Exactly once:
//! - only the acceptance that decided the request acts (the friends
//!   projection records which one), so accepting twice, or two people
//!   accepting each other at once, is one friendship;
//! - every step is deterministic from that acceptance and idempotent where
//!   it lands: the threads projection keeps the first thread of a pair, the
//!   messages projection the first message of a (thread, sender,
//!   `unique_id`). Re-issued after a crash, a step changes nothing.

use crate::journal::{StoreError, Writes};
use crate::processes::{failpoint, ProcessError, ProcessManager, Trigger};
use crate::Journal;
use async_trait::async_trait;
use imlog_events::{Event, MessageKind, MessagePosted, PrivateThreadCreated, Topic};

/// The system line that opens every friendship's thread.
pub const WELCOME: &str = "We are friends now!";

pub struct FriendAcceptance;

#[async_trait]
impl ProcessManager for FriendAcceptance {
    fn name(&self) -> &'static str {
        "friend_acceptance"
    }

    fn topics(&self) -> &'static [Topic] {
        &[Topic::Social]
    }

    async fn react(&self, journal: &Journal, trigger: &Trigger<'_>) -> Result<(), ProcessError> {
        let Event::FriendAccepted(accepted) = &trigger.envelope.event else {
            return Ok(());
        };
        let read = journal.read();
        // The friends projection decides which acceptance counts: wait
        // until it has seen this one.
        let mut writes = Writes::default();
        writes.record(Topic::Social, trigger.record.position());
        journal.settle(&mut writes, &[Topic::Social]).await?;
        let request = read
            .friend_request(accepted.from, accepted.to)
            .await
            .map_err(StoreError::from)?;
        let decisive = request
            .as_ref()
            .is_some_and(|r| r.accepted_at == Some(trigger.record.position()));
        if !decisive {
            return Ok(());
        }
        let greeting = request.map(|r| r.greeting).unwrap_or_default();
        let (from, to) = (accepted.from, accepted.to);
        let (low, high) = if from < to { (from, to) } else { (to, from) };

        if read
            .private_thread(low, high)
            .await
            .map_err(StoreError::from)?
            .is_none()
        {
            let create = trigger.step(
                "thread",
                PrivateThreadCreated {
                    user_low: low,
                    user_high: high,
                },
            );
            settle_all(journal, &mut writes, &[create], Topic::Threads).await?;
            failpoint("friend_acceptance.thread");
        }
        let thread_id = read
            .private_thread(low, high)
            .await
            .map_err(StoreError::from)?
            .ok_or_else(|| ProcessError::Other(format!("the thread of {low}:{high} is missing")))?;

        let id = trigger.envelope.meta.event_id.simple();
        let message = |sender, kind, unique_id: String, body: &str| MessagePosted {
            thread_id,
            sender_id: sender,
            unique_id,
            kind,
            body: body.to_owned(),
            // Both see these in their thread at once.
            recipients: vec![from, to],
            members_as_of: None,
            media: None,
        };
        if !greeting.is_empty() {
            let text = MessageKind::Text;
            let greeting = message(from, text, format!("friend-{id}-greeting"), &greeting);
            append(journal, &mut writes, trigger.step("greeting", greeting)).await?;
            failpoint("friend_acceptance.greeting");
        }
        let welcome = message(
            to,
            MessageKind::System,
            format!("friend-{id}-welcome"),
            WELCOME,
        );
        append(journal, &mut writes, trigger.step("welcome", welcome)).await?;
        // Appended, not yet marked done: a crash here re-runs every step.
        failpoint("friend_acceptance.welcome");
        tracing::info!(%from, %to, %thread_id, "friendship opened");
        Ok(())
    }
}

async fn append(
    journal: &Journal,
    writes: &mut Writes,
    step: imlog_events::Envelope,
) -> Result<(), ProcessError> {
    for result in journal.append_all(writes, &[step]).await {
        result?;
    }
    Ok(())
}

/// Appends `steps` and waits until `topic`'s projections have them.
async fn settle_all(
    journal: &Journal,
    writes: &mut Writes,
    steps: &[imlog_events::Envelope],
    topic: Topic,
) -> Result<(), ProcessError> {
    for result in journal.append_all(writes, steps).await {
        result?;
    }
    journal.settle(writes, &[topic]).await?;
    Ok(())
}
