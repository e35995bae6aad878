//! The threads projection's group part: each change is applied only if the
//! permission table allows it at its point in the log, and every applied
//! change is recorded in `group_changes`.

use super::permissions::{may, may_leave, GroupAction, MAX_GROUP_MEMBERS};
use crate::ProjectionError;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use imlog_events::{Event, GroupCreated, GroupRole, LogPosition, ThreadId, UserId};
use std::collections::BTreeSet;

/// Applies a group event if the permission table allows it here.
pub(super) async fn apply(
    tx: &Transaction<'_>,
    position: LogPosition,
    event: &Event,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    let change = match event {
        Event::GroupCreated(e) => create(tx, position, e, at).await?,
        Event::GroupMembersAdded(e) => {
            let Some(actor) = role(tx, e.thread_id, e.by).await? else {
                return Ok(());
            };
            if !may(actor, GroupAction::Add, None) {
                return Ok(());
            }
            let count = member_count(tx, e.thread_id).await?;
            let new: Vec<i64> = distinct(&e.members, None);
            let added: Vec<i64> = tx
                .query(
                    "SELECT u FROM unnest($2::bigint[]) AS u
                     WHERE NOT EXISTS (SELECT 1 FROM thread_members m WHERE m.thread_id = $1 AND m.user_id = u)",
                    &[&e.thread_id.get(), &new],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if added.is_empty() || count + added.len() > MAX_GROUP_MEMBERS {
                return Ok(());
            }
            insert_members(tx, position, e.thread_id, &added, GroupRole::Member, at).await?;
            Some(Change::new(e.thread_id, e.by, "added", added))
        }
        Event::GroupMemberRemoved(e) => {
            let (Some(actor), Some(target)) = (
                role(tx, e.thread_id, e.by).await?,
                role(tx, e.thread_id, e.member).await?,
            ) else {
                return Ok(());
            };
            let allowed = if e.by == e.member {
                may_leave(actor, member_count(tx, e.thread_id).await?)
            } else {
                may(actor, GroupAction::Remove, Some(target))
            };
            if !allowed {
                return Ok(());
            }
            tx.execute(
                "DELETE FROM thread_members WHERE thread_id = $1 AND user_id = $2",
                &[&e.thread_id.get(), &e.member.get()],
            )
            .await?;
            recount(tx, e.thread_id).await?;
            let kind = if e.by == e.member { "left" } else { "removed" };
            Some(Change::new(e.thread_id, e.by, kind, vec![e.member.get()]))
        }
        Event::GroupRenamed(e) => {
            let Some(actor) = role(tx, e.thread_id, e.by).await? else {
                return Ok(());
            };
            if !may(actor, GroupAction::Rename, None) {
                return Ok(());
            }
            tx.execute(
                "UPDATE group_threads SET name = $2 WHERE thread_id = $1",
                &[&e.thread_id.get(), &e.name],
            )
            .await?;
            Some(Change::new(e.thread_id, e.by, "renamed", vec![]).detail(e.name.clone()))
        }
        Event::GroupMemberMuted(e) => {
            let (Some(actor), target) = (
                role(tx, e.thread_id, e.by).await?,
                role(tx, e.thread_id, e.member).await?,
            ) else {
                return Ok(());
            };
            if !may(actor, GroupAction::Mute, target) {
                return Ok(());
            }
            tx.execute(
                "UPDATE thread_members SET muted_until = $3 WHERE thread_id = $1 AND user_id = $2",
                &[&e.thread_id.get(), &e.member.get(), &e.until],
            )
            .await?;
            let (kind, detail) = match e.until {
                Some(until) => ("muted", Some(until.to_rfc3339())),
                None => ("unmuted", None),
            };
            let change = Change::new(e.thread_id, e.by, kind, vec![e.member.get()]);
            Some(match detail {
                Some(d) => change.detail(d),
                None => change,
            })
        }
        Event::GroupRoleChanged(e) => {
            let (Some(actor), target) = (
                role(tx, e.thread_id, e.by).await?,
                role(tx, e.thread_id, e.member).await?,
            ) else {
                return Ok(());
            };
            if e.role == GroupRole::Owner || !may(actor, GroupAction::ChangeRole, target) {
                return Ok(());
            }
            set_role(tx, e.thread_id, e.member, e.role).await?;
            Some(
                Change::new(e.thread_id, e.by, "role_changed", vec![e.member.get()])
                    .detail(e.role.as_str().to_owned()),
            )
        }
        Event::GroupOwnershipTransferred(e) => {
            let (Some(actor), target) = (
                role(tx, e.thread_id, e.by).await?,
                role(tx, e.thread_id, e.to).await?,
            ) else {
                return Ok(());
            };
            if !may(actor, GroupAction::TransferOwnership, target) {
                return Ok(());
            }
            set_role(tx, e.thread_id, e.by, GroupRole::Admin).await?;
            set_role(tx, e.thread_id, e.to, GroupRole::Owner).await?;
            Some(Change::new(
                e.thread_id,
                e.by,
                "ownership_transferred",
                vec![e.to.get()],
            ))
        }
        _ => None,
    };
    if let Some(change) = change {
        tx.execute(
            "INSERT INTO group_changes (change_offset, thread_id, actor, kind, subjects, detail, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &position.offset,
                &change.thread_id.get(),
                &change.actor.get(),
                &change.kind,
                &change.subjects,
                &change.detail,
                &at,
            ],
        )
        .await?;
    }
    Ok(())
}

struct Change {
    thread_id: ThreadId,
    actor: UserId,
    kind: &'static str,
    subjects: Vec<i64>,
    detail: Option<String>,
}

impl Change {
    fn new(thread_id: ThreadId, actor: UserId, kind: &'static str, subjects: Vec<i64>) -> Change {
        Change {
            thread_id,
            actor,
            kind,
            subjects,
            detail: None,
        }
    }

    fn detail(mut self, detail: String) -> Change {
        self.detail = Some(detail);
        self
    }
}

async fn create(
    tx: &Transaction<'_>,
    position: LogPosition,
    e: &GroupCreated,
    at: DateTime<Utc>,
) -> Result<Option<Change>, ProjectionError> {
    let thread_id = ThreadId::from_position(position);
    let members = distinct(&e.members, Some(e.owner));
    if members.len() + 1 > MAX_GROUP_MEMBERS {
        return Ok(None);
    }
    tx.execute(
        "INSERT INTO threads (thread_id, kind, created_at) VALUES ($1, 'group', $2)",
        &[&thread_id.get(), &at],
    )
    .await?;
    tx.execute(
        "INSERT INTO group_threads (thread_id, name, members) VALUES ($1, $2, 0)",
        &[&thread_id.get(), &e.name],
    )
    .await?;
    insert_members(
        tx,
        position,
        thread_id,
        &[e.owner.get()],
        GroupRole::Owner,
        at,
    )
    .await?;
    insert_members(tx, position, thread_id, &members, GroupRole::Member, at).await?;
    Ok(Some(
        Change::new(thread_id, e.owner, "created", members).detail(e.name.clone()),
    ))
}

/// Ids in first-seen order, without repeats and without `except`.
fn distinct(ids: &[UserId], except: Option<UserId>) -> Vec<i64> {
    let mut seen = BTreeSet::new();
    ids.iter()
        .filter(|&&id| Some(id) != except && seen.insert(id))
        .map(|id| id.get())
        .collect()
}

async fn role(
    tx: &Transaction<'_>,
    thread_id: ThreadId,
    user: UserId,
) -> Result<Option<GroupRole>, ProjectionError> {
    Ok(tx
        .query_opt(
            "SELECT m.role FROM thread_members m JOIN group_threads g ON g.thread_id = m.thread_id
             WHERE m.thread_id = $1 AND m.user_id = $2",
            &[&thread_id.get(), &user.get()],
        )
        .await?
        .and_then(|r| GroupRole::from_name(r.get(0))))
}

async fn member_count(tx: &Transaction<'_>, thread_id: ThreadId) -> Result<usize, ProjectionError> {
    let n: i32 = tx
        .query_opt(
            "SELECT members FROM group_threads WHERE thread_id = $1",
            &[&thread_id.get()],
        )
        .await?
        .map(|r| r.get(0))
        .unwrap_or(0);
    Ok(n.max(0) as usize)
}

async fn insert_members(
    tx: &Transaction<'_>,
    position: LogPosition,
    thread_id: ThreadId,
    users: &[i64],
    role: GroupRole,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    tx.execute(
        "INSERT INTO thread_members (thread_id, user_id, role, joined_at, joined_pos)
         SELECT $1, u, $3, $4, $5 FROM unnest($2::bigint[]) AS u ON CONFLICT DO NOTHING",
        &[
            &thread_id.get(),
            &users,
            &role.as_str(),
            &at,
            &(position.offset + 1),
        ],
    )
    .await?;
    recount(tx, thread_id).await
}

async fn recount(tx: &Transaction<'_>, thread_id: ThreadId) -> Result<(), ProjectionError> {
    tx.execute(
        "UPDATE group_threads SET members = (SELECT count(*) FROM thread_members WHERE thread_id = $1)
         WHERE thread_id = $1",
        &[&thread_id.get()],
    )
    .await?;
    Ok(())
}

async fn set_role(
    tx: &Transaction<'_>,
    thread_id: ThreadId,
    user: UserId,
    role: GroupRole,
) -> Result<(), ProjectionError> {
    tx.execute(
        "UPDATE thread_members SET role = $3 WHERE thread_id = $1 AND user_id = $2",
        &[&thread_id.get(), &user.get(), &role.as_str()],
    )
    .await?;
    Ok(())
}
