//! Messages, with a gapless per-thread sequence number.

use crate::{Projection, ProjectionError};
use async_trait::async_trait;
use imlog_events::{Envelope, Event, MessageId, MessageKind, Topic};
use imlog_log::Record;
use tokio_postgres::Transaction;

pub struct Messages;

pub(crate) fn kind_name(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Text => "text",
        MessageKind::Image => "image",
        MessageKind::File => "file",
        MessageKind::Video => "video",
    }
}

#[async_trait]
impl Projection for Messages {
    fn name(&self) -> &'static str {
        "messages"
    }

    fn topics(&self) -> &'static [Topic] {
        &[Topic::Messages]
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        record: &Record,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        let Event::MessagePosted(e) = &envelope.event else {
            return Ok(());
        };
        // A retried send carries the same unique_id: the first one counts.
        let duplicate = tx
            .query_opt(
                "SELECT 1 FROM messages WHERE sender_id = $1 AND unique_id = $2",
                &[&e.sender_id.0, &e.unique_id],
            )
            .await?
            .is_some();
        if duplicate {
            return Ok(());
        }
        let seq: i64 = tx
            .query_one(
                "INSERT INTO thread_seqs (thread_id, last_seq) VALUES ($1, 1)
                 ON CONFLICT (thread_id) DO UPDATE SET last_seq = thread_seqs.last_seq + 1
                 RETURNING last_seq",
                &[&e.thread_id.0],
            )
            .await?
            .get(0);
        let message_id = MessageId::from_position(record.position());
        tx.execute(
            "INSERT INTO messages (message_id, thread_id, seq, sender_id, unique_id, kind, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &message_id.0,
                &e.thread_id.0,
                &seq,
                &e.sender_id.0,
                &e.unique_id,
                &kind_name(e.kind),
                &e.body,
                &envelope.meta.occurred_at,
            ],
        )
        .await?;
        Ok(())
    }
}
