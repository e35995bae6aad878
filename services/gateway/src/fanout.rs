//! Delivery to online users: every gateway tails the messages and sessions
//! topics from their end and hands each event to the connections it holds.
//! Push is an optimisation; sync is the truth, so this reader keeps no
//! offsets and starts at the end after a restart.

use crate::hub::Hub;
use crate::protocol::push;
use crate::Gateway;
use imlog_events::{Envelope, Event, MessageId, Topic};
use imlog_log::{read_from_end, Record, SharedLog};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(log: SharedLog, gateway: Arc<Gateway>, shutdown: CancellationToken) {
    let hub = &gateway.hub;
    while !shutdown.is_cancelled() {
        let mut reader =
            match read_from_end(log.as_ref(), &[Topic::Messages, Topic::Sessions]).await {
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
                Ok(records) => records.iter().for_each(|r| deliver(hub, r)),
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

fn deliver(hub: &Hub, record: &Record) {
    let Ok(envelope) = Envelope::decode(&record.payload) else {
        return;
    };
    match envelope.event {
        Event::MessagePosted(m) => {
            let frame = push(
                "message",
                json!({
                    "message_id": MessageId::from_position(record.position()),
                    "thread_id": m.thread_id,
                    "sender_id": m.sender_id,
                    "unique_id": m.unique_id,
                    "kind": m.kind,
                    "body": m.body,
                    "created_at": envelope.meta.occurred_at,
                }),
            );
            for recipient in m.recipients {
                hub.deliver(recipient, &frame);
            }
        }
        Event::SessionStarted(s) => hub.session_started(s.user_id, s.session_id, record.offset),
        Event::SessionEnded(s) => hub.session_ended(s.user_id, s.session_id),
        _ => {}
    }
}
