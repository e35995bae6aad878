//! Reads of threads and their members.

use crate::accounts::UserRow;
use crate::read_model::overfetch;
use crate::{Page, ReadError, ReadModel};
use chrono::{DateTime, Utc};
use imlog_events::{ThreadId, UserId};
use tokio_postgres::types::Type;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    Private,
    Group,
}

#[derive(Debug, Clone)]
pub struct ThreadRow {
    pub thread_id: ThreadId,
    pub kind: ThreadKind,
    pub created_at: DateTime<Utc>,
    /// For a private thread: the other user.
    pub peer: Option<UserRow>,
}

impl ReadModel {
    /// The private thread of an ordered pair, if it exists.
    pub async fn private_thread(
        &self,
        user_low: UserId,
        user_high: UserId,
    ) -> Result<Option<ThreadId>, ReadError> {
        Ok(self
            .client()
            .await?
            .query_typed_opt(
                "SELECT thread_id FROM private_threads WHERE user_low = $1 AND user_high = $2",
                &[
                    (&user_low.get(), Type::INT8),
                    (&user_high.get(), Type::INT8),
                ],
            )
            .await?
            .map(|r| ThreadId::new(r.get(0))))
    }

    /// The members of a thread (empty if it does not exist).
    pub async fn thread_members(&self, thread_id: ThreadId) -> Result<Vec<UserId>, ReadError> {
        Ok(self
            .client()
            .await?
            .query_typed(
                "SELECT user_id FROM thread_members WHERE thread_id = $1 ORDER BY user_id",
                &[(&thread_id.get(), Type::INT8)],
            )
            .await?
            .iter()
            .map(|r| UserId::new(r.get(0)))
            .collect())
    }

    /// A user's threads with `thread_id > after`, ascending.
    pub async fn threads_page(
        &self,
        user_id: UserId,
        after: ThreadId,
        limit: usize,
    ) -> Result<Page<ThreadRow>, ReadError> {
        let rows = self
            .client()
            .await?
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
                    (&user_id.get(), Type::INT8),
                    (&after.get(), Type::INT8),
                    (&overfetch(limit), Type::INT8),
                ],
            )
            .await?;
        let items = rows
            .iter()
            .map(|r| ThreadRow {
                thread_id: ThreadId::new(r.get(0)),
                kind: match r.get::<_, &str>(1) {
                    "group" => ThreadKind::Group,
                    _ => ThreadKind::Private,
                },
                created_at: r.get(2),
                peer: r.get::<_, Option<i64>>(3).map(|id| UserRow {
                    user_id: UserId::new(id),
                    name: r.get(4),
                }),
            })
            .collect();
        Ok(Page::from_overfetch(items, limit, after.get(), |t| {
            t.thread_id.get()
        }))
    }
}
