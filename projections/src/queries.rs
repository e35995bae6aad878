//! Reads of the read model. Paging is by cursor (`id > cursor`), never OFFSET:
//! projections apply each partition in order, so a page is a prefix of the log
//! and a cursor never skips anything.
//!
//! Parameters are typed (`query_typed`), so each query is one round trip
//! without a prepared statement; a cached one would pin the tables of a
//! schema that `replay --swap` may rename away.

use crate::ProjectionError;
use chrono::{DateTime, Utc};
use imlog_events::{MessageId, SessionId, ThreadId, UserId};
use serde::Serialize;
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// More items follow: ask again from `next_cursor`.
    pub load_more: bool,
    /// The cursor to ask from next (the last item's id, or the given cursor).
    pub next_cursor: i64,
}

fn page<T>(mut items: Vec<T>, limit: usize, cursor: i64, id: impl Fn(&T) -> i64) -> Page<T> {
    let load_more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = items.last().map(&id).unwrap_or(cursor);
    Page {
        items,
        load_more,
        next_cursor,
    }
}

pub struct UserCredentials {
    pub user_id: UserId,
    pub password_hash: String,
}

pub async fn user_by_name(
    c: &impl GenericClient,
    name: &str,
) -> Result<Option<UserCredentials>, ProjectionError> {
    Ok(c.query_typed_opt(
        "SELECT user_id, password_hash FROM users WHERE name = $1",
        &[(&name, Type::TEXT)],
    )
    .await?
    .map(|r| UserCredentials {
        user_id: UserId(r.get(0)),
        password_hash: r.get(1),
    }))
}

#[derive(Debug, Clone, Serialize)]
pub struct UserSummary {
    pub user_id: UserId,
    pub name: String,
}

pub async fn user(
    c: &impl GenericClient,
    user_id: UserId,
) -> Result<Option<UserSummary>, ProjectionError> {
    Ok(c.query_typed_opt(
        "SELECT user_id, name FROM users WHERE user_id = $1",
        &[(&user_id.0, Type::INT8)],
    )
    .await?
    .map(|r| UserSummary {
        user_id: UserId(r.get(0)),
        name: r.get(1),
    }))
}

pub struct LiveSession {
    pub session_id: SessionId,
    pub user_id: UserId,
    /// Offset of its `session.started` event.
    pub start_offset: i64,
    pub expires_at: DateTime<Utc>,
}

/// The session a bearer token belongs to, if it has not ended or expired.
pub async fn live_session(
    c: &impl GenericClient,
    token_sha256: &str,
) -> Result<Option<LiveSession>, ProjectionError> {
    Ok(c.query_typed_opt(
        "SELECT session_id, user_id, start_offset, expires_at FROM sessions
         WHERE token_sha256 = $1 AND ended_at IS NULL AND expires_at > now()",
        &[(&token_sha256, Type::TEXT)],
    )
    .await?
    .map(|r| LiveSession {
        session_id: SessionId(r.get(0)),
        user_id: UserId(r.get(1)),
        start_offset: r.get(2),
        expires_at: r.get(3),
    }))
}

pub async fn private_thread(
    c: &impl GenericClient,
    user_low: UserId,
    user_high: UserId,
) -> Result<Option<ThreadId>, ProjectionError> {
    Ok(c.query_typed_opt(
        "SELECT thread_id FROM private_threads WHERE user_low = $1 AND user_high = $2",
        &[(&user_low.0, Type::INT8), (&user_high.0, Type::INT8)],
    )
    .await?
    .map(|r| ThreadId(r.get(0))))
}

/// The members of a thread (empty if it does not exist).
pub async fn thread_members(
    c: &impl GenericClient,
    thread_id: ThreadId,
) -> Result<Vec<UserId>, ProjectionError> {
    Ok(c.query_typed(
        "SELECT user_id FROM thread_members WHERE thread_id = $1 ORDER BY user_id",
        &[(&thread_id.0, Type::INT8)],
    )
    .await?
    .iter()
    .map(|r| UserId(r.get(0)))
    .collect())
}

#[derive(Debug, Clone, Serialize)]
pub struct ThreadSummary {
    pub thread_id: ThreadId,
    pub kind: String,
    pub created_at: DateTime<Utc>,
    /// For a private thread: the other user.
    pub peer: Option<UserSummary>,
}

/// A user's threads with `thread_id > after`, ascending.
pub async fn threads_page(
    c: &impl GenericClient,
    user_id: UserId,
    after: ThreadId,
    limit: usize,
) -> Result<Page<ThreadSummary>, ProjectionError> {
    let rows = c
        .query_typed(
            "SELECT t.thread_id, t.kind, t.created_at, peer.user_id, peer.name
             FROM thread_members m
             JOIN threads t ON t.thread_id = m.thread_id
             LEFT JOIN private_threads p ON p.thread_id = m.thread_id
             LEFT JOIN users peer ON peer.user_id =
                 CASE WHEN p.user_low = $1 THEN p.user_high ELSE p.user_low END
             WHERE m.user_id = $1 AND m.thread_id > $2
             ORDER BY m.thread_id
             LIMIT $3",
            &[
                (&user_id.0, Type::INT8),
                (&after.0, Type::INT8),
                (&(limit as i64 + 1), Type::INT8),
            ],
        )
        .await?;
    let items = rows
        .iter()
        .map(|r| ThreadSummary {
            thread_id: ThreadId(r.get(0)),
            kind: r.get(1),
            created_at: r.get(2),
            peer: r.get::<_, Option<i64>>(3).map(|id| UserSummary {
                user_id: UserId(id),
                name: r.get(4),
            }),
        })
        .collect();
    Ok(page(items, limit, after.0, |t: &ThreadSummary| {
        t.thread_id.0
    }))
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    pub message_id: MessageId,
    pub thread_id: ThreadId,
    pub seq: i64,
    pub sender_id: UserId,
    pub unique_id: String,
    pub kind: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

/// A thread's messages with `message_id > since`, ascending.
pub async fn messages_page(
    c: &impl GenericClient,
    thread_id: ThreadId,
    since: MessageId,
    limit: usize,
) -> Result<Page<MessageView>, ProjectionError> {
    let rows = c
        .query_typed(
            "SELECT message_id, thread_id, seq, sender_id, unique_id, kind, body, created_at
             FROM messages WHERE thread_id = $1 AND message_id > $2
             ORDER BY message_id LIMIT $3",
            &[
                (&thread_id.0, Type::INT8),
                (&since.0, Type::INT8),
                (&(limit as i64 + 1), Type::INT8),
            ],
        )
        .await?;
    let items = rows
        .iter()
        .map(|r| MessageView {
            message_id: MessageId(r.get(0)),
            thread_id: ThreadId(r.get(1)),
            seq: r.get(2),
            sender_id: UserId(r.get(3)),
            unique_id: r.get(4),
            kind: r.get(5),
            body: r.get(6),
            created_at: r.get(7),
        })
        .collect();
    Ok(page(items, limit, since.0, |m: &MessageView| {
        m.message_id.0
    }))
}

/// The messages that these `unique_id`s of a sender already produced in a
/// thread (a retried send), by `unique_id`.
pub async fn messages_by_unique_ids(
    c: &impl GenericClient,
    thread_id: ThreadId,
    sender_id: UserId,
    unique_ids: &[&str],
) -> Result<std::collections::HashMap<String, MessageId>, ProjectionError> {
    if unique_ids.is_empty() {
        return Ok(Default::default());
    }
    Ok(c.query_typed(
        "SELECT unique_id, message_id FROM messages
         WHERE thread_id = $1 AND sender_id = $2 AND unique_id = ANY($3)",
        &[
            (&thread_id.0, Type::INT8),
            (&sender_id.0, Type::INT8),
            (&unique_ids, Type::TEXT_ARRAY),
        ],
    )
    .await?
    .iter()
    .map(|r| (r.get(0), MessageId(r.get(1))))
    .collect())
}

#[cfg(test)]
mod tests {
    use super::page;

    #[test]
    fn page_reports_more_only_past_the_limit() {
        let p = page(vec![1, 2, 3], 2, 0, |x| *x);
        assert_eq!(p.items, vec![1, 2]);
        assert!(p.load_more);
        assert_eq!(p.next_cursor, 2);
        let p = page(vec![1, 2], 2, 0, |x| *x);
        assert!(!p.load_more);
        let p = page(Vec::<i64>::new(), 2, 7, |x| *x);
        assert_eq!(p.next_cursor, 7);
    }
}
