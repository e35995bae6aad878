//! Reads of messages.

use crate::read_model::overfetch;
use crate::{Page, ReadError, ReadModel};
use chrono::{DateTime, Utc};
use imlog_events::{MessageId, MessageKind, ThreadId, UserId};
use std::collections::HashMap;
use tokio_postgres::types::Type;
use tokio_postgres::Row;

#[derive(Debug, Clone)]
pub struct MessageRow {
    pub message_id: MessageId,
    pub thread_id: ThreadId,
    pub seq: i64,
    pub sender_id: UserId,
    pub unique_id: String,
    pub kind: MessageKind,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "message_id, thread_id, seq, sender_id, unique_id, kind, body, created_at";

impl MessageRow {
    fn from_row(r: &Row) -> MessageRow {
        MessageRow {
            message_id: MessageId::new(r.get(0)),
            thread_id: ThreadId::new(r.get(1)),
            seq: r.get(2),
            sender_id: UserId::new(r.get(3)),
            unique_id: r.get(4),
            // The projection writes only names of this enum.
            kind: MessageKind::from_name(r.get(5)).unwrap_or(MessageKind::Text),
            body: r.get(6),
            created_at: r.get(7),
        }
    }
}

impl ReadModel {
    /// A thread's messages with `message_id > since`, ascending.
    pub async fn messages_page(
        &self,
        thread_id: ThreadId,
        since: MessageId,
        limit: usize,
    ) -> Result<Page<MessageRow>, ReadError> {
        let rows = self
            .client()
            .await?
            .query_typed(
                &format!(
                    "SELECT {COLUMNS} FROM messages WHERE thread_id = $1 AND message_id > $2
                     ORDER BY message_id LIMIT $3"
                ),
                &[
                    (&thread_id.get(), Type::INT8),
                    (&since.get(), Type::INT8),
                    (&overfetch(limit), Type::INT8),
                ],
            )
            .await?;
        let items = rows.iter().map(MessageRow::from_row).collect();
        Ok(Page::from_overfetch(items, limit, since.get(), |m| {
            m.message_id.get()
        }))
    }

    /// Every thread's messages with `message_id > after`, in id order: the
    /// history export, a page at a time.
    pub async fn messages_after(
        &self,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<MessageRow>, ReadError> {
        Ok(self
            .client()
            .await?
            .query_typed(
                &format!("SELECT {COLUMNS} FROM messages WHERE message_id > $1 ORDER BY message_id LIMIT $2"),
                &[(&after.get(), Type::INT8), (&(limit as i64), Type::INT8)],
            )
            .await?
            .iter()
            .map(MessageRow::from_row)
            .collect())
    }

    /// The messages that these `unique_id`s of a sender already produced in a
    /// thread (a retried send), by `unique_id`.
    pub async fn messages_by_unique_ids(
        &self,
        thread_id: ThreadId,
        sender_id: UserId,
        unique_ids: &[&str],
    ) -> Result<HashMap<String, MessageId>, ReadError> {
        if unique_ids.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self
            .client()
            .await?
            .query_typed(
                "SELECT unique_id, message_id FROM messages
                 WHERE thread_id = $1 AND sender_id = $2 AND unique_id = ANY($3)",
                &[
                    (&thread_id.get(), Type::INT8),
                    (&sender_id.get(), Type::INT8),
                    (&unique_ids, Type::TEXT_ARRAY),
                ],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), MessageId::new(r.get(1))))
            .collect())
    }
}
