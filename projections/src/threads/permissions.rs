//! The permission table of group threads: who may do what to whom. The
//! domain checks it before appending a change (a clear error at once); the
//! threads projection checks it again when applying, so that a change that
//! raced another (an admin demoted meanwhile) takes effect only if it is
//! still allowed at its point in the log.
//!
//! | action | owner | admin | member |
//! |---|---|---|---|
//! | add members | yes | yes | no |
//! | rename | yes | yes | no |
//! | remove a member | anyone but the owner | plain members | no |
//! | mute / unmute | anyone but the owner | plain members | no |
//! | change roles (member ↔ admin) | yes | no | no |
//! | transfer ownership | yes | no | no |
//! | leave | after transferring ownership (or as the last member) | yes | yes |
//! | post | unless muted | unless muted | unless muted |

use imlog_events::GroupRole;

/// The most members a group may have.
pub const MAX_GROUP_MEMBERS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupAction {
    Add,
    Rename,
    Remove,
    Mute,
    ChangeRole,
    TransferOwnership,
}

/// Whether someone with role `actor` may do `action` to a member with role
/// `target` (for actions on a member).
pub fn may(actor: GroupRole, action: GroupAction, target: Option<GroupRole>) -> bool {
    use GroupAction::*;
    use GroupRole::*;
    match action {
        Add | Rename => actor >= Admin,
        Remove | Mute => matches!(
            (actor, target),
            (Owner, Some(Admin | Member)) | (Admin, Some(Member))
        ),
        ChangeRole | TransferOwnership => actor == Owner && matches!(target, Some(Admin | Member)),
    }
}

/// Whether a member with `role` may leave a group of `members` members.
pub fn may_leave(role: GroupRole, members: usize) -> bool {
    role != GroupRole::Owner || members <= 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use GroupAction::*;
    use GroupRole::*;

    #[test]
    fn the_table_holds() {
        for action in [Add, Rename] {
            assert!(may(Owner, action, None) && may(Admin, action, None));
            assert!(!may(Member, action, None));
        }
        for action in [Remove, Mute] {
            assert!(may(Owner, action, Some(Admin)) && may(Owner, action, Some(Member)));
            assert!(may(Admin, action, Some(Member)));
            assert!(!may(Admin, action, Some(Admin)) && !may(Admin, action, Some(Owner)));
            assert!(!may(Member, action, Some(Member)));
            assert!(!may(Owner, action, Some(Owner)));
        }
        for action in [ChangeRole, TransferOwnership] {
            assert!(may(Owner, action, Some(Member)) && may(Owner, action, Some(Admin)));
            assert!(!may(Admin, action, Some(Member)) && !may(Member, action, Some(Member)));
            assert!(!may(Owner, action, None));
        }
        assert!(may_leave(Member, 5) && may_leave(Admin, 5));
        assert!(!may_leave(Owner, 5) && may_leave(Owner, 1));
    }
}
