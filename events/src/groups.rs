//! Group threads: creation and every change of membership, roles, mutes and
//! name. All on the single-partition threads topic, so group changes and
//! thread creations have one order. A change is recorded as asked; the
//! threads projection applies it only if the permission table allows it at
//! that point of the log.

use crate::{ThreadId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A member's role in a group. Ordered: owner > admin > member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupRole {
    Member,
    Admin,
    Owner,
}

impl GroupRole {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupRole::Member => "member",
            GroupRole::Admin => "admin",
            GroupRole::Owner => "owner",
        }
    }

    pub fn from_name(name: &str) -> Option<GroupRole> {
        [GroupRole::Member, GroupRole::Admin, GroupRole::Owner]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}

/// A group thread was created; its `ThreadId` is the position of this event.
/// `owner` is its owner, `members` the others (as given; duplicates and the
/// owner are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupCreated {
    pub name: String,
    pub owner: UserId,
    pub members: Vec<UserId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMembersAdded {
    pub thread_id: ThreadId,
    pub by: UserId,
    pub members: Vec<UserId>,
}

/// `member` left the group (`by == member`) or was removed by `by`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMemberRemoved {
    pub thread_id: ThreadId,
    pub by: UserId,
    pub member: UserId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRenamed {
    pub thread_id: ThreadId,
    pub by: UserId,
    pub name: String,
}

/// `member` may not post until `until` (`None`: unmuted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMemberMuted {
    pub thread_id: ThreadId,
    pub by: UserId,
    pub member: UserId,
    pub until: Option<DateTime<Utc>>,
}

/// `member` became an admin or a plain member again (never owner: that is a
/// transfer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRoleChanged {
    pub thread_id: ThreadId,
    pub by: UserId,
    pub member: UserId,
    pub role: GroupRole,
}

/// The owner `by` handed the group to `to`, and became an admin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupOwnershipTransferred {
    pub thread_id: ThreadId,
    pub by: UserId,
    pub to: UserId,
}
