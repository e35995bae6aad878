//! Reads of messages.

use crate::read_model::overfetch;
use crate::{Page, ReadError, ReadModel};
use chrono::{DateTime, Utc};
use imlog_events::{
    MediaAttachment, MediaState, MessageId, MessageKind, ThreadId, UploadId, UserId,
};
use imlog_postgres::Prepared;
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
    /// The sender withdrew it; `body` is empty.
    pub recalled: bool,
    /// An image, file or video message's upload (none once recalled).
    pub media: Option<MediaAttachment>,
}

/// A media message showing an upload.
#[derive(Debug, Clone)]
pub struct MediaMessageRow {
    pub thread_id: ThreadId,
    pub message_id: MessageId,
    pub sender_id: UserId,
    pub state: MediaState,
}

/// One member's read marker.
#[derive(Debug, Clone)]
pub struct ReceiptRow {
    pub user_id: UserId,
    pub up_to: MessageId,
    pub at: DateTime<Utc>,
}

pub(crate) const COLUMNS: &str =
    "message_id, thread_id, seq, sender_id, unique_id, kind, body, created_at, recalled_at IS NOT NULL, media";

impl MessageRow {
    /// From the columns of [`COLUMNS`], starting at `at`.
    pub(crate) fn from_row_at(r: &Row, at: usize) -> MessageRow {
        MessageRow {
            message_id: MessageId::new(r.get(at)),
            thread_id: ThreadId::new(r.get(at + 1)),
            seq: r.get(at + 2),
            sender_id: UserId::new(r.get(at + 3)),
            unique_id: r.get(at + 4),
            // The projection writes only names of this enum.
            kind: MessageKind::from_name(r.get(at + 5)).unwrap_or(MessageKind::Text),
            body: r.get(at + 6),
            created_at: r.get(at + 7),
            recalled: r.get(at + 8),
            media: r
                .get::<_, Option<serde_json::Value>>(at + 9)
                .and_then(|m| serde_json::from_value(m).ok()),
        }
    }

    fn from_row(r: &Row) -> MessageRow {
        MessageRow::from_row_at(r, 0)
    }
}

impl ReadModel {
    /// The (unrecalled) media messages that show `upload_id`.
    pub async fn media_messages(
        &self,
        upload_id: UploadId,
    ) -> Result<Vec<MediaMessageRow>, ReadError> {
        let rows = self
            .client()
            .await?
            .query_prepared(
                "SELECT thread_id, message_id, sender_id, media->>'state' FROM messages
                 WHERE media IS NOT NULL AND media->>'upload_id' = $1 ORDER BY message_id",
                &[(&upload_id.to_string(), Type::TEXT)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| MediaMessageRow {
                thread_id: ThreadId::new(r.get(0)),
                message_id: MessageId::new(r.get(1)),
                sender_id: UserId::new(r.get(2)),
                state: match r.get::<_, &str>(3) {
                    "uploaded" => MediaState::Uploaded,
                    "failed" => MediaState::Failed,
                    _ => MediaState::Uploading,
                },
            })
            .collect())
    }

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
            .query_prepared(
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

    /// A thread's messages with `message_id < before`: the page just before
    /// it (scrollback), ascending; `next_cursor` is its first id, to ask for
    /// the page before that.
    pub async fn messages_before(
        &self,
        thread_id: ThreadId,
        before: MessageId,
        limit: usize,
    ) -> Result<Page<MessageRow>, ReadError> {
        let rows = self
            .client()
            .await?
            .query_prepared(
                &format!(
                    "SELECT {COLUMNS} FROM messages WHERE thread_id = $1 AND message_id < $2
                     ORDER BY message_id DESC LIMIT $3"
                ),
                &[
                    (&thread_id.get(), Type::INT8),
                    (&before.get(), Type::INT8),
                    (&overfetch(limit), Type::INT8),
                ],
            )
            .await?;
        let newest_first: Vec<MessageRow> = rows.iter().map(MessageRow::from_row).collect();
        let mut page =
            Page::from_overfetch(newest_first, limit, before.get(), |m| m.message_id.get());
        page.items.reverse();
        Ok(page)
    }

    /// The messages that earlier sends of these `(thread, sender,
    /// unique_id)`s produced: the ones found, in no particular order. Many
    /// concurrent sends are looked up in one statement
    /// (`domain::messages::earlier`).
    pub async fn sent(
        &self,
        wanted: &[(ThreadId, UserId, &str)],
    ) -> Result<Vec<(ThreadId, UserId, String, MessageId)>, ReadError> {
        let threads: Vec<i64> = wanted.iter().map(|w| w.0.get()).collect();
        let senders: Vec<i64> = wanted.iter().map(|w| w.1.get()).collect();
        let unique_ids: Vec<&str> = wanted.iter().map(|w| w.2).collect();
        let rows = self
            .client()
            .await?
            .query_prepared(
                // One index probe per item. The planner, which
                // underestimates a sender's messages in a thread (the two
                // columns are correlated), would otherwise probe by thread
                // and sender only and filter all of them (a join it
                // flattens); OFFSET 0 keeps the subquery as written.
                "SELECT x.thread_id, x.sender_id, x.unique_id, x.message_id
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS u(thread_id, sender_id, unique_id)
                 CROSS JOIN LATERAL (
                     SELECT thread_id, sender_id, unique_id, message_id FROM messages
                     WHERE thread_id = u.thread_id AND sender_id = u.sender_id
                       AND unique_id = u.unique_id OFFSET 0
                 ) x",
                &[
                    (&threads, Type::INT8_ARRAY),
                    (&senders, Type::INT8_ARRAY),
                    (&unique_ids, Type::TEXT_ARRAY),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    ThreadId::new(r.get(0)),
                    UserId::new(r.get(1)),
                    r.get(2),
                    MessageId::new(r.get(3)),
                )
            })
            .collect())
    }

    /// One message of a thread.
    pub async fn message(
        &self,
        thread_id: ThreadId,
        message_id: MessageId,
    ) -> Result<Option<MessageRow>, ReadError> {
        Ok(self
            .client()
            .await?
            .query_prepared_opt(
                &format!("SELECT {COLUMNS} FROM messages WHERE thread_id = $1 AND message_id = $2"),
                &[
                    (&thread_id.get(), Type::INT8),
                    (&message_id.get(), Type::INT8),
                ],
            )
            .await?
            .as_ref()
            .map(MessageRow::from_row))
    }

    /// The members' read markers of a thread, by user id after `after`.
    pub async fn receipts_page(
        &self,
        thread_id: ThreadId,
        after: UserId,
        limit: usize,
    ) -> Result<Page<ReceiptRow>, ReadError> {
        let rows = self
            .client()
            .await?
            .query_prepared(
                "SELECT r.user_id, r.read_message_id, r.read_at FROM thread_reads r
                 JOIN thread_members m ON m.thread_id = r.thread_id AND m.user_id = r.user_id
                 WHERE r.thread_id = $1 AND r.user_id > $2 ORDER BY r.user_id LIMIT $3",
                &[
                    (&thread_id.get(), Type::INT8),
                    (&after.get(), Type::INT8),
                    (&overfetch(limit), Type::INT8),
                ],
            )
            .await?;
        let items = rows
            .iter()
            .map(|r| ReceiptRow {
                user_id: UserId::new(r.get(0)),
                up_to: MessageId::new(r.get(1)),
                at: r.get(2),
            })
            .collect();
        Ok(Page::from_overfetch(items, limit, after.get(), |r| {
            r.user_id.get()
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
            .query_prepared(
                &format!("SELECT {COLUMNS} FROM messages WHERE message_id > $1 ORDER BY message_id LIMIT $2"),
                &[(&after.get(), Type::INT8), (&(limit as i64), Type::INT8)],
            )
            .await?
            .iter()
            .map(MessageRow::from_row)
            .collect())
    }
}
