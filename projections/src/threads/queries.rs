//! Reads of threads and their members.

use crate::accounts::UserRow;
use crate::messages::MessageRow;
use crate::messages::COLUMNS as MESSAGE_COLUMNS;
use crate::read_model::overfetch;
use crate::{Page, ReadError, ReadModel};
use chrono::{DateTime, Utc};
use imlog_events::{GroupRole, MessageId, ThreadId, UserId};
use imlog_postgres::Prepared;
use std::collections::HashMap;
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
    /// For a group: its name and size.
    pub name: Option<String>,
    pub members: Option<i32>,
    /// Messages after the user's read marker.
    pub unread: i64,
    /// The user's join position: the thread list's cursor.
    pub joined_pos: i64,
    pub last_message: Option<MessageRow>,
}

/// One user's place in one thread.
#[derive(Debug, Clone)]
pub struct Membership {
    pub kind: ThreadKind,
    pub role: GroupRole,
    pub muted_until: Option<DateTime<Utc>>,
    /// For a private thread: the other user.
    pub peer: Option<UserId>,
    /// For a group: how many members it has.
    pub members: usize,
    /// The threads projection's next offset when this was read: the
    /// membership is as of (at least) that point of the threads topic.
    pub as_of: i64,
}

#[derive(Debug, Clone)]
pub struct MemberRow {
    pub user_id: UserId,
    pub name: String,
    pub role: GroupRole,
    pub joined_at: DateTime<Utc>,
    pub muted_until: Option<DateTime<Utc>>,
}

/// An applied group change (see `group_changes`).
#[derive(Debug, Clone)]
pub struct GroupChangeRow {
    pub thread_id: ThreadId,
    pub actor: UserId,
    pub kind: String,
    pub subjects: Vec<UserId>,
    pub detail: Option<String>,
}

/// One user's membership row ($1 thread, $2 user), with the threads
/// projection's next offset it is as of.
const MEMBERSHIP_COLUMNS: &str = "t.kind, m.role, m.muted_until,
    CASE WHEN p.user_low = $2 THEN p.user_high ELSE p.user_low END,
    coalesce(g.members, 2),
    (SELECT next_offset FROM projection_offsets WHERE projection = 'threads' AND topic = 'threads' AND partition = 0)";
const MEMBERSHIP_FROM: &str = "FROM thread_members m
    JOIN threads t ON t.thread_id = m.thread_id
    LEFT JOIN private_threads p ON p.thread_id = m.thread_id
    LEFT JOIN group_threads g ON g.thread_id = m.thread_id
    WHERE m.thread_id = $1 AND m.user_id = $2";
/// As `MEMBERSHIP_FROM`, with the sender's messages of `unique_id`s $3.
const MEMBERSHIP_FROM_SENT: &str = "FROM thread_members m
    JOIN threads t ON t.thread_id = m.thread_id
    LEFT JOIN private_threads p ON p.thread_id = m.thread_id
    LEFT JOIN group_threads g ON g.thread_id = m.thread_id
    LEFT JOIN LATERAL (
        SELECT array_agg(x.unique_id ORDER BY x.message_id) AS unique_ids,
               array_agg(x.message_id ORDER BY x.message_id) AS message_ids
        FROM unnest($3::text[]) AS u(unique_id)
        -- One index probe per unique_id (see `ReadModel::sent`).
        CROSS JOIN LATERAL (
            SELECT unique_id, message_id FROM messages
            WHERE thread_id = $1 AND sender_id = $2 AND unique_id = u.unique_id OFFSET 0
        ) x
    ) sent ON true
    WHERE m.thread_id = $1 AND m.user_id = $2";

fn membership_row(r: &tokio_postgres::Row) -> Membership {
    Membership {
        kind: kind_of(r.get(0)),
        role: GroupRole::from_name(r.get(1)).unwrap_or(GroupRole::Member),
        muted_until: r.get(2),
        peer: r.get::<_, Option<i64>>(3).map(UserId::new),
        members: r.get::<_, i32>(4).max(0) as usize,
        as_of: r.get::<_, Option<i64>>(5).unwrap_or(0),
    }
}

fn kind_of(name: &str) -> ThreadKind {
    match name {
        "group" => ThreadKind::Group,
        _ => ThreadKind::Private,
    }
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
            .query_prepared_opt(
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
            .query_prepared(
                "SELECT user_id FROM thread_members WHERE thread_id = $1 ORDER BY user_id",
                &[(&thread_id.get(), Type::INT8)],
            )
            .await?
            .iter()
            .map(|r| UserId::new(r.get(0)))
            .collect())
    }

    /// `user`'s membership of a thread, if any: one row, whatever the
    /// group's size.
    pub async fn membership(
        &self,
        thread_id: ThreadId,
        user: UserId,
    ) -> Result<Option<Membership>, ReadError> {
        Ok(self
            .client()
            .await?
            .query_prepared_opt(
                &format!("SELECT {MEMBERSHIP_COLUMNS} {MEMBERSHIP_FROM}"),
                &[(&thread_id.get(), Type::INT8), (&user.get(), Type::INT8)],
            )
            .await?
            .map(|r| membership_row(&r)))
    }

    /// A sender's membership of a thread and the messages these
    /// `unique_id`s of theirs already produced there (a retried send), in
    /// one round trip: what every send checks before appending.
    pub async fn membership_and_sent(
        &self,
        thread_id: ThreadId,
        user: UserId,
        unique_ids: &[&str],
    ) -> Result<Option<(Membership, HashMap<String, MessageId>)>, ReadError> {
        let row = self
            .client()
            .await?
            .query_prepared_opt(
                &format!(
                    "SELECT {MEMBERSHIP_COLUMNS}, sent.unique_ids, sent.message_ids {MEMBERSHIP_FROM_SENT}"
                ),
                &[
                    (&thread_id.get(), Type::INT8),
                    (&user.get(), Type::INT8),
                    (&unique_ids, Type::TEXT_ARRAY),
                ],
            )
            .await?;
        Ok(row.map(|r| {
            let ids: Vec<String> = r.get::<_, Option<Vec<String>>>(6).unwrap_or_default();
            let message_ids: Vec<i64> = r.get::<_, Option<Vec<i64>>>(7).unwrap_or_default();
            let sent = ids
                .into_iter()
                .zip(message_ids.into_iter().map(MessageId::new))
                .collect();
            (membership_row(&r), sent)
        }))
    }

    /// Every member of a thread, and the threads projection's next offset
    /// they are as of (one statement: one snapshot).
    pub async fn members_as_of(
        &self,
        thread_id: ThreadId,
    ) -> Result<(Vec<UserId>, i64), ReadError> {
        let row = self
            .client()
            .await?
            .query_prepared_one(
                "SELECT coalesce((SELECT array_agg(user_id) FROM thread_members WHERE thread_id = $1), '{}'),
                        coalesce((SELECT next_offset FROM projection_offsets
                                  WHERE projection = 'threads' AND topic = 'threads' AND partition = 0), 0)",
                &[(&thread_id.get(), Type::INT8)],
            )
            .await?;
        let members = row
            .get::<_, Vec<i64>>(0)
            .into_iter()
            .map(UserId::new)
            .collect();
        Ok((members, row.get(1)))
    }

    /// Which of `users` are members of a thread.
    pub async fn members_among(
        &self,
        thread_id: ThreadId,
        users: &[UserId],
    ) -> Result<Vec<UserId>, ReadError> {
        let raw: Vec<i64> = users.iter().map(|u| u.get()).collect();
        Ok(self
            .client()
            .await?
            .query_prepared(
                "SELECT user_id FROM thread_members WHERE thread_id = $1 AND user_id = ANY($2)",
                &[(&thread_id.get(), Type::INT8), (&raw, Type::INT8_ARRAY)],
            )
            .await?
            .iter()
            .map(|r| UserId::new(r.get(0)))
            .collect())
    }

    /// A thread's members with their roles, by user id after `after`.
    pub async fn members_page(
        &self,
        thread_id: ThreadId,
        after: UserId,
        limit: usize,
    ) -> Result<Page<MemberRow>, ReadError> {
        let rows = self
            .client()
            .await?
            .query_prepared(
                "SELECT m.user_id, u.name, m.role, m.joined_at,
                        CASE WHEN m.muted_until > now() THEN m.muted_until END
                 FROM thread_members m JOIN users u ON u.user_id = m.user_id
                 WHERE m.thread_id = $1 AND m.user_id > $2
                 ORDER BY m.user_id LIMIT $3",
                &[
                    (&thread_id.get(), Type::INT8),
                    (&after.get(), Type::INT8),
                    (&overfetch(limit), Type::INT8),
                ],
            )
            .await?;
        let items = rows
            .iter()
            .map(|r| MemberRow {
                user_id: UserId::new(r.get(0)),
                name: r.get(1),
                role: GroupRole::from_name(r.get(2)).unwrap_or(GroupRole::Member),
                joined_at: r.get(3),
                muted_until: r.get(4),
            })
            .collect();
        Ok(Page::from_overfetch(items, limit, after.get(), |m| {
            m.user_id.get()
        }))
    }

    /// The group change recorded at `offset` of the threads topic, if that
    /// event took effect.
    pub async fn group_change(&self, offset: i64) -> Result<Option<GroupChangeRow>, ReadError> {
        Ok(self
            .client()
            .await?
            .query_prepared_opt(
                "SELECT thread_id, actor, kind, subjects, detail FROM group_changes WHERE change_offset = $1",
                &[(&offset, Type::INT8)],
            )
            .await?
            .map(|r| GroupChangeRow {
                thread_id: ThreadId::new(r.get(0)),
                actor: UserId::new(r.get(1)),
                kind: r.get(2),
                subjects: r.get::<_, Vec<i64>>(3).into_iter().map(UserId::new).collect(),
                detail: r.get(4),
            }))
    }

    /// A user's threads in the order they joined them, after the join
    /// position `after` (0: from the start).
    pub async fn threads_page(
        &self,
        user_id: UserId,
        after: i64,
        limit: usize,
    ) -> Result<Page<ThreadRow>, ReadError> {
        let rows = self
            .client()
            .await?
            .query_prepared(
                &format!(
                "SELECT t.thread_id, t.kind, t.created_at, peer.user_id, peer.name, g.name, g.members,
                        coalesce(s.last_seq, 0) - coalesce(r.read_seq, 0), m.joined_pos, lm.*
                 FROM thread_members m
                 JOIN threads t ON t.thread_id = m.thread_id
                 LEFT JOIN private_threads p ON p.thread_id = m.thread_id
                 LEFT JOIN users peer ON peer.user_id =
                     CASE WHEN p.user_low = $1 THEN p.user_high ELSE p.user_low END
                 LEFT JOIN group_threads g ON g.thread_id = m.thread_id
                 LEFT JOIN thread_seqs s ON s.thread_id = m.thread_id
                 LEFT JOIN thread_reads r ON r.thread_id = m.thread_id AND r.user_id = $1
                 LEFT JOIN LATERAL (SELECT {MESSAGE_COLUMNS} FROM messages x
                                    WHERE x.thread_id = m.thread_id
                                    ORDER BY x.message_id DESC LIMIT 1) lm ON true
                 WHERE m.user_id = $1 AND m.joined_pos > $2
                 ORDER BY m.joined_pos
                 LIMIT $3"
            ),
                &[
                    (&user_id.get(), Type::INT8),
                    (&after, Type::INT8),
                    (&overfetch(limit), Type::INT8),
                ],
            )
            .await?;
        let items = rows
            .iter()
            .map(|r| ThreadRow {
                thread_id: ThreadId::new(r.get(0)),
                kind: kind_of(r.get(1)),
                created_at: r.get(2),
                peer: r.get::<_, Option<i64>>(3).map(|id| UserRow {
                    user_id: UserId::new(id),
                    name: r.get(4),
                }),
                name: r.get(5),
                members: r.get(6),
                unread: r.get(7),
                joined_pos: r.get(8),
                last_message: r
                    .get::<_, Option<i64>>(9)
                    .map(|_| MessageRow::from_row_at(r, 9)),
            })
            .collect();
        Ok(Page::from_overfetch(items, limit, after, |t| t.joined_pos))
    }
}
