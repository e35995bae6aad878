//! Reads of friend requests and friendships.

use crate::read_model::overfetch;
use crate::{Page, ReadError, ReadModel};
use chrono::{DateTime, Utc};
use imlog_events::{LogPosition, ThreadId, UserId};
use imlog_postgres::Prepared;
use tokio_postgres::types::Type;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestStatus {
    Pending,
    Accepted,
    Rejected,
}

#[derive(Debug, Clone)]
pub struct FriendRequestRow {
    pub from: UserId,
    pub from_name: String,
    pub to: UserId,
    pub to_name: String,
    pub greeting: String,
    pub status: RequestStatus,
    pub requested_at: DateTime<Utc>,
    /// The acceptance that decided it, if one did.
    pub accepted_at: Option<LogPosition>,
}

#[derive(Debug, Clone)]
pub struct FriendRow {
    pub user_id: UserId,
    pub name: String,
    pub alias: String,
    pub since: DateTime<Utc>,
    /// The pair's private thread, once the acceptance process created it.
    pub thread_id: Option<ThreadId>,
}

// Left joins: the acceptance process decides from a request whatever the
// accounts projection has applied so far.
const REQUEST_COLUMNS: &str =
    "r.from_id, coalesce(f.name, ''), r.to_id, coalesce(t.name, ''), r.greeting, r.status, r.requested_at,
                               r.accept_partition, r.accept_offset";

fn request_row(r: &tokio_postgres::Row) -> FriendRequestRow {
    FriendRequestRow {
        from: UserId::new(r.get(0)),
        from_name: r.get(1),
        to: UserId::new(r.get(2)),
        to_name: r.get(3),
        greeting: r.get(4),
        status: match r.get::<_, &str>(5) {
            "accepted" => RequestStatus::Accepted,
            "rejected" => RequestStatus::Rejected,
            _ => RequestStatus::Pending,
        },
        requested_at: r.get(6),
        accepted_at: match (r.get::<_, Option<i32>>(7), r.get::<_, Option<i64>>(8)) {
            (Some(partition), Some(offset)) => Some(LogPosition { partition, offset }),
            _ => None,
        },
    }
}

impl ReadModel {
    /// The request `from` → `to`, whatever its status.
    pub async fn friend_request(
        &self,
        from: UserId,
        to: UserId,
    ) -> Result<Option<FriendRequestRow>, ReadError> {
        Ok(self
            .client()
            .await?
            .query_prepared_opt(
                &format!(
                    "SELECT {REQUEST_COLUMNS} FROM friend_requests r
                     LEFT JOIN users f ON f.user_id = r.from_id LEFT JOIN users t ON t.user_id = r.to_id
                     WHERE r.from_id = $1 AND r.to_id = $2"
                ),
                &[(&from.get(), Type::INT8), (&to.get(), Type::INT8)],
            )
            .await?
            .as_ref()
            .map(request_row))
    }

    /// Pending requests to `user` (`incoming`) or from `user`, by the other
    /// user's id after `after`.
    pub async fn pending_requests(
        &self,
        user: UserId,
        incoming: bool,
        after: UserId,
        limit: usize,
    ) -> Result<Page<FriendRequestRow>, ReadError> {
        let (mine, other) = if incoming {
            ("r.to_id", "r.from_id")
        } else {
            ("r.from_id", "r.to_id")
        };
        let rows = self
            .client()
            .await?
            .query_prepared(
                &format!(
                    "SELECT {REQUEST_COLUMNS} FROM friend_requests r
                     LEFT JOIN users f ON f.user_id = r.from_id LEFT JOIN users t ON t.user_id = r.to_id
                     WHERE {mine} = $1 AND {other} > $2 AND r.status = 'pending'
                     ORDER BY {other} LIMIT $3"
                ),
                &[
                    (&user.get(), Type::INT8),
                    (&after.get(), Type::INT8),
                    (&overfetch(limit), Type::INT8),
                ],
            )
            .await?;
        let items = rows.iter().map(request_row).collect();
        Ok(Page::from_overfetch(items, limit, after.get(), |r| {
            if incoming { r.from } else { r.to }.get()
        }))
    }

    /// Everyone `user` is friends with (who hears of their presence and
    /// profile changes).
    pub async fn friend_ids(&self, user: UserId) -> Result<Vec<UserId>, ReadError> {
        Ok(self
            .client()
            .await?
            .query_prepared(
                "SELECT friend_id FROM friends WHERE user_id = $1",
                &[(&user.get(), Type::INT8)],
            )
            .await?
            .iter()
            .map(|r| UserId::new(r.get(0)))
            .collect())
    }

    /// Whether `a` counts `b` among their friends.
    pub async fn are_friends(&self, a: UserId, b: UserId) -> Result<bool, ReadError> {
        Ok(self
            .client()
            .await?
            .query_prepared_opt(
                "SELECT 1 FROM friends WHERE user_id = $1 AND friend_id = $2",
                &[(&a.get(), Type::INT8), (&b.get(), Type::INT8)],
            )
            .await?
            .is_some())
    }

    /// `user`'s friends with their aliases, by friend id after `after`.
    pub async fn friends_page(
        &self,
        user: UserId,
        after: UserId,
        limit: usize,
    ) -> Result<Page<FriendRow>, ReadError> {
        let rows = self
            .client()
            .await?
            .query_prepared(
                "SELECT f.friend_id, u.name, f.alias, f.since, p.thread_id
                 FROM friends f
                 JOIN users u ON u.user_id = f.friend_id
                 LEFT JOIN private_threads p
                   ON p.user_low = LEAST(f.user_id, f.friend_id) AND p.user_high = GREATEST(f.user_id, f.friend_id)
                 WHERE f.user_id = $1 AND f.friend_id > $2
                 ORDER BY f.friend_id LIMIT $3",
                &[
                    (&user.get(), Type::INT8),
                    (&after.get(), Type::INT8),
                    (&overfetch(limit), Type::INT8),
                ],
            )
            .await?;
        let items = rows
            .iter()
            .map(|r| FriendRow {
                user_id: UserId::new(r.get(0)),
                name: r.get(1),
                alias: r.get(2),
                since: r.get(3),
                thread_id: r.get::<_, Option<i64>>(4).map(ThreadId::new),
            })
            .collect();
        Ok(Page::from_overfetch(items, limit, after.get(), |f| {
            f.user_id.get()
        }))
    }
}
