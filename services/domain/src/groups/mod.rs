//! Group threads: create, add and remove members, leave, rename, mute,
//! roles and ownership, and the member list. Every change is checked
//! against the permission table here (a clear error at once) and again by
//! the threads projection at its point in the log; the reply comes once the
//! change is projected, and says so if a racing change made it void. Each
//! applied change gets a system line in the thread ([`lines`]).

pub mod lines;

use crate::accounts::Session;
use crate::journal::{Journal, StoreError, Writes};
use chrono::{DateTime, Utc};
use imlog_events::{
    Event, GroupCreated, GroupMemberMuted, GroupMemberRemoved, GroupMembersAdded,
    GroupOwnershipTransferred, GroupRenamed, GroupRole, GroupRoleChanged, LogPosition, ThreadId,
    Topic, UserId,
};
use imlog_projections::threads::permissions::{may, may_leave, GroupAction, MAX_GROUP_MEMBERS};
use imlog_projections::threads::{Membership, ThreadKind};
use imlog_protocol::{GroupName, MemberView, Page, UserView};
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GroupsError {
    /// Also for a thread that does not exist, so existence does not leak.
    #[error("you are not a member of thread {0}")]
    NotMember(ThreadId),
    #[error("thread {0} is not a group")]
    NotAGroup(ThreadId),
    #[error("user {0} is not a member of this group")]
    NoSuchMember(UserId),
    #[error("no user {0}")]
    NoSuchUser(UserId),
    #[error("your role ({0}) may not do this; see the permission table")]
    NotAllowed(&'static str),
    #[error("the owner cannot leave; transfer ownership first")]
    OwnerLeaving,
    #[error("a group holds at most {MAX_GROUP_MEMBERS} members")]
    TooMany,
    #[error("a role is member or admin; ownership is transferred")]
    BadRole,
    #[error("a concurrent change made this one void; reload the group and retry")]
    Superseded,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Groups {
    journal: Arc<Journal>,
}

impl Groups {
    pub fn new(journal: Arc<Journal>) -> Groups {
        Groups { journal }
    }

    #[tracing::instrument(skip_all, fields(user_id = %session.user_id))]
    pub async fn create(
        &self,
        writes: &mut Writes,
        session: &Session,
        name: GroupName,
        members: Vec<UserId>,
    ) -> Result<ThreadId, GroupsError> {
        let me = session.user_id;
        let others = self.existing_others(&members, me).await?;
        if others.len() + 1 > MAX_GROUP_MEMBERS {
            return Err(GroupsError::TooMany);
        }
        let pos = self
            .journal
            .append(
                writes,
                Some(me),
                GroupCreated {
                    name: name.into_string(),
                    owner: me,
                    members: others,
                },
            )
            .await?;
        self.journal.settle(writes, &[Topic::Threads]).await?;
        let thread_id = ThreadId::from_position(pos);
        tracing::info!(%thread_id, "group created");
        Ok(thread_id)
    }

    pub async fn add(
        &self,
        writes: &mut Writes,
        session: &Session,
        thread_id: ThreadId,
        members: Vec<UserId>,
    ) -> Result<(), GroupsError> {
        let me = session.user_id;
        let mine = self.group_membership(thread_id, me).await?;
        self.require(mine.role, GroupAction::Add, None)?;
        let others = self.existing_others(&members, me).await?;
        let already = self.members_among(thread_id, &others).await?;
        let new: Vec<UserId> = others
            .into_iter()
            .filter(|u| !already.contains(u))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        if mine.members + new.len() > MAX_GROUP_MEMBERS {
            return Err(GroupsError::TooMany);
        }
        let added = GroupMembersAdded {
            thread_id,
            by: me,
            members: new.clone(),
        };
        match self.change(writes, me, added).await {
            // Someone else added them at the same moment: what was asked holds.
            Err(GroupsError::Superseded)
                if self.members_among(thread_id, &new).await?.len() == new.len() =>
            {
                Ok(())
            }
            result => result,
        }
    }

    async fn members_among(
        &self,
        thread_id: ThreadId,
        users: &[UserId],
    ) -> Result<BTreeSet<UserId>, GroupsError> {
        Ok(self
            .journal
            .read()
            .members_among(thread_id, users)
            .await
            .map_err(StoreError::from)?
            .into_iter()
            .collect())
    }

    pub async fn remove(
        &self,
        writes: &mut Writes,
        session: &Session,
        thread_id: ThreadId,
        member: UserId,
    ) -> Result<(), GroupsError> {
        let me = session.user_id;
        if member == me {
            return self.leave(writes, session, thread_id).await;
        }
        self.may_act_on(thread_id, me, GroupAction::Remove, member)
            .await?;
        self.change(
            writes,
            me,
            GroupMemberRemoved {
                thread_id,
                by: me,
                member,
            },
        )
        .await
    }

    pub async fn leave(
        &self,
        writes: &mut Writes,
        session: &Session,
        thread_id: ThreadId,
    ) -> Result<(), GroupsError> {
        let me = session.user_id;
        let mine = self.group_membership(thread_id, me).await?;
        if !may_leave(mine.role, mine.members) {
            return Err(GroupsError::OwnerLeaving);
        }
        self.change(
            writes,
            me,
            GroupMemberRemoved {
                thread_id,
                by: me,
                member: me,
            },
        )
        .await
    }

    pub async fn rename(
        &self,
        writes: &mut Writes,
        session: &Session,
        thread_id: ThreadId,
        name: GroupName,
    ) -> Result<(), GroupsError> {
        let me = session.user_id;
        let mine = self.group_membership(thread_id, me).await?;
        self.require(mine.role, GroupAction::Rename, None)?;
        let name = name.into_string();
        self.change(
            writes,
            me,
            GroupRenamed {
                thread_id,
                by: me,
                name,
            },
        )
        .await
    }

    pub async fn mute(
        &self,
        writes: &mut Writes,
        session: &Session,
        thread_id: ThreadId,
        member: UserId,
        until: Option<DateTime<Utc>>,
    ) -> Result<(), GroupsError> {
        let me = session.user_id;
        self.may_act_on(thread_id, me, GroupAction::Mute, member)
            .await?;
        self.change(
            writes,
            me,
            GroupMemberMuted {
                thread_id,
                by: me,
                member,
                until,
            },
        )
        .await
    }

    pub async fn set_role(
        &self,
        writes: &mut Writes,
        session: &Session,
        thread_id: ThreadId,
        member: UserId,
        role: GroupRole,
    ) -> Result<(), GroupsError> {
        if role == GroupRole::Owner {
            return Err(GroupsError::BadRole);
        }
        let me = session.user_id;
        self.may_act_on(thread_id, me, GroupAction::ChangeRole, member)
            .await?;
        self.change(
            writes,
            me,
            GroupRoleChanged {
                thread_id,
                by: me,
                member,
                role,
            },
        )
        .await
    }

    pub async fn transfer(
        &self,
        writes: &mut Writes,
        session: &Session,
        thread_id: ThreadId,
        to: UserId,
    ) -> Result<(), GroupsError> {
        let me = session.user_id;
        self.may_act_on(thread_id, me, GroupAction::TransferOwnership, to)
            .await?;
        self.change(
            writes,
            me,
            GroupOwnershipTransferred {
                thread_id,
                by: me,
                to,
            },
        )
        .await
    }

    /// Any thread's members (a private thread's two as well), for a member.
    pub async fn members(
        &self,
        writes: &mut Writes,
        session: &Session,
        thread_id: ThreadId,
        after: UserId,
        limit: usize,
    ) -> Result<Page<MemberView>, GroupsError> {
        self.journal.settle(writes, &[Topic::Threads]).await?;
        self.membership(thread_id, session.user_id).await?;
        let page = self
            .journal
            .read()
            .members_page(thread_id, after, limit)
            .await
            .map_err(StoreError::from)?;
        Ok(crate::page(page, |m| MemberView {
            user: UserView {
                user_id: m.user_id,
                name: m.name,
            },
            role: m.role,
            joined_at: m.joined_at,
            muted_until: m.muted_until,
        }))
    }

    /// Appends a change, waits until it is projected, and tells whether it
    /// took effect (the projection records the changes it applied).
    async fn change(
        &self,
        writes: &mut Writes,
        me: UserId,
        event: impl Into<Event>,
    ) -> Result<(), GroupsError> {
        let pos: LogPosition = self.journal.append(writes, Some(me), event).await?;
        self.journal.settle(writes, &[Topic::Threads]).await?;
        let applied = self
            .journal
            .read()
            .group_change(pos.offset)
            .await
            .map_err(StoreError::from)?;
        if applied.is_some() {
            Ok(())
        } else {
            Err(GroupsError::Superseded)
        }
    }

    /// The caller's membership, once every group change appended so far
    /// (by anyone) is projected, so the permission check sees the latest
    /// roles.
    async fn membership(
        &self,
        thread_id: ThreadId,
        user: UserId,
    ) -> Result<Membership, GroupsError> {
        self.journal.settle_topic(Topic::Threads).await?;
        self.journal
            .read()
            .membership(thread_id, user)
            .await
            .map_err(StoreError::from)?
            .ok_or(GroupsError::NotMember(thread_id))
    }

    async fn group_membership(
        &self,
        thread_id: ThreadId,
        user: UserId,
    ) -> Result<Membership, GroupsError> {
        let membership = self.membership(thread_id, user).await?;
        if membership.kind != ThreadKind::Group {
            return Err(GroupsError::NotAGroup(thread_id));
        }
        Ok(membership)
    }

    async fn member_role(
        &self,
        thread_id: ThreadId,
        user: UserId,
    ) -> Result<GroupRole, GroupsError> {
        Ok(self
            .journal
            .read()
            .membership(thread_id, user)
            .await
            .map_err(StoreError::from)?
            .ok_or(GroupsError::NoSuchMember(user))?
            .role)
    }

    /// Checks that `me` may do `action` to the member `member`.
    async fn may_act_on(
        &self,
        thread_id: ThreadId,
        me: UserId,
        action: GroupAction,
        member: UserId,
    ) -> Result<(), GroupsError> {
        let mine = self.group_membership(thread_id, me).await?;
        let target = self.member_role(thread_id, member).await?;
        self.require(mine.role, action, Some(target))
    }

    fn require(
        &self,
        role: GroupRole,
        action: GroupAction,
        target: Option<GroupRole>,
    ) -> Result<(), GroupsError> {
        if may(role, action, target) {
            Ok(())
        } else {
            Err(GroupsError::NotAllowed(role.as_str()))
        }
    }

    /// `ids` without repeats and without `me`, all registered users.
    async fn existing_others(
        &self,
        ids: &[UserId],
        me: UserId,
    ) -> Result<Vec<UserId>, GroupsError> {
        let mut seen = BTreeSet::new();
        let wanted: Vec<UserId> = ids
            .iter()
            .copied()
            .filter(|&id| id != me && seen.insert(id))
            .collect();
        if wanted.is_empty() {
            return Ok(wanted);
        }
        let existing: BTreeSet<UserId> = self
            .journal
            .read()
            .existing_users(&wanted)
            .await
            .map_err(StoreError::from)?
            .into_iter()
            .collect();
        match wanted.iter().find(|id| !existing.contains(id)) {
            Some(&missing) => Err(GroupsError::NoSuchUser(missing)),
            None => Ok(wanted),
        }
    }
}
