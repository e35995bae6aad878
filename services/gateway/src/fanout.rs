//! Delivery to online users: every gateway tails the topics of its
//! [`ROUTES`] from their end and hands each routed event to the connections
//! it holds. Push is an optimisation; sync is the truth, so this reader
//! keeps no offsets and starts at the end after a restart.

use crate::hub::Hub;
use imlog_domain::messages::logged_view;
use imlog_events::{
    Envelope, Event, FriendAccepted, FriendRequested, MessagePosted, SessionEnded, SessionStarted,
    Topic,
};
use imlog_log::{read_from_end, Record, SharedLog};
use imlog_protocol::Push;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the fan-out does with one event type. The fan-out reads exactly the
/// topics of these event types.
pub struct Route {
    pub event: &'static str,
    pub topic: Topic,
    pub deliver: fn(&Hub, &Record, &Envelope),
}

/// The table: one row per event type that reaches connections.
pub const ROUTES: &[Route] = &[
    Route {
        event: MessagePosted::TYPE_NAME,
        topic: MessagePosted::TOPIC,
        deliver: push_message,
    },
    Route {
        event: SessionStarted::TYPE_NAME,
        topic: SessionStarted::TOPIC,
        deliver: kick_older_sessions,
    },
    Route {
        event: SessionEnded::TYPE_NAME,
        topic: SessionEnded::TOPIC,
        deliver: close_ended_session,
    },
    Route {
        event: FriendRequested::TYPE_NAME,
        topic: FriendRequested::TOPIC,
        deliver: push_friend_request,
    },
    Route {
        event: FriendAccepted::TYPE_NAME,
        topic: FriendAccepted::TOPIC,
        deliver: push_friend_accepted,
    },
];

/// A friend request goes to the one asked.
fn push_friend_request(hub: &Hub, _record: &Record, envelope: &Envelope) {
    if let Event::FriendRequested(r) = &envelope.event {
        let push = Push::FriendRequest {
            from: r.from,
            greeting: r.greeting.clone(),
        };
        hub.deliver(r.to, &push.frame());
    }
}

/// An acceptance goes to both (the acceptor's other devices learn it too).
fn push_friend_accepted(hub: &Hub, _record: &Record, envelope: &Envelope) {
    if let Event::FriendAccepted(a) = &envelope.event {
        let frame = Push::FriendAccepted {
            from: a.from,
            to: a.to,
        }
        .frame();
        hub.deliver(a.from, &frame);
        hub.deliver(a.to, &frame);
    }
}

/// A message goes to every recipient named in it.
fn push_message(hub: &Hub, record: &Record, envelope: &Envelope) {
    if let Event::MessagePosted(m) = &envelope.event {
        let frame =
            Push::Message(logged_view(record.position(), m, envelope.meta.occurred_at)).frame();
        for &recipient in &m.recipients {
            hub.deliver(recipient, &frame);
        }
    }
}

/// A new login anywhere kicks the user's older sessions held here.
fn kick_older_sessions(hub: &Hub, record: &Record, envelope: &Envelope) {
    if let Event::SessionStarted(s) = &envelope.event {
        hub.session_started(s.user_id, s.session_id, record.offset);
    }
}

/// A logout anywhere closes that session's connections here.
fn close_ended_session(hub: &Hub, _record: &Record, envelope: &Envelope) {
    if let Event::SessionEnded(s) = &envelope.event {
        hub.session_ended(s.user_id, s.session_id);
    }
}

fn topics() -> Vec<Topic> {
    let topics: BTreeSet<Topic> = ROUTES.iter().map(|r| r.topic).collect();
    topics.into_iter().collect()
}

pub async fn run(log: SharedLog, hub: Arc<Hub>, shutdown: CancellationToken) {
    let topics = topics();
    while !shutdown.is_cancelled() {
        let mut reader = match read_from_end(log.as_ref(), &topics).await {
            Ok(reader) => reader,
            Err(e) => {
                tracing::warn!(error = %e, "fanout cannot open the log; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return,
                batch = reader.next_batch(500, Duration::from_secs(1)) => batch,
            };
            match batch {
                Ok(records) => records.iter().for_each(|r| route(&hub, r)),
                Err(e) => {
                    // Pushes missed while reopening are recovered by sync.
                    tracing::warn!(error = %e, "fanout read failed; reopening at the end");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => break,
                    }
                }
            }
        }
    }
}

fn route(hub: &Hub, record: &Record) {
    let Ok(envelope) = Envelope::decode(&record.payload) else {
        return;
    };
    let name = envelope.event.type_name();
    if let Some(route) = ROUTES.iter().find(|r| r.event == name) {
        (route.deliver)(hub, record, &envelope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_names_a_known_event_once() {
        let mut seen = BTreeSet::new();
        for r in ROUTES {
            assert!(imlog_events::TYPE_NAMES.contains(&r.event), "{}", r.event);
            assert!(seen.insert(r.event), "{} routed twice", r.event);
        }
        assert_eq!(
            topics(),
            vec![Topic::Sessions, Topic::Messages, Topic::Social]
        );
    }
}
